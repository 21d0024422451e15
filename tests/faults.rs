//! Faults from outside: the server killed with SIGKILL mid-upload and restarted,
//! and clients that vanish mid-request. Nothing may leak: descriptors, children,
//! temp files, connections. (Vanishing mid-header, mid-body and mid-auth is in
//! tests/limits.rs; mid-exec, with the child reaped, in tests/exec.rs.)

mod common;

use common::Server;
use serde_json::json;
use std::io::Read;

fn tmp_entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn kill9_mid_put_keeps_the_old_file_and_restart_removes_the_temp() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let reply = c
        .request("put", json!({"path": "/keep.bin", "size": 3}), b"old")
        .expect("put");
    assert_eq!(reply.status(), 200, "{reply:?}");
    // An overwrite that stops halfway: 4 MiB of 8 announced.
    let mut raw = server.raw_authed();
    raw.request(
        json!({"op": "put", "path": "/keep.bin", "size": 8 << 20, "overwrite": true}),
        b"",
    );
    raw.send_bytes(&vec![b'n'; 4 << 20]);
    let dir = server.dir.path().to_path_buf();
    server.wait_for("the upload's temp file to fill", |_| {
        std::fs::read_dir(dir.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.metadata().map(|m| m.len() >= 4 << 20).unwrap_or(false))
    });
    let dir = server.kill9();
    assert_eq!(tmp_entries(dir.path()), 1, "SIGKILL leaves the temp file");
    let stored = dir.path().join("files/guest/keep.bin");
    assert_eq!(std::fs::read(&stored).unwrap(), b"old");

    let server = Server::start_in(dir, "127.0.0.1:0", &[]);
    assert_eq!(
        tmp_entries(server.dir.path()),
        0,
        "start removes stale temps"
    );
    let mut c = server.client();
    let reply = c.request("get", json!({"path": "/keep.bin"}), b"").unwrap();
    assert_eq!(reply.body, b"old");
    assert!(server.log().contains("removed 1 unfinished upload"));
}

#[test]
fn clients_vanishing_mid_get_put_and_sum_leak_nothing() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let big = vec![7u8; 8 << 20];
    let reply = c
        .request("put", json!({"path": "/big.bin", "size": big.len()}), &big)
        .unwrap();
    assert_eq!(reply.status(), 200);
    let fds_before = server.fd_count();
    for round in 0..12 {
        let mut raw = server.raw_authed();
        match round % 3 {
            // Mid-get: the reply header and a little of the body read, then gone.
            0 => {
                raw.request(json!({"op": "get", "path": "/big.bin"}), b"");
                let mut some = [0u8; 4096];
                raw.s.read_exact(&mut some).unwrap();
            }
            // Mid-put: half the body sent.
            1 => {
                raw.request(
                    json!({"op": "put", "path": format!("/p{round}"), "size": 1 << 20}),
                    b"",
                );
                raw.send_bytes(&[1u8; 1 << 19]);
            }
            // Mid-sum: gone before the digest comes.
            _ => raw.request(json!({"op": "sum", "path": "/big.bin"}), b""),
        }
        drop(raw);
    }
    // Open: `c` and the connection `stats()` itself uses.
    server.wait_for("connections to close", |s| {
        s.stats()["conns_open"].as_u64() == Some(2)
    });
    server.wait_for("descriptors to be freed", |s| s.fd_count() <= fds_before);
    server.wait_for("temp files to go", |s| tmp_entries(s.dir.path()) == 0);
    // No upload landed, and the server still serves.
    for round in [1, 4, 7, 10] {
        let r = c
            .request("ls", json!({"path": format!("/p{round}")}), b"")
            .unwrap();
        assert_eq!(r.status(), 404, "a partial upload became visible: {r:?}");
    }
    let r = c.request("sum", json!({"path": "/big.bin"}), b"").unwrap();
    assert_eq!(r.status(), 200);
}
