//! `frameloop load`, first cut: a single-threaded mio client in the server's own
//! style, driving N authenticated connections in closed loop with pipelining,
//! checking every reply's status and body length. (Latency histograms, open-loop
//! rate and id checks come with the load-generator work.)

use crate::client::{Client, Credentials};
use crate::proto::{Decoder, Event, Limits, encode_frame};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub creds: Credentials,
    pub conns: usize,
    pub pipeline: usize,
    pub op: String,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub conns: usize,
    pub pipeline: usize,
    pub op: String,
    pub size: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
}

struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    in_flight: usize,
    /// Body bytes of the reply being received.
    body_seen: u64,
    status_ok: bool,
}

/// What one reply must look like.
struct Expect {
    body_len: u64,
}

pub fn run(cfg: &LoadConfig) -> io::Result<Report> {
    let request = request_frame(cfg);
    let expect = Expect {
        body_len: match cfg.op.as_str() {
            "echo" | "upper" => cfg.size as u64,
            "stamp" => cfg.size as u64 + 27,
            _ => 0,
        },
    };
    let limits = Limits {
        max_header: 1 << 20,
        max_body: u64::MAX,
        body_allowed: true,
    };
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        let std_stream = Client::connect(cfg.addr, &cfg.creds)?.into_stream()?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(Conn {
            stream,
            decoder: Decoder::new(limits),
            out: Vec::new(),
            out_pos: 0,
            in_flight: 0,
            body_seen: 0,
            status_ok: true,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let (mut requests, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.duration;
    for conn in conns.iter_mut() {
        top_up(conn, cfg.pipeline, &request);
        flush(conn)?;
    }
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        let measuring = Instant::now() >= measure_from;
        for event in events.iter() {
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            loop {
                let n = match conn.stream.read(&mut scratch) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "server closed a connection",
                        ));
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let (done, bad) = take_replies(conn, &scratch[..n], &expect)?;
                conn.in_flight -= done as usize;
                if measuring {
                    requests += done;
                    errors += bad;
                }
            }
            top_up(conn, cfg.pipeline, &request);
            flush(conn)?;
        }
    }
    let seconds = cfg.duration.as_secs_f64();
    Ok(Report {
        conns: cfg.conns,
        pipeline: cfg.pipeline,
        op: cfg.op.clone(),
        size: cfg.size,
        seconds,
        requests,
        errors,
        rps: requests as f64 / seconds,
    })
}

fn request_frame(cfg: &LoadConfig) -> Vec<u8> {
    let body = vec![b'x'; cfg.size];
    let takes_body = matches!(cfg.op.as_str(), "echo" | "upper" | "stamp");
    let body: &[u8] = if takes_body { &body } else { &[] };
    let header = serde_json::json!({"op": cfg.op, "size": body.len()}).to_string();
    encode_frame(header.as_bytes(), body)
}

/// Decodes replies from `input`; returns (replies completed, replies wrong).
fn take_replies(conn: &mut Conn, input: &[u8], expect: &Expect) -> io::Result<(u64, u64)> {
    let (mut done, mut bad) = (0, 0);
    let mut pos = 0;
    loop {
        let (n, event) = conn
            .decoder
            .decode(&input[pos..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.message()))?;
        pos += n;
        match event {
            None => return Ok((done, bad)),
            Some(Event::Head { header, .. }) => {
                conn.status_ok = header.status() == Some(200);
                conn.body_seen = 0;
            }
            Some(Event::Body(chunk)) => conn.body_seen += chunk.len() as u64,
            Some(Event::End) => {
                done += 1;
                if !conn.status_ok || conn.body_seen != expect.body_len {
                    bad += 1;
                }
            }
        }
    }
}

fn top_up(conn: &mut Conn, pipeline: usize, request: &[u8]) {
    while conn.in_flight < pipeline {
        conn.out.extend_from_slice(request);
        conn.in_flight += 1;
    }
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    while conn.out_pos < conn.out.len() {
        match conn.stream.write(&conn.out[conn.out_pos..]) {
            Ok(n) => conn.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    conn.out.clear();
    conn.out_pos = 0;
    Ok(())
}
