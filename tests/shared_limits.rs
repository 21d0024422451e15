//! Section 9 limits that span connections, from outside: unauthenticated
//! sockets never lock out a login (`--max-unauth`), per address and per user
//! caps, queued file bodies bounded per connection, and `--max-memory` evicting
//! the biggest holders while the others are served.

mod common;

use common::{Raw, Server, TIMEOUT};
use frameloop::client::{Client, Credentials};
use frameloop::proto::encode_frame;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A raw socket that reads its first frame (hello or 503).
fn idle_socket(server: &Server) -> (Raw, u64) {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut raw = Raw { s: stream };
    let first = raw.recv();
    (raw, first.status())
}

#[test]
fn idle_unauthenticated_sockets_never_lock_out_a_login() {
    let server = Server::start(&["--max-conns", "20", "--max-unauth", "5"]);
    let mut member = server.client();
    // 20 sockets that never log in: 5 get a hello, the rest 503 (none has waited 1 s).
    let mut idle = Vec::new();
    let mut hellos = 0;
    for _ in 0..20 {
        let (raw, status) = idle_socket(&server);
        hellos += usize::from(status == 0);
        idle.push(raw);
    }
    assert_eq!(hellos, 5, "only --max-unauth of them wait for a login");
    std::thread::sleep(Duration::from_millis(1200));
    // A login takes the slot of the oldest idle one, which is told why; once
    // logged in it no longer counts, so the next login finds that slot free.
    for _ in 0..3 {
        let mut c = server.client();
        assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
    }
    let mut told = 0;
    for raw in &mut idle {
        raw.s
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while let Ok(frame) = raw.try_recv() {
            if frame.str("reason") == Some("too many unauthenticated connections") {
                told += 1;
            }
        }
    }
    assert_eq!(
        told, 1,
        "the oldest gave way, with a bye; the rest were untouched"
    );
    // The logged-in connection was never touched.
    assert_eq!(
        member.request("ping", json!({}), b"").unwrap().status(),
        200
    );
}

#[test]
fn connections_from_one_address_are_capped() {
    let server = Server::start(&["--max-conns-per-ip", "3"]);
    let clients: Vec<Client> = (0..3).map(|_| server.client()).collect();
    let (mut fourth, status) = idle_socket(&server);
    assert_eq!(status, 503);
    fourth.expect_closed();
    drop(clients);
    server.wait_for("the three to close", |s| {
        s.log().matches("close 127.0.0.1").count() >= 3
    });
    let mut again = server.client();
    assert_eq!(again.request("ping", json!({}), b"").unwrap().status(), 200);
}

#[test]
fn logins_of_one_user_are_capped() {
    let server = Server::start(&["--max-conns-per-user", "2"]);
    let mut first = server.client();
    let _second = server.client();
    let creds = Credentials::Key {
        user: "guest".into(),
        key: server.key(),
    };
    let third = Client::connect(server.addr, &creds);
    let err = third.err().expect("the third login is refused");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(first.request("ping", json!({}), b"").unwrap().status(), 200);
}

#[test]
fn queued_file_bodies_hold_few_descriptors() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let big = vec![7u8; 6 << 20];
    for (path, data) in [("big", &big[..]), ("one", &b"x"[..])] {
        let header = json!({"path": path, "size": data.len()});
        assert_eq!(c.request("put", header, data).unwrap().status(), 200);
    }
    drop(c);
    let baseline = server.fd_count();
    let mut raw = server.raw_authed();
    let mut batch = encode_frame(br#"{"op":"get","id":0,"path":"big"}"#, b"");
    for id in 1..3000 {
        let header = format!(r#"{{"op":"get","id":{id},"path":"one"}}"#);
        batch.extend(encode_frame(header.as_bytes(), b""));
    }
    raw.send_bytes(&batch);
    // Nothing is read: the server pauses this connection at 16 queued bodies.
    std::thread::sleep(Duration::from_millis(800));
    let held = server.fd_count();
    assert!(
        held <= baseline + 20,
        "{held} descriptors, baseline {baseline}"
    );
    let mut other = server.client();
    assert_eq!(other.request("ping", json!({}), b"").unwrap().status(), 200);
    // Reading resumes it: every reply comes, in order.
    for id in 0..3000u64 {
        let reply = raw.recv();
        assert_eq!((reply.status(), reply.id()), (200, Some(id)));
    }
}

#[test]
fn over_max_memory_the_biggest_holders_are_evicted_and_the_rest_served() {
    over_max_memory(&[]);
}

/// With two workers (contract section 12) the limit is the whole server's.
#[test]
fn over_max_memory_with_workers_the_limit_is_the_whole_servers() {
    over_max_memory(&["--workers", "2"]);
}

fn over_max_memory(args: &[&str]) {
    let limit = 64 << 20;
    let limit_arg = limit.to_string();
    let mut all = vec!["--max-memory", &limit_arg];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let body = vec![b'm'; 16 << 20];
    let frame = encode_frame(br#"{"op":"echo","id":1,"size":16777216}"#, &body);
    let rss_before = server.rss_kib();
    // 8 connections each send three 16 MiB echoes and never read the replies.
    let mut senders = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..8 {
        let raw = server.raw_authed();
        readers.push(raw.s.try_clone().unwrap());
        let mut writer = raw.s;
        let frame = frame.clone();
        senders.push(std::thread::spawn(move || {
            for _ in 0..3 {
                if writer.write_all(&frame).is_err() {
                    return; // evicted: the server closed
                }
            }
        }));
    }
    // Meanwhile a new connection is served.
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(3) {
        let mut c = server.client();
        assert_eq!(c.request("echo", json!({}), b"hi").unwrap().body, b"hi");
        peak = peak.max(server.rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        peak < rss_before + (limit + (32 << 20)) / 1024,
        "RSS peaked at {peak} KiB (from {rss_before})"
    );
    let evicted = server.log().matches("memory limit").count();
    eprintln!("RSS {rss_before} KiB before, peak {peak} KiB; {evicted} evicted");
    assert!(evicted >= 1, "someone was evicted: {}", server.log());
    // An evicted connection reads its bye (its queued replies were dropped).
    let mut byes = 0;
    for mut s in readers {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = vec![0; 1 << 20];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n.min(4096)]);
            if seen.len() > 4096 {
                break; // replies streaming: not evicted
            }
        }
        byes += usize::from(seen.windows(12).any(|w| w == b"memory limit"));
    }
    assert!(byes >= 1, "an evicted connection got its bye");
    drop(senders);
}
