//! The connection machine behind TLS, fed through a real TLS session in memory:
//! a client handshakes with the server's `TlsStream`, then sends the input as
//! plaintext; its records reach the server cut where the input says, and with
//! one byte flipped when it says so. Never a panic; an intact session's
//! replies are well-formed frames; a flipped byte ends in a TLS error.
#![no_main]

mod common;

use frameloop::client::read_frame;
use frameloop::conn::Conn;
use frameloop::service::Services;
use frameloop::tls::{ShutdownWrite, Tls, TlsStream, is_tls_error};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

/// Memory standing in for the server's socket: what the client sent, and what
/// the server wrote.
#[derive(Debug, Default)]
struct Wire {
    inbox: VecDeque<u8>,
    outbox: Vec<u8>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbox.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.inbox.read(buf)
    }
}

impl ShutdownWrite for Wire {
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct World {
    services: Services,
    tls: Tls,
    client: Arc<ClientConfig>,
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

fn world() -> World {
    let (services, dir) = common::services("tls", None);
    let (tls, cert) = Tls::load(None, None, &dir).expect("certificate");
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).expect("pem") {
        roots.add(c.expect("cert")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    World {
        services,
        tls,
        client: Arc::new(client),
    }
}

/// The server reads what it can and serves it, as `Server::read` does; its
/// replies go through TLS into the wire. `Err` once TLS fails.
fn serve(
    s: &mut Services,
    server: &mut TlsStream<Wire>,
    conn: &mut Conn,
    now: Instant,
) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match server.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let mut used = 0;
                while used < n && conn.is_open() {
                    used += conn.receive(s, buf.get(used..n), now);
                    let mut pushes = s.take_pushes();
                    pushes.clear();
                    s.return_pushes(pushes);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let done = conn.out.write_to(server, usize::MAX)?;
    conn.written(s, done.bytes, false, now);
    Ok(())
}

fn run(w: &mut World, data: &[u8]) {
    let [cut, flip_at, flip, input @ ..] = data else {
        return;
    };
    let now = Instant::now();
    let s = &mut w.services;
    let mut conn = Conn::open(s, common::RULES, 0, 0, true, Some(w.tls.binding), now);
    let mut server = w.tls.accept(Wire::default()).expect("server side");
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = ClientConnection::new(Arc::clone(&w.client), name).expect("client side");
    // The handshake, in memory.
    for _ in 0..20 {
        if !client.is_handshaking() {
            break;
        }
        let mut hello = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut hello).expect("client writes");
        }
        server.socket_mut().inbox.extend(hello);
        serve(s, &mut server, &mut conn, now).expect("handshake");
        let out = std::mem::take(&mut server.socket_mut().outbox);
        client.read_tls(&mut &out[..]).expect("client reads");
        client.process_new_packets().expect("client handshake");
    }
    assert!(!client.is_handshaking(), "no handshake");
    // The input as plaintext, its records cut every `cut` bytes (1-256).
    client.writer().write_all(input).expect("plaintext");
    let mut records = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut records).expect("records");
    }
    let flipped = *flip != 0 && !records.is_empty();
    if flipped {
        let at = usize::from(*flip_at) % records.len();
        records[at] ^= *flip;
    }
    let mut failed = false;
    for piece in records.chunks(usize::from(*cut) + 1) {
        server.socket_mut().inbox.extend(piece);
        if let Err(e) = serve(s, &mut server, &mut conn, now) {
            assert!(is_tls_error(&e), "not a TLS error: {e}");
            failed = true;
            break;
        }
    }
    if !failed {
        // The replies, decrypted: each a well-formed frame.
        let out = std::mem::take(&mut server.socket_mut().outbox);
        client.read_tls(&mut &out[..]).expect("client reads");
        client.process_new_packets().expect("replies decrypt");
        let mut plain = Vec::new();
        let _ = client.reader().read_to_end(&mut plain);
        let mut rest = &plain[..];
        while !rest.is_empty() {
            let frame = read_frame(&mut rest).expect("replies are well-formed frames");
            assert!(
                [200, 400, 401, 413, 431, 503].contains(&frame.status()) || frame.op().is_some()
            );
        }
    }
    conn.close(s, "end of input");
    conn.release(s, |_| false);
}

fuzz_target!(|data: &[u8]| {
    WORLD.with(|cell| {
        let mut cell = cell.borrow_mut();
        let w = cell.get_or_insert_with(world);
        run(w, data);
    });
});
