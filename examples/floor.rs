//! The no-parse floor: one mio loop that writes back every byte it reads, the
//! least a one-thread echo server can do per request (scripts/compare.sh quotes it).
//!
//! cargo run --release --example floor -- [ADDR]    (default 127.0.0.1:0; prints "listening on ADDR")
//!
//! Driven by `frameloop load --raw`, which sends echo frames and checks that the
//! same bytes come back: the same syscalls as a frameloop echo, none of the work.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, Read, Write};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet written back: while any wait, reading stops.
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("address: {e}")))?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("floor listening on {}", listener.local_addr()?);
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let entry = conns.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            entry.insert(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if !serve(conn, &mut buf) {
                let mut gone = conns.remove(key);
                poll.registry().deregister(&mut gone.stream)?;
            }
        }
    }
}

/// Writes back what waits, then echoes what arrives until the socket is empty or
/// full (edge-triggered: both are read or written until they say WouldBlock, or a
/// short read shows the buffer empty). False when the connection is over.
fn serve(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let n = match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let got = buf.get(..n).unwrap_or_default();
        match conn.stream.write(got) {
            Ok(written) if written == n => {}
            Ok(written) => conn
                .pending
                .extend_from_slice(got.get(written..).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.pending.extend_from_slice(got),
            Err(_) => return false,
        }
        if n < buf.len() {
            return true;
        }
    }
}
