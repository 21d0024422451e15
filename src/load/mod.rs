//! `frameloop load`: its settings and the run's event loop; `conn` holds one
//! connection's requests and reply checks, `report` what a run measured.

mod conn;
mod report;
mod wire;

pub use report::Report;
pub use wire::Wire;

use crate::client::Credentials;
use conn::{Conn, Tally};
use mio::{Events, Poll, Token};
use report::{cpu_time, process_cpu};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wire::Workload;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    /// frameloop frames, RESP (a Redis server) or raw echoes (the no-parse floor).
    pub wire: Wire,
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
    /// Inside TLS (`--tls`; frames only).
    pub tls: Option<crate::client::tls::TlsOptions>,
}

/// Runs the load: a single-threaded mio client in the server's own style. It drives
/// N authenticated connections in closed loop (P requests in flight on each) or
/// open loop (a fixed total rate, latency measured from the time each request was
/// due, as wrk2 does), and checks every reply: status, id order and, for echo and
/// upper, the body byte for byte (RESP and raw replies: every byte).
pub fn run(cfg: &LoadConfig) -> io::Result<Report> {
    let ops = cfg.wire.ops();
    if !ops.contains(&cfg.op.as_str()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("with {} the op must be one of {ops:?}", cfg.wire),
        ));
    }
    // 10,000 connections need 10,000 descriptors.
    let _ = crate::net::raise_fd_limit();
    let work = Workload::new(cfg.wire, &cfg.op, cfg.size);
    let mut poll = Poll::new()?;
    let start = Instant::now();
    let mut conns = Vec::with_capacity(cfg.conns);
    for i in 0..cfg.conns {
        conns.push(Conn::connect(
            cfg.addr,
            cfg.wire,
            &cfg.creds,
            cfg.tls.as_ref(),
            poll.registry(),
            Token(i),
            start,
        )?);
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
    let mut tally = Tally::new()?;
    let progress = cfg
        .progress
        .then(|| progress_bar(cfg.warmup + cfg.duration));
    let mut server_cpu_from: Option<(Duration, Duration)> = None;
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
                    conn.top_up(cfg.pipeline, now, &work);
                }
                conn.flush()?;
            }
        }
        ready.clear();
        // Open loop: requests go out only in schedule order, walked by `cursor`.
        if let Some(interval) = interval {
            let mut visited = 0;
            while visited < conns.len() && conns.get(cursor).is_some_and(|c| c.next_due <= now) {
                if let Some(conn) = conns.get_mut(cursor) {
                    conn.schedule(interval, now, &work);
                    conn.flush()?;
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
            // A hang-up reported with the event raises no later edge: read on to it.
            let closed = event.is_read_closed() || event.is_error();
            conn.read_replies(
                &mut scratch,
                &work,
                now,
                closed,
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
    // The server's CPU over the measured window per request: (user, system).
    let server_cpu = match (cfg.server_pid.and_then(process_cpu), server_cpu_from) {
        (Some(end), Some(from)) if tally.requests > 0 => {
            let per_req = |end: Duration, from: Duration| {
                end.saturating_sub(from).as_secs_f64() * 1e6 / tally.requests as f64
            };
            Some((per_req(end.0, from.0), per_req(end.1, from.1)))
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
        wire: cfg.wire.to_string(),
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
        server_cpu_us_per_req: server_cpu.map(|(user, system)| user + system),
        server_user_us_per_req: server_cpu.map(|(user, _)| user),
    })
}

fn progress_bar(total: Duration) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
    let style = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}
