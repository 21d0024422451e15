//! One load connection: the requests it writes (from a precomputed template), the
//! replies it reads and checks, and the tally of what was measured.

use super::wire::{Expect, Wire, Workload, match_fixed};
use crate::client::tls::TlsOptions;
use crate::client::{Client, Credentials};
use crate::proto::{Decoder, Event, Header, Limits};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A load connection's socket: plain TCP, or TLS over it (`--tls`).
enum Socket {
    Tcp(TcpStream),
    Tls(Box<crate::tls::TlsStream>),
}

impl Socket {
    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Socket::Tcp(s) => s,
            Socket::Tls(s) => &mut s.sock,
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(_) => Ok(()),
            Socket::Tls(s) => s.flush(),
        }
    }
}

pub(super) struct Conn {
    stream: Socket,
    decoder: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    next_id: u64,
    /// Requests sent and not answered: (id, the time it counts from).
    in_flight: VecDeque<(u64, Instant)>,
    /// Open loop: when this connection's next request is due.
    pub(super) next_due: Instant,
    /// The frame reply being received.
    reply_ok: bool,
    body_seen: u64,
    /// A fixed reply (RESP, raw): how many of its bytes have arrived.
    matched: usize,
}

/// Counts, kept only while measuring.
pub(super) struct Tally {
    pub(super) requests: u64,
    pub(super) errors: u64,
    pub(super) latency: Histogram<u64>,
}

impl Tally {
    pub(super) fn new() -> io::Result<Tally> {
        Ok(Tally {
            requests: 0,
            errors: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(io::Error::other)?,
        })
    }
}

impl Conn {
    /// Connects (blocking; frames also log in), then registers for mio as `token`.
    pub(super) fn connect(
        addr: SocketAddr,
        wire: Wire,
        creds: &Credentials,
        tls: Option<&TlsOptions>,
        registry: &Registry,
        token: Token,
        start: Instant,
    ) -> io::Result<Conn> {
        let nonblocking = |s: std::net::TcpStream| -> io::Result<TcpStream> {
            s.set_nonblocking(true)?;
            Ok(TcpStream::from_std(s))
        };
        let mut stream = match (wire, tls) {
            (Wire::Frames, Some(tls)) => {
                let (sock, session) = Client::connect_tls(addr, creds, tls)?.into_tls()?;
                sock.set_read_timeout(None)?;
                let tls = crate::tls::TlsStream::new(nonblocking(sock)?, session.into());
                Socket::Tls(Box::new(tls))
            }
            (Wire::Frames, None) => {
                Socket::Tcp(nonblocking(Client::connect(addr, creds)?.into_stream()?)?)
            }
            (Wire::Resp | Wire::Raw, _) => {
                let stream = std::net::TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                Socket::Tcp(nonblocking(stream)?)
            }
        };
        registry.register(stream.tcp(), token, Interest::READABLE | Interest::WRITABLE)?;
        let limits = Limits {
            max_header: 1 << 20,
            max_body: u64::MAX,
            body_allowed: true,
        };
        Ok(Conn {
            stream,
            decoder: Decoder::new(limits),
            out: Vec::new(),
            out_pos: 0,
            next_id: 1,
            in_flight: VecDeque::new(),
            next_due: start,
            reply_ok: true,
            body_seen: 0,
            matched: 0,
        })
    }

    fn push_request(&mut self, counts_from: Instant, work: &Workload) {
        let id = self.next_id;
        self.next_id += 1;
        work.push(&mut self.out, id);
        self.in_flight.push_back((id, counts_from));
    }

    /// Closed loop: keep `pipeline` requests in flight; latency counts from sending.
    pub(super) fn top_up(&mut self, pipeline: usize, now: Instant, work: &Workload) {
        while self.in_flight.len() < pipeline {
            self.push_request(now, work);
        }
    }

    /// Open loop: send every request that is due, whatever is still in flight;
    /// latency counts from when it was due, so a stalled server is not hidden
    /// (no coordinated omission).
    pub(super) fn schedule(&mut self, interval: Duration, now: Instant, work: &Workload) {
        while self.next_due <= now {
            let due = self.next_due;
            self.push_request(due, work);
            self.next_due += interval;
        }
    }

    pub(super) fn read_replies(
        &mut self,
        scratch: &mut [u8],
        work: &Workload,
        now: Instant,
        closed: bool,
        mut tally: Option<&mut Tally>,
    ) -> io::Result<()> {
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed a connection",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let input = scratch.get(..n).unwrap_or_default();
            match work {
                Workload::Frames { expect, .. } => {
                    self.check_frames(input, expect, now, tally.as_deref_mut())?
                }
                Workload::Fixed { reply, .. } => {
                    let done = match_fixed(reply, &mut self.matched, input).map_err(|got| {
                        let got = String::from_utf8_lossy(got.get(..80).unwrap_or(got));
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("a reply did not match: got {:?}", got),
                        )
                    })?;
                    for _ in 0..done {
                        self.answered(true, now, tally.as_deref_mut());
                    }
                }
            }
            if n < scratch.len() && !closed && matches!(self.stream, Socket::Tcp(_)) {
                // A short read: the socket buffer was empty at that moment (epoll(7)), and
                // later bytes raise a new edge. Unlike the server, the load tool skips the
                // read that would say WouldBlock (a syscall per reply): the servers it
                // measures send no urgent data. Not when the event reported a hang-up:
                // a FIN that came with the data raises no later edge, so read on to it.
                // Not with TLS: a read returns one record's plaintext, the socket
                // may hold more.
                return Ok(());
            }
        }
    }

    /// Decodes frame replies and checks each: status 200, the id of the oldest
    /// request in flight, and the body when it is known.
    fn check_frames(
        &mut self,
        mut input: &[u8],
        expect: &Expect,
        now: Instant,
        mut tally: Option<&mut Tally>,
    ) -> io::Result<()> {
        // Until the decoder wants more bytes: a frame's `End` comes from a call
        // after its last body bytes, possibly with no input left at all.
        loop {
            let mut header = Header::default();
            let (used, event) = self
                .decoder
                .decode(input, &mut header)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.message()))?;
            input = input.get(used..).unwrap_or_default();
            match event {
                None => return Ok(()),
                Some(Event::Head { .. }) => {
                    let want_id = self.in_flight.front().map(|(id, _)| *id);
                    self.reply_ok =
                        header.status() == Some(200) && header.id().ok().flatten() == want_id;
                    self.body_seen = 0;
                }
                Some(Event::Body(chunk)) => {
                    if let Some(body) = &expect.body {
                        let from = self.body_seen as usize;
                        self.reply_ok &= body.get(from..from + chunk.len()) == Some(chunk);
                    }
                    self.body_seen += chunk.len() as u64;
                }
                Some(Event::End) => {
                    let ok = self.reply_ok && expect.len().is_none_or(|len| len == self.body_seen);
                    self.answered(ok, now, tally.as_deref_mut());
                }
            }
        }
    }

    /// The oldest request in flight has its reply: count it while measuring.
    fn answered(&mut self, ok: bool, now: Instant, tally: Option<&mut Tally>) {
        let sent = self.in_flight.pop_front();
        if let (Some(tally), Some((_, from))) = (tally, sent) {
            tally.requests += 1;
            if !ok {
                tally.errors += 1;
            }
            let us = now.saturating_duration_since(from).as_micros() as u64;
            tally.latency.saturating_record(us.max(1));
        }
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        // TLS records rustls still holds go out too (no-op on plain TCP).
        match self.stream.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}
