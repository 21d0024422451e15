//! One load connection: the requests it writes (from a precomputed template), the
//! replies it reads and checks, and the tally of what was measured.

use crate::client::{Client, Credentials};
use crate::proto::{Decoder, Event, Limits};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What every reply must be: its status, and its body when it is known exactly.
pub(super) struct Expect {
    body: Option<Vec<u8>>,
    /// For `stamp`: the length of `[date] ` + body.
    body_len: Option<u64>,
}

impl Expect {
    /// The replies to `op` with request body `body`.
    pub(super) fn new(op: &str, body: &[u8]) -> Expect {
        Expect {
            body: match op {
                "echo" => Some(body.to_vec()),
                "upper" => Some(body.to_ascii_uppercase()),
                "ping" => Some(Vec::new()),
                _ => None,
            },
            body_len: (op == "stamp").then_some(body.len() as u64 + 27),
        }
    }
}

pub(super) struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    next_id: u64,
    /// Requests sent and not answered: (id, the time it counts from).
    in_flight: VecDeque<(u64, Instant)>,
    /// Open loop: when this connection's next request is due.
    pub(super) next_due: Instant,
    /// The reply being received.
    reply_ok: bool,
    body_seen: u64,
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

/// The fixed parts of every request: `{"op":"echo","size":64,"id":` + id + `}` + body.
pub(super) struct RequestTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    body: Vec<u8>,
}

impl RequestTemplate {
    pub(super) fn new(op: &str, body: Vec<u8>) -> RequestTemplate {
        let size = if body.is_empty() {
            String::new()
        } else {
            format!(r#","size":{}"#, body.len())
        };
        RequestTemplate {
            prefix: format!(r#"{{"op":"{op}"{size},"id":"#).into_bytes(),
            suffix: b"}".to_vec(),
            body,
        }
    }
}

impl Conn {
    /// Connects and authenticates (blocking), then registers for mio as `token`.
    pub(super) fn connect(
        addr: SocketAddr,
        creds: &Credentials,
        registry: &Registry,
        token: Token,
        start: Instant,
    ) -> io::Result<Conn> {
        let std_stream = Client::connect(addr, creds)?.into_stream()?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
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
        })
    }

    /// Appends one request frame to the connection's output: the header is
    /// `prefix` + id + `suffix`, precomputed, so no formatting machinery runs per request.
    fn push_request(&mut self, counts_from: Instant, req: &RequestTemplate) {
        let id = self.next_id;
        self.next_id += 1;
        let mut digits = itoa::Buffer::new();
        let id_text = digits.format(id).as_bytes();
        let header_len = req.prefix.len() + id_text.len() + req.suffix.len();
        self.out
            .extend_from_slice(&(header_len as u32).to_be_bytes());
        self.out.extend_from_slice(&req.prefix);
        self.out.extend_from_slice(id_text);
        self.out.extend_from_slice(&req.suffix);
        self.out.extend_from_slice(&req.body);
        self.in_flight.push_back((id, counts_from));
    }

    /// Closed loop: keep `pipeline` requests in flight; latency counts from sending.
    pub(super) fn top_up(&mut self, pipeline: usize, now: Instant, req: &RequestTemplate) {
        while self.in_flight.len() < pipeline {
            self.push_request(now, req);
        }
    }

    /// Open loop: send every request that is due, whatever is still in flight;
    /// latency counts from when it was due, so a stalled server is not hidden
    /// (no coordinated omission).
    pub(super) fn schedule(&mut self, interval: Duration, now: Instant, req: &RequestTemplate) {
        while self.next_due <= now {
            let due = self.next_due;
            self.push_request(due, req);
            self.next_due += interval;
        }
    }

    pub(super) fn read_replies(
        &mut self,
        scratch: &mut [u8],
        expect: &Expect,
        now: Instant,
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
            let mut input = &scratch[..n];
            // Until the decoder wants more bytes: a frame's `End` comes from a call
            // after its last body bytes, possibly with no input left at all.
            loop {
                let (used, event) = self
                    .decoder
                    .decode(input)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.message()))?;
                input = &input[used..];
                match event {
                    None => break,
                    Some(Event::Head { header, .. }) => {
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
                        let want_len = expect
                            .body
                            .as_ref()
                            .map(|b| b.len() as u64)
                            .or(expect.body_len);
                        let ok = self.reply_ok && want_len.is_none_or(|len| len == self.body_seen);
                        let sent = self.in_flight.pop_front();
                        if let (Some(tally), Some((_, from))) = (tally.as_deref_mut(), sent) {
                            tally.requests += 1;
                            if !ok {
                                tally.errors += 1;
                            }
                            let us = now.saturating_duration_since(from).as_micros() as u64;
                            tally.latency.saturating_record(us.max(1));
                        }
                    }
                }
            }
            if n < scratch.len() {
                // A short read: the socket buffer was empty at that moment (epoll(7)), and
                // later bytes raise a new edge. Unlike the server, the load tool may skip the
                // read that would say WouldBlock: it saves a syscall per reply, and a close
                // that arrived with the data is an error either way, seen on the next read.
                return Ok(());
            }
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
        Ok(())
    }
}
