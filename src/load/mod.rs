//! `frameloop load`: a single-threaded mio client in the server's own style. It
//! drives N authenticated connections in closed loop (P requests in flight on
//! each) or open loop (a fixed total rate, latency measured from the time each
//! request was due, as wrk2 does), and checks every reply: status, id order and,
//! for echo and upper, the body byte for byte.

use crate::client::{Client, Credentials};
use crate::proto::{Decoder, Event, Limits};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub creds: Credentials,
    pub conns: usize,
    /// Requests in flight per connection (closed loop).
    pub pipeline: usize,
    /// Total requests per second across all connections (open loop), if set.
    pub rate: Option<f64>,
    pub op: String,
    pub size: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Show a progress line on stderr while running.
    pub progress: bool,
    /// A server process on this machine whose CPU time to measure over the window.
    pub server_pid: Option<u32>,
}

/// The ops the load generator knows how to check.
pub const OPS: [&str; 5] = ["ping", "echo", "upper", "stamp", "time"];

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub conns: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub op: String,
    pub size: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// CPU the load generator itself used, as a share of one core (1.0 = saturated).
    pub client_cpu: f64,
    /// With `server_pid`: the server's CPU time (user + system) over the measured
    /// window, per request, in microseconds.
    pub server_cpu_us_per_req: Option<f64>,
}

/// What every reply must be: its status, and its body when it is known exactly.
struct Expect {
    body: Option<Vec<u8>>,
    /// For `stamp`: the length of `[date] ` + body.
    body_len: Option<u64>,
}

struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    next_id: u64,
    /// Requests sent and not answered: (id, the time it counts from).
    in_flight: VecDeque<(u64, Instant)>,
    /// Open loop: when this connection's next request is due.
    next_due: Instant,
    /// The reply being received.
    reply_ok: bool,
    body_seen: u64,
}

/// Counts, kept only while measuring.
struct Tally {
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
}

pub fn run(cfg: &LoadConfig) -> io::Result<Report> {
    if !OPS.contains(&cfg.op.as_str()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("op must be one of {OPS:?}"),
        ));
    }
    // 10,000 connections need 10,000 descriptors.
    let _ = crate::net::raise_fd_limit();
    let body = vec![b'x'; if takes_body(&cfg.op) { cfg.size } else { 0 }];
    let expect = Expect {
        body: match cfg.op.as_str() {
            "echo" => Some(body.clone()),
            "upper" => Some(body.to_ascii_uppercase()),
            "ping" => Some(Vec::new()),
            _ => None,
        },
        body_len: (cfg.op == "stamp").then_some(body.len() as u64 + 27),
    };
    let request = RequestTemplate::new(&cfg.op, body);
    let limits = Limits {
        max_header: 1 << 20,
        max_body: u64::MAX,
        body_allowed: true,
    };
    let mut poll = Poll::new()?;
    let start = Instant::now();
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
            next_id: 1,
            in_flight: VecDeque::new(),
            next_due: start,
            reply_ok: true,
            body_seen: 0,
        });
    }
    // Open loop: each connection sends at rate/conns, their schedules staggered
    // evenly, so across connections one request falls due every 1/rate seconds,
    // in round-robin order: `cursor` walks that order without scanning them all,
    // reading each connection's own `next_due` (one clock, no drift).
    let interval = cfg
        .rate
        .map(|rate| Duration::from_secs_f64(cfg.conns as f64 / rate.max(1e-9)));
    let begin = Instant::now();
    let mut cursor = 0usize;
    if let Some(interval) = interval {
        for (i, conn) in conns.iter_mut().enumerate() {
            conn.next_due = begin + interval.mul_f64(i as f64 / cfg.conns as f64);
        }
    }
    let measure_from = begin + cfg.warmup;
    let end = measure_from + cfg.duration;
    let cpu_start = cpu_time();
    let mut tally = Tally {
        requests: 0,
        errors: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(io::Error::other)?,
    };
    let progress = cfg
        .progress
        .then(|| progress_bar(cfg.warmup + cfg.duration));
    let mut server_cpu_from: Option<Duration> = None;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut ready: Vec<usize> = (0..conns.len()).collect();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let measuring = now >= measure_from;
        if measuring && server_cpu_from.is_none() {
            server_cpu_from = Some(cfg.server_pid.and_then(process_cpu).unwrap_or_default());
        }
        // Send what is due on every connection that is ready for it.
        for &i in &ready {
            if let Some(conn) = conns.get_mut(i) {
                if interval.is_none() {
                    top_up(conn, cfg.pipeline, now, &request);
                }
                flush(conn)?;
            }
        }
        ready.clear();
        // Open loop: requests go out only in schedule order, walked by `cursor`.
        if let Some(interval) = interval {
            let mut visited = 0;
            while visited < conns.len() && conns.get(cursor).is_some_and(|c| c.next_due <= now) {
                if let Some(conn) = conns.get_mut(cursor) {
                    schedule(conn, interval, now, &request);
                    flush(conn)?;
                }
                cursor = (cursor + 1) % conns.len();
                visited += 1;
            }
        }
        let timeout = match interval {
            // mio rounds timeouts up to whole milliseconds: ask for the whole
            // milliseconds below the due time, then poll without sleeping until it.
            Some(_) => {
                let due = conns.get(cursor).map_or(now, |c| c.next_due);
                let wait = due.saturating_duration_since(now);
                Duration::from_millis(wait.as_millis() as u64)
            }
            None => Duration::from_millis(50),
        }
        .min(end.saturating_duration_since(now));
        poll.poll(&mut events, Some(timeout))?;
        let now = Instant::now();
        for event in events.iter() {
            let i = event.token().0;
            let Some(conn) = conns.get_mut(i) else {
                continue;
            };
            read_replies(
                conn,
                &mut scratch,
                &expect,
                now,
                measuring.then_some(&mut tally),
            )?;
            ready.push(i);
        }
        if let Some(bar) = &progress {
            bar.set_position(begin.elapsed().as_millis() as u64);
            if measuring {
                let secs = now
                    .saturating_duration_since(measure_from)
                    .as_secs_f64()
                    .max(1e-3);
                bar.set_message(format!(
                    "{:.0} req/s, {} errors",
                    tally.requests as f64 / secs,
                    tally.errors
                ));
            }
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let server_cpu_us_per_req = match (cfg.server_pid.and_then(process_cpu), server_cpu_from) {
        (Some(end), Some(from)) if tally.requests > 0 => {
            Some(end.saturating_sub(from).as_secs_f64() * 1e6 / tally.requests as f64)
        }
        _ => None,
    };
    let seconds = cfg.duration.as_secs_f64();
    let wall = begin.elapsed().as_secs_f64();
    let q = |quantile: f64| tally.latency.value_at_quantile(quantile);
    Ok(Report {
        conns: cfg.conns,
        pipeline: cfg.pipeline,
        rate: cfg.rate,
        op: cfg.op.clone(),
        size: cfg.size,
        seconds,
        requests: tally.requests,
        errors: tally.errors,
        rps: tally.requests as f64 / seconds,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: tally.latency.max(),
        client_cpu: (cpu_time() - cpu_start).as_secs_f64() / wall,
        server_cpu_us_per_req,
    })
}

fn takes_body(op: &str) -> bool {
    matches!(op, "echo" | "upper" | "stamp")
}

fn progress_bar(total: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
    let style = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

/// Appends one request frame to the connection's output: the header is
/// `prefix` + id + `suffix`, precomputed, so no formatting machinery runs per request.
fn push_request(conn: &mut Conn, counts_from: Instant, req: &RequestTemplate) {
    let id = conn.next_id;
    conn.next_id += 1;
    let mut digits = itoa::Buffer::new();
    let id_text = digits.format(id).as_bytes();
    let header_len = req.prefix.len() + id_text.len() + req.suffix.len();
    conn.out
        .extend_from_slice(&(header_len as u32).to_be_bytes());
    conn.out.extend_from_slice(&req.prefix);
    conn.out.extend_from_slice(id_text);
    conn.out.extend_from_slice(&req.suffix);
    conn.out.extend_from_slice(&req.body);
    conn.in_flight.push_back((id, counts_from));
}

/// The fixed parts of every request: `{"op":"echo","size":64,"id":` + id + `}` + body.
struct RequestTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    body: Vec<u8>,
}

impl RequestTemplate {
    fn new(op: &str, body: Vec<u8>) -> RequestTemplate {
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

/// Closed loop: keep `pipeline` requests in flight; latency counts from sending.
fn top_up(conn: &mut Conn, pipeline: usize, now: Instant, req: &RequestTemplate) {
    while conn.in_flight.len() < pipeline {
        push_request(conn, now, req);
    }
}

/// Open loop: send every request that is due, whatever is still in flight;
/// latency counts from when it was due, so a stalled server is not hidden
/// (no coordinated omission).
fn schedule(conn: &mut Conn, interval: Duration, now: Instant, req: &RequestTemplate) {
    while conn.next_due <= now {
        let due = conn.next_due;
        push_request(conn, due, req);
        conn.next_due += interval;
    }
}

fn read_replies(
    conn: &mut Conn,
    scratch: &mut [u8],
    expect: &Expect,
    now: Instant,
    mut tally: Option<&mut Tally>,
) -> io::Result<()> {
    loop {
        let n = match conn.stream.read(scratch) {
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
            let (used, event) = conn
                .decoder
                .decode(input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.message()))?;
            input = &input[used..];
            match event {
                None => break,
                Some(Event::Head { header, .. }) => {
                    let want_id = conn.in_flight.front().map(|(id, _)| *id);
                    conn.reply_ok =
                        header.status() == Some(200) && header.id().ok().flatten() == want_id;
                    conn.body_seen = 0;
                }
                Some(Event::Body(chunk)) => {
                    if let Some(body) = &expect.body {
                        let from = conn.body_seen as usize;
                        conn.reply_ok &= body.get(from..from + chunk.len()) == Some(chunk);
                    }
                    conn.body_seen += chunk.len() as u64;
                }
                Some(Event::End) => {
                    let want_len = expect
                        .body
                        .as_ref()
                        .map(|b| b.len() as u64)
                        .or(expect.body_len);
                    let ok = conn.reply_ok && want_len.is_none_or(|len| len == conn.body_seen);
                    let sent = conn.in_flight.pop_front();
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

/// CPU time (user + system) a process on this machine has used, from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
