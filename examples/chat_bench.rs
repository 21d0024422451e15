//! Chat fan-out benchmark driver (run by scripts/bench-chat.sh): one sender says
//! numbered messages to a room of N member connections, all read on one mio loop;
//! prints deliveries per second as one JSON line. Every member must receive every
//! message, in order, or the run fails.
//!
//! cargo run --release --example chat_bench -- ADDR USERS_FILE [MEMBERS] [MESSAGES] [SIZE] [WINDOW] [SERVER_PID]

mod common;

use common::{Member, member};
use frameloop::client::Credentials;
use frameloop::proto::encode_frame;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::error::Error;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

const ROOM: &str = "bench";

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Takes the complete frames at the front of `m.buf`: `msg` pushes are checked
/// (number in order) and counted; others (`joined`) are skipped.
fn take_frames(m: &mut Member, msg_head: &[u8], msg_size: usize) -> Result<u64, Box<dyn Error>> {
    let mut pos = 0;
    let mut got = 0;
    loop {
        let rest = &m.buf[pos..];
        if rest.len() < 4 {
            break;
        }
        let hlen = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + hlen {
            break;
        }
        let head = &rest[4..4 + hlen];
        // Fast path: every message header is the same bytes.
        let (size, is_msg) = if head == msg_head {
            (msg_size, true)
        } else {
            let h: serde_json::Value = serde_json::from_slice(head)?;
            if h["op"] == "bye" || h.get("status").is_some() {
                return Err(format!("unexpected frame {h}").into());
            }
            let size = h["size"].as_u64().unwrap_or(0) as usize;
            (size, h["op"] == "msg")
        };
        if rest.len() < 4 + hlen + size {
            break;
        }
        if is_msg {
            let body = &rest[4 + hlen..4 + hlen + size];
            let n = u64::from_be_bytes(body[..8].try_into()?);
            if n != m.next {
                return Err(format!("message {n} where {} was due", m.next).into());
            }
            m.next += 1;
            got += 1;
        }
        pos += 4 + hlen + size;
    }
    m.buf.drain(..pos);
    Ok(got)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> u64 {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let addr = args
        .first()
        .ok_or("usage: chat_bench ADDR USERS [MEMBERS] [MESSAGES] [SIZE] [WINDOW] [PID]")?;
    let users = args.get(1).ok_or("users file")?;
    let (members_n, messages, size, window) = (
        arg(2, 1000).max(1),
        arg(3, 2000),
        arg(4, 64).max(8),
        arg(5, 32).max(1),
    );
    let server_pid = args.get(6).and_then(|s| s.parse::<u32>().ok());
    raise_fd_limit();
    let creds = Credentials::for_user("guest", None, std::path::Path::new(users))?;

    let mut poll = Poll::new()?;
    let mut members = Vec::new();
    for i in 0..members_n as usize {
        let mut stream = member(addr, &creds, ROOM)?;
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        members.push(Member {
            stream,
            buf: Vec::new(),
            next: 0,
        });
    }
    let sender_token = Token(members.len());
    let mut sender = common::sender(&poll, sender_token, addr, &creds, ROOM)?;

    let (msg_head, say_head) = common::heads(ROOM, size);
    let mut body = vec![b'.'; size as usize];
    let mut out: Vec<u8> = Vec::new();
    let mut sent = 0u64; // messages written to the sender's buffer
    let mut delivered = 0u64;
    let mut replies_bytes = 0u64;
    // Message 0 is a warm-up: when every member has it, all `joined` pushes are read.
    let total = messages + 1;
    let want = total * members_n;
    let mut started: Option<(Instant, Option<u64>, u64)> = None;
    let mut scratch = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let deadline = Instant::now() + Duration::from_secs(600);
    while delivered < want {
        if Instant::now() > deadline {
            return Err(format!("timed out: {delivered} of {want} deliveries").into());
        }
        // Keep about `window` messages in flight (sent, not yet delivered to every
        // member): a sender faster than its readers would only fill queues.
        let limit = match started {
            None => 1,
            Some(_) => (delivered / members_n + window).min(total),
        };
        while sent < limit {
            body[..8].copy_from_slice(&sent.to_be_bytes());
            out.extend_from_slice(&encode_frame(say_head.as_bytes(), &body));
            sent += 1;
        }
        if !out.is_empty() {
            match sender.write(&out) {
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for ev in events.iter() {
            let t = ev.token();
            if t == sender_token {
                // Replies: count bytes only (each is a small 200); a refusal would
                // show up as missing deliveries.
                loop {
                    match sender.read(&mut scratch) {
                        Ok(0) => return Err("sender closed".into()),
                        Ok(n) => replies_bytes += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                continue;
            }
            let Some(m) = members.get_mut(t.0) else {
                continue;
            };
            loop {
                match m.stream.read(&mut scratch) {
                    Ok(0) => return Err(format!("member {} closed", t.0).into()),
                    Ok(n) => m.buf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            delivered += take_frames(m, msg_head.as_bytes(), size as usize)?;
        }
        if started.is_none() && delivered == members_n {
            started = Some((Instant::now(), server_pid.and_then(cpu_ticks), delivered));
        }
    }
    let (t0, cpu0, d0) = started.ok_or("no warm-up")?;
    let secs = t0.elapsed().as_secs_f64();
    let n = delivered - d0;
    let hz = 100.0; // USER_HZ on Linux
    let cpu_us = match (cpu0, server_pid.and_then(cpu_ticks)) {
        (Some(a), Some(b)) => Some((b - a) as f64 / hz * 1e6 / n as f64),
        _ => None,
    };
    println!(
        "{}",
        json!({
            "members": members_n,
            "messages": messages,
            "size": size,
            "window": window,
            "seconds": secs,
            "deliveries": n,
            "deliveries_per_s": n as f64 / secs,
            "messages_per_s": messages as f64 / secs,
            "server_cpu_us_per_delivery": cpu_us,
            "reply_bytes": replies_bytes,
        })
    );
    Ok(())
}
