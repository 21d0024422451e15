//! Section 9 limits and the reactor's duties from outside: backpressure with
//! bounded memory, claimed lengths, idle timeout, max-conns, fairness, clean
//! closes, restarts on the same port, no leaked descriptors.

mod common;

use common::{Server, TIMEOUT};
use frameloop::proto::encode_frame;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn twenty_thousand_pipelined_echoes_unread_keep_memory_bounded() {
    let server = Server::start(&["--max-outbuf", "1048576"]);
    let raw = server.raw_authed();
    let rss_before = server.rss_kib();
    let mut writer = raw.s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let body = [b'x'; 1024];
        let mut batch = Vec::new();
        for id in 0..20_000u64 {
            let header = json!({"op":"echo","id":id,"size":1024}).to_string();
            batch.extend(encode_frame(header.as_bytes(), &body));
            if batch.len() > 256 * 1024 {
                writer.write_all(&batch).unwrap();
                batch.clear();
            }
        }
        writer.write_all(&batch).unwrap();
    });
    // Nobody reads: the server's output hits --max-outbuf, it stops reading, and
    // the rest waits in kernel buffers and in the sender.
    std::thread::sleep(Duration::from_millis(1500));
    let rss_mid = server.rss_kib();
    assert!(
        rss_mid < 100 * 1024,
        "server RSS {rss_mid} KiB while the client does not read"
    );
    assert!(
        rss_mid < rss_before + 20 * 1024,
        "RSS grew from {rss_before} to {rss_mid} KiB"
    );
    // Now read everything: reading resumes on the server and all 20,000 arrive in order.
    let mut raw = raw;
    for id in 0..20_000u64 {
        let r = raw.recv();
        assert_eq!((r.status(), r.id(), r.body.len()), (200, Some(id), 1024));
    }
    sender.join().unwrap();
}

#[test]
fn a_thousand_claimed_16_mib_bodies_cost_almost_nothing() {
    let server = Server::start(&[]);
    let rss_before = server.rss_kib();
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut raw = server.raw_authed();
        raw.request(json!({"op":"echo","id":1,"size":16_777_216}), b"");
        raw.send_bytes(b"x");
        conns.push(raw);
    }
    // Let the server read every byte that was sent.
    let mut ping = server.client();
    assert_eq!(ping.request("ping", json!({}), b"").unwrap().status(), 200);
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = server.rss_kib();
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!("RSS {rss_before} -> {rss_after} KiB for 1000 connections");
    assert!(
        grown < 8 * 1024,
        "RSS grew {grown} KiB for 1000 connections claiming 16 MiB each"
    );
    // And the server still answers.
    let start = Instant::now();
    assert_eq!(ping.request("ping", json!({}), b"").unwrap().status(), 200);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(server.stats()["conns_open"].as_u64(), Some(1002));
}

#[test]
fn idle_timeout_says_bye_and_activity_keeps_it_alive() {
    let server = Server::start(&["--idle-timeout", "0.6"]);
    let mut active = server.client();
    let mut idle = server.raw_authed();
    // Ping every 200 ms for 1.2 s: never idle for 0.6 s.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            active.request("ping", json!({}), b"").unwrap().status(),
            200
        );
    }
    // The silent one got a bye and a close meanwhile.
    let bye = idle.recv();
    assert_eq!(
        (bye.op(), bye.str("reason")),
        (Some("bye"), Some("idle timeout"))
    );
    idle.expect_closed();
}

#[test]
fn max_conns_gives_503_then_serves_again() {
    let server = Server::start(&["--max-conns", "2"]);
    let a = server.client();
    let _b = server.client();
    let (mut raw, first) = server.raw();
    assert_eq!(first.status(), 503);
    assert!(first.error().is_some());
    raw.expect_closed();
    drop(a);
    server.wait_for("a free slot", |s| {
        let (mut raw, hello) = s.raw();
        if hello.op() == Some("hello") {
            drop(raw);
            return true;
        }
        raw.expect_closed();
        false
    });
}

#[test]
fn a_flooding_connection_does_not_starve_others() {
    let server = Server::start(&[]);
    let flood = server.raw_authed();
    let mut writer = flood.s.try_clone().unwrap();
    let mut reader = flood;
    // 64 MiB of pipelined echoes, read back concurrently.
    let body = vec![b'f'; 64 * 1024];
    let frame = encode_frame(
        json!({"op":"echo","size":body.len()})
            .to_string()
            .as_bytes(),
        &body,
    );
    let sender = std::thread::spawn(move || {
        for _ in 0..1024 {
            if writer.write_all(&frame).is_err() {
                return;
            }
        }
    });
    let receiver = std::thread::spawn(move || {
        for _ in 0..1024 {
            assert_eq!(reader.recv().body.len(), 64 * 1024);
        }
    });
    let mut c = server.client();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
        worst = worst.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    sender.join().unwrap();
    receiver.join().unwrap();
    // A generous bound: the point is "not starved", not a latency figure.
    assert!(
        worst < Duration::from_millis(500),
        "worst ping {worst:?} during a flood"
    );
}

#[test]
fn vanishing_clients_leak_nothing() {
    let server = Server::start(&[]);
    let _keep = server.client();
    let fds_before = server.fd_count();
    for i in 0..50 {
        let mut raw = server.raw_authed();
        match i % 3 {
            // Mid-header.
            0 => raw.send_bytes(&[0, 0, 0, 40, b'{']),
            // Mid-body.
            1 => {
                raw.request(json!({"op":"echo","size":1000}), b"");
                raw.send_bytes(&[1; 10]);
            }
            // With replies it never reads.
            _ => {
                for _ in 0..100 {
                    raw.request(json!({"op":"echo"}), &[2; 1000]);
                }
            }
        }
        drop(raw);
    }
    // A client that connects and says nothing, then vanishes mid-auth.
    let (raw, _) = server.raw();
    drop(raw);
    // Open: `_keep` and the connection `stats()` itself uses.
    server.wait_for("connections to close", |s| {
        s.stats()["conns_open"].as_u64() == Some(2)
    });
    server.wait_for("descriptors to be freed", |s| s.fd_count() <= fds_before);
    assert!(server.log().contains("peer closed mid-frame"));
}

#[test]
fn a_client_that_half_closes_still_gets_its_replies() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    for id in 0..10 {
        raw.request(json!({"op":"echo","id":id}), b"bye soon");
    }
    raw.s.shutdown(std::net::Shutdown::Write).unwrap();
    for id in 0..10 {
        assert_eq!(raw.recv().id(), Some(id));
    }
    raw.expect_closed();
}

#[test]
fn restart_on_the_same_port_right_after_a_stop() {
    let server = Server::start(&[]);
    let addr = server.addr;
    // Make the server close first, leaving its side of a connection in TIME_WAIT.
    for _ in 0..5 {
        let mut raw = server.raw_authed();
        raw.send_bytes(&[0, 0, 0, 0]);
        assert_eq!(raw.recv().status(), 400);
        raw.expect_closed();
    }
    let dir = tempfile::tempdir().unwrap();
    drop(server);
    let again = Server::start_in(dir, &addr.to_string(), &[]);
    assert_eq!(again.addr, addr);
    let mut c = again.client();
    assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
}

#[test]
fn one_log_line_per_open_and_close_with_peer_and_reason() {
    let server = Server::start(&[]);
    let c = server.client();
    let local = c.stream().local_addr().unwrap().to_string();
    drop(c);
    server.wait_for("the close line", |s| {
        s.log().contains(&format!("close {local} (peer closed)"))
    });
    let log = server.log();
    assert_eq!(log.matches(&format!("open {local}")).count(), 1);
}

#[test]
fn ping_answers_within_a_bound_while_a_large_echo_streams() {
    let server = Server::start(&[]);
    let mut big = server.client();
    let body = vec![7u8; 16 * 1024 * 1024];
    let handle = std::thread::spawn(move || {
        let r = big.request("echo", json!({}), &body).unwrap();
        assert_eq!(r.body.len(), body.len());
    });
    let mut c = server.client();
    let start = Instant::now();
    while !handle.is_finished() && start.elapsed() < TIMEOUT {
        let t = Instant::now();
        assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "ping took {:?}",
            t.elapsed()
        );
    }
    handle.join().unwrap();
}

#[test]
fn trickling_an_unfinished_header_does_not_count_as_activity() {
    let server = Server::start(&["--idle-timeout", "0.5"]);
    let mut raw = server.raw_authed();
    let header = br#"{"op":"ping","pad":"......................................"}"#;
    raw.send_bytes(&common::be32(header.len() as u32));
    let start = Instant::now();
    let mut sent = 0;
    // One header byte every 100 ms: never a complete frame.
    while sent < header.len() && start.elapsed() < Duration::from_secs(3) {
        if raw.s.write_all(&header[sent..sent + 1]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
        if server.log().contains("idle timeout") {
            break;
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "a trickled header kept the connection alive"
    );
    let bye = raw.recv();
    assert_eq!(
        (bye.op(), bye.str("reason")),
        (Some("bye"), Some("idle timeout"))
    );
}

#[test]
fn a_tiny_max_outbuf_still_serves_everything() {
    let server = Server::start(&["--max-outbuf", "1"]);
    let mut c = server.client();
    let ids: Vec<u64> = (0..50)
        .map(|_| c.send("echo", json!({}), b"abc").unwrap())
        .collect();
    for id in ids {
        let r = c.read_reply().unwrap();
        assert_eq!((r.id(), r.body.as_slice()), (Some(id), &b"abc"[..]));
    }
}

#[test]
fn absurd_durations_are_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--idle-timeout", "1e19"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("idle"),
        "{out:?}"
    );
}
