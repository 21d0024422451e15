//! Chat bus benchmark driver (run by scripts/bench-bus.sh): a room with
//! PER_SERVER members on each of several servers sharing one Redis, and one
//! sender on the first server saying RATE messages a second (open loop) for
//! SECS seconds. Each message carries its number and the time it was written;
//! every member reads on one mio loop, checks the numbers come in order, and
//! records the delivery latency. Prints one JSON line: percentiles and losses.
//!
//! cargo run --release --example bus_bench -- ADDR,ADDR,.. USERS_FILE [PER_SERVER] [RATE] [SECS] [SIZE]

mod common;

use common::{Member, member};
use frameloop::client::Credentials;
use frameloop::proto::encode_frame;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::error::Error;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

const ROOM: &str = "bus";

/// Takes the whole frames at the front of `m.buf`: each `msg` is checked (in
/// order) and its latency recorded; other pushes (`joined`) are skipped.
fn take(
    m: &mut Member,
    msg_head: &[u8],
    size: usize,
    t0: Instant,
    lat: &mut Histogram<u64>,
) -> Result<u64, Box<dyn Error>> {
    let now = t0.elapsed().as_nanos() as u64;
    let (mut pos, mut got) = (0, 0);
    while let Some(rest) = m.buf.get(pos..).filter(|r| r.len() >= 4) {
        let hlen = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(head) = rest.get(4..4 + hlen) else {
            break;
        };
        let (len, is_msg) = if head == msg_head {
            (size, true)
        } else {
            let h: serde_json::Value = serde_json::from_slice(head)?;
            if h.get("status").is_some() || h["op"] == "bye" {
                return Err(format!("unexpected frame {h}").into());
            }
            (h["size"].as_u64().unwrap_or(0) as usize, false)
        };
        let Some(body) = rest.get(4 + hlen..4 + hlen + len) else {
            break;
        };
        if is_msg {
            let n = u64::from_be_bytes(body[..8].try_into()?);
            if n != m.next {
                return Err(format!("message {n} where {} was due", m.next).into());
            }
            m.next += 1;
            got += 1;
            if n > 0 {
                let sent = u64::from_be_bytes(body[8..16].try_into()?);
                lat.record(now.saturating_sub(sent).max(1))?;
            }
        }
        pos += 4 + hlen + len;
    }
    m.buf.drain(..pos);
    Ok(got)
}

/// Reads what `stream` holds into `buf` (edge-triggered: until `WouldBlock`).
fn drain(stream: &mut TcpStream, buf: &mut Vec<u8>, scratch: &mut [u8]) -> io::Result<()> {
    loop {
        match stream.read(scratch) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bus_bench ADDR,ADDR,.. USERS [PER_SERVER] [RATE] [SECS] [SIZE]";
    let addrs: Vec<&str> = args.first().ok_or(usage)?.split(',').collect();
    let users = args.get(1).ok_or(usage)?;
    let arg = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (per_server, rate, secs, size) =
        (arg(2, 33), arg(3, 10_000), arg(4, 5), arg(5, 64).max(16));
    let creds = Credentials::for_user("guest", None, std::path::Path::new(users))?;

    let mut poll = Poll::new()?;
    let mut members = Vec::new();
    for addr in &addrs {
        for _ in 0..per_server {
            let mut stream = member(addr, &creds, ROOM)?;
            let token = Token(members.len());
            poll.registry()
                .register(&mut stream, token, Interest::READABLE)?;
            members.push(Member {
                stream,
                buf: Vec::new(),
                next: 0,
            });
        }
    }
    let sender_token = Token(members.len());
    let mut sender = common::sender(&poll, sender_token, addrs[0], &creds, ROOM)?;

    let (msg_head, say_head) = common::heads(ROOM, size);
    let mut body = vec![b'.'; size as usize];
    let mut lat = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let t0 = Instant::now();
    let (mut out, mut scratch) = (Vec::new(), vec![0u8; 256 * 1024]);
    let mut events = Events::with_capacity(1024);
    let n_members = members.len() as u64;
    let total = rate * secs + 1; // message 0: the warm-up, not measured
    let (mut sent, mut delivered) = (0u64, 0u64);
    let mut send_start: Option<Instant> = None;
    let mut last_delivery = Instant::now();
    while delivered < total * n_members {
        // Message 0 first, alone; the rest on the clock once everyone has it.
        let due = match send_start {
            None => 1,
            Some(s) => (1 + (s.elapsed().as_secs_f64() * rate as f64) as u64).min(total),
        };
        while sent < due {
            body[..8].copy_from_slice(&sent.to_be_bytes());
            body[8..16].copy_from_slice(&(t0.elapsed().as_nanos() as u64).to_be_bytes());
            out.extend_from_slice(&encode_frame(say_head.as_bytes(), &body));
            sent += 1;
        }
        match sender.write(&out) {
            Ok(n) => drop(out.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        let wait = if sent < total {
            Duration::from_micros(100)
        } else {
            Duration::from_millis(50)
        };
        poll.poll(&mut events, Some(wait))?;
        for ev in events.iter() {
            if ev.token() == sender_token {
                let mut replies = Vec::new();
                drain(&mut sender, &mut replies, &mut scratch)?;
                continue;
            }
            let Some(m) = members.get_mut(ev.token().0) else {
                continue;
            };
            drain(&mut m.stream, &mut m.buf, &mut scratch)?;
            let got = take(m, msg_head.as_bytes(), size as usize, t0, &mut lat)?;
            if got > 0 {
                last_delivery = Instant::now();
            }
            delivered += got;
        }
        if send_start.is_none() && delivered == n_members {
            send_start = Some(Instant::now());
        }
        // Two seconds with nothing new once all is sent: what is missing is lost.
        if sent == total && last_delivery.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let us = |q: f64| lat.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        json!({
            "servers": addrs.len(),
            "members": n_members,
            "rate": rate,
            "seconds": secs,
            "sent": sent - 1,
            "expected": (total - 1) * n_members,
            "delivered": delivered.saturating_sub(n_members),
            "lost": total * n_members - delivered,
            "p50_us": us(0.5),
            "p99_us": us(0.99),
            "p999_us": us(0.999),
            "max_us": lat.max() as f64 / 1000.0,
        })
    );
    Ok(())
}
