//! Contract section 5 from outside: the file service's ops, its guarantees
//! (streaming, atomic put, chunked get and sum) and every bad input of issue 5.

mod common;

use common::{Raw, Server};
use frameloop::auth::{self, Key};
use frameloop::client::{Client, Credentials, Frame};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn req(c: &mut Client, op: &str, fields: Value) -> Frame {
    c.request(op, fields, b"").expect("reply")
}

fn put(c: &mut Client, path: &str, data: &[u8], extra: Value) -> Frame {
    let mut fields = json!({"path": path, "size": data.len()});
    if let Value::Object(more) = extra {
        for (k, v) in more {
            fields[k] = v;
        }
    }
    c.request("put", fields, data).expect("reply")
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn root(server: &Server, user: &str) -> PathBuf {
    server.dir.path().join("files").join(user)
}

fn tmp_entries(server: &Server) -> usize {
    std::fs::read_dir(server.dir.path().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn ls_names(c: &mut Client, path: &str) -> Vec<(String, String, u64)> {
    let r = req(c, "ls", json!({"path": path}));
    assert_eq!(r.status(), 200, "{r:?}");
    let list: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    list.iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn pwd_cd_mkdir_ls_rm() {
    let server = Server::start(&[]);
    let mut c = server.client();
    assert_eq!(req(&mut c, "pwd", json!({})).str("path"), Some("/"));
    assert_eq!(req(&mut c, "mkdir", json!({"path":"a"})).status(), 200);
    assert_eq!(req(&mut c, "mkdir", json!({"path":"a"})).status(), 409);
    assert_eq!(req(&mut c, "mkdir", json!({"path":"x/y"})).status(), 404);
    let r = req(&mut c, "mkdir", json!({"path":"/b/c/d","parents":true}));
    assert_eq!(r.status(), 200, "{r:?}");
    // parents: an existing directory is fine, like mkdir -p.
    assert_eq!(
        req(&mut c, "mkdir", json!({"path":"/b/c","parents":true})).status(),
        200
    );
    assert_eq!(
        req(&mut c, "mkdir", json!({"path":"/b","parents":"yes"})).status(),
        400
    );
    assert_eq!(
        req(&mut c, "cd", json!({"path":"b/c"})).str("path"),
        Some("/b/c")
    );
    assert_eq!(req(&mut c, "pwd", json!({})).str("path"), Some("/b/c"));
    assert_eq!(put(&mut c, "f.txt", b"hello", json!({})).status(), 200);
    assert!(root(&server, "guest").join("b/c/f.txt").exists());
    assert_eq!(req(&mut c, "cd", json!({"path":"nope"})).status(), 404);
    assert_eq!(req(&mut c, "cd", json!({"path":"f.txt"})).status(), 409);
    assert_eq!(
        req(&mut c, "cd", json!({"path":".."})).str("path"),
        Some("/b")
    );
    assert_eq!(
        req(&mut c, "cd", json!({"path":"/"})).str("path"),
        Some("/")
    );
    // ls: sorted by name bytes, types and sizes; optional path defaults to the cwd.
    put(&mut c, "/Z", b"1", json!({}));
    put(&mut c, "/a/zz", b"12", json!({}));
    let r = req(&mut c, "ls", json!({}));
    let list: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<&str> = list.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Z", "a", "b"]);
    assert_eq!(list[0]["type"], "file");
    assert_eq!(list[0]["size"], 1);
    assert_eq!(list[1]["type"], "dir");
    let now = chrono::Utc::now().timestamp();
    assert!((list[0]["mtime"].as_i64().unwrap() - now).abs() < 60);
    assert_eq!(ls_names(&mut c, "/a"), [("zz".into(), "file".into(), 2)]);
    assert_eq!(req(&mut c, "ls", json!({"path":"/missing"})).status(), 404);
    assert_eq!(req(&mut c, "ls", json!({"path":"/Z"})).status(), 409);
    // rm: file, empty dir, non-empty dir 409, missing 404, the root 403.
    assert_eq!(req(&mut c, "rm", json!({"path":"/a"})).status(), 409);
    assert_eq!(req(&mut c, "rm", json!({"path":"/a/zz"})).status(), 200);
    assert_eq!(req(&mut c, "rm", json!({"path":"/a"})).status(), 200);
    assert_eq!(req(&mut c, "rm", json!({"path":"/a"})).status(), 404);
    assert_eq!(req(&mut c, "rm", json!({"path":"/"})).status(), 403);
    assert_eq!(req(&mut c, "rm", json!({"path":"/b/.."})).status(), 403);
    assert_eq!(req(&mut c, "rm", json!({})).status(), 400);
    assert_eq!(ls_names(&mut c, "/").len(), 2);
}

#[test]
fn put_get_sum_round_trip() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let r = put(
        &mut c,
        "/d.bin",
        &data,
        json!({"sha256": sha_hex(&data).to_uppercase()}),
    );
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.header["total"], json!(data.len()));
    assert_eq!(r.str("sha256"), Some(sha_hex(&data).as_str()));
    let r = req(&mut c, "get", json!({"path":"d.bin"}));
    assert_eq!(r.status(), 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header["total"], json!(data.len()));
    assert!(r.header["mtime"].as_i64().unwrap() > 1_700_000_000);
    let r = req(&mut c, "get", json!({"path":"d.bin","offset":299_990}));
    assert_eq!(
        (r.body.as_slice(), r.header["size"].clone()),
        (&data[299_990..], json!(10))
    );
    let r = req(&mut c, "get", json!({"path":"d.bin","offset":300_000}));
    assert_eq!((r.status(), r.body.len()), (200, 0));
    assert_eq!(
        req(&mut c, "get", json!({"path":"d.bin","offset":300_001})).status(),
        400
    );
    assert_eq!(
        req(&mut c, "get", json!({"path":"d.bin","offset":-1})).status(),
        400
    );
    assert_eq!(req(&mut c, "get", json!({"path":"nope"})).status(), 404);
    assert_eq!(req(&mut c, "get", json!({"path":"/"})).status(), 409);
    let r = req(&mut c, "sum", json!({"path":"/d.bin"}));
    assert_eq!(r.str("sha256"), Some(sha_hex(&data).as_str()));
    assert_eq!(r.header["total"], json!(data.len()));
    assert_eq!(req(&mut c, "sum", json!({"path":"/nope"})).status(), 404);
    // An empty file.
    assert_eq!(put(&mut c, "/empty", b"", json!({})).status(), 200);
    let r = req(&mut c, "sum", json!({"path":"/empty"}));
    assert_eq!(r.str("sha256"), Some(sha_hex(b"").as_str()));
    assert_eq!(req(&mut c, "get", json!({"path":"/empty"})).body.len(), 0);
}

#[test]
fn put_refusals_leave_the_destination_and_no_temp_file() {
    // Three 4096-byte blocks (contract section 5 counts disk use).
    let server = Server::start(&["--quota", "12288"]);
    let mut c = server.client();
    assert_eq!(put(&mut c, "/f", b"old", json!({})).status(), 200);
    // Existing path without overwrite: 409; with it: replaced.
    let r = put(&mut c, "/f", b"new", json!({}));
    assert_eq!(r.status(), 409);
    assert_eq!(
        std::fs::read(root(&server, "guest").join("f")).unwrap(),
        b"old"
    );
    // A wrong sha256: refused, old content kept.
    let r = put(
        &mut c,
        "/f",
        b"new",
        json!({"overwrite":true,"sha256":sha_hex(b"other")}),
    );
    assert_eq!(r.status(), 400, "{r:?}");
    assert_eq!(
        std::fs::read(root(&server, "guest").join("f")).unwrap(),
        b"old"
    );
    let r = put(&mut c, "/f", b"new!", json!({"overwrite":true}));
    assert_eq!(r.status(), 200);
    assert_eq!(
        std::fs::read(root(&server, "guest").join("f")).unwrap(),
        b"new!"
    );
    // Bad sha256 text, a directory as destination, a missing parent.
    assert_eq!(
        put(&mut c, "/g", b"x", json!({"sha256":"zz"})).status(),
        400
    );
    req(&mut c, "mkdir", json!({"path":"/dir"}));
    assert_eq!(
        put(&mut c, "/dir", b"x", json!({"overwrite":true})).status(),
        409
    );
    assert_eq!(put(&mut c, "/", b"x", json!({})).status(), 409);
    assert_eq!(put(&mut c, "/no/such", b"x", json!({})).status(), 404);
    // Quota 3 blocks: /f and /dir use one each; 4096 bytes more fit, 4097 do not;
    // an overwrite counts the file it replaces.
    let r = put(&mut c, "/big", &[1u8; 4097], json!({}));
    assert_eq!(r.status(), 413, "{r:?}");
    assert_eq!(put(&mut c, "/big", &[1u8; 4096], json!({})).status(), 200);
    assert_eq!(
        put(&mut c, "/big", &[2u8; 4096], json!({"overwrite":true})).status(),
        200
    );
    assert_eq!(put(&mut c, "/one", b"1", json!({})).status(), 413);
    assert_eq!(req(&mut c, "rm", json!({"path":"/big"})).status(), 200);
    assert_eq!(put(&mut c, "/one", b"1", json!({})).status(), 200);
    // The connection stays usable after every refusal (their bodies were dropped).
    assert_eq!(req(&mut c, "ping", json!({})).status(), 200);
    assert_eq!(tmp_entries(&server), 0);
    assert!(!root(&server, "guest").join("g").exists());
}

#[test]
fn a_put_hashed_in_many_steps_is_verified_whole() {
    // Past several of the pool's hash steps (1 MiB), and not a multiple of one:
    // the reply's digest covers every byte, and a wrong sha256 still refuses it.
    let server = Server::start(&[]);
    let mut c = server.client();
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 3u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut wrong = data.clone();
    wrong[4 * 1024 * 1024 + 1] ^= 1;
    let r = put(&mut c, "/w", &data, json!({"sha256": sha_hex(&wrong)}));
    assert_eq!(
        (r.status(), r.error()),
        (400, Some("sha256 does not match the body")),
        "{r:?}"
    );
    assert!(!root(&server, "guest").join("w").exists());
    assert_eq!(tmp_entries(&server), 0);
    let r = put(&mut c, "/w", &data, json!({"sha256": sha_hex(&data)}));
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.str("sha256"), Some(sha_hex(&data).as_str()));
    assert_eq!(
        std::fs::read(root(&server, "guest").join("w")).unwrap(),
        data
    );
    assert_eq!(tmp_entries(&server), 0);
}

#[test]
fn disconnect_mid_put_leaves_nothing() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    raw.request(json!({"op":"put","path":"/lie","size":1_000_000}), b"");
    raw.send_bytes(&[7u8; 300_000]);
    server.wait_for("the temp file", |s| tmp_entries(s) == 1);
    drop(raw);
    server.wait_for("temp file removed", |s| tmp_entries(s) == 0);
    assert!(!root(&server, "guest").join("lie").exists());
    // Stale temp files from a crash are removed at the next start.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    // A pid beyond pid_max (2^22): its server is surely gone.
    std::fs::write(dir.path().join("tmp/put-4194305-1"), b"partial").unwrap();
    let server = Server::start_in(dir, "127.0.0.1:0", &[]);
    assert_eq!(tmp_entries(&server), 0);
}

#[test]
fn traversal_nul_and_long_paths() {
    let server = Server::start(&[]);
    let mut c = server.client();
    std::fs::write(server.dir.path().join("files/secret"), b"x").ok();
    for path in ["..", "/../..", "a/../../b", "/..", "../files/guest"] {
        for op in ["get", "ls", "cd", "sum", "rm"] {
            let r = req(&mut c, op, json!({"path": path}));
            assert_eq!(r.status(), 403, "{op} {path}: {r:?}");
        }
        assert_eq!(
            put(&mut c, &format!("{path}/x"), b"1", json!({})).status(),
            403
        );
    }
    assert_eq!(req(&mut c, "get", json!({"path":"a\u{0}b"})).status(), 400);
    assert_eq!(
        req(&mut c, "get", json!({"path": "a".repeat(4097)})).status(),
        400
    );
    assert_eq!(req(&mut c, "get", json!({"path": 5})).status(), 400);
    assert_eq!(req(&mut c, "cd", json!({})).status(), 400);
    // A 4096-byte path is allowed by the contract; the kernel finds no such file.
    let long = "a/".repeat(2048);
    assert_eq!(req(&mut c, "get", json!({"path": long})).status(), 404);
    // Nothing was written outside the root.
    assert_eq!(
        std::fs::read(server.dir.path().join("files/secret")).unwrap(),
        b"x"
    );
    assert_eq!(tmp_entries(&server), 0);
}

#[test]
fn symlinks_anywhere_in_a_path_are_403() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("passwd"), b"root:x").unwrap();
    req(&mut c, "mkdir", json!({"path":"/real"}));
    put(&mut c, "/real/ok", b"fine", json!({}));
    let r = root(&server, "guest");
    std::os::unix::fs::symlink(outside.path(), r.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("passwd"), r.join("pw")).unwrap();
    std::os::unix::fs::symlink(r.join("real"), r.join("inside")).unwrap();
    for (op, path) in [
        ("get", "/out/passwd"),
        ("get", "/pw"),
        ("sum", "/pw"),
        ("ls", "/out"),
        ("cd", "/out"),
        ("rm", "/pw"),
        ("rm", "/out/passwd"),
        ("mkdir", "/out/new"),
        // Even a symlink that stays inside the root is refused.
        ("get", "/inside/ok"),
    ] {
        let reply = req(&mut c, op, json!({"path": path}));
        assert_eq!(reply.status(), 403, "{op} {path}: {reply:?}");
    }
    let reply = req(&mut c, "mkdir", json!({"path":"/out/a/b","parents":true}));
    assert_eq!(reply.status(), 403);
    assert_eq!(put(&mut c, "/out/planted", b"x", json!({})).status(), 403);
    assert_eq!(
        put(&mut c, "/pw", b"x", json!({"overwrite":true})).status(),
        403
    );
    // ls of the root does not list symlinks (they cannot be used anyway).
    let names: Vec<String> = ls_names(&mut c, "/").into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["real"]);
    assert_eq!(
        std::fs::read(outside.path().join("passwd")).unwrap(),
        b"root:x"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
}

/// A server whose users file holds guest and bob.
fn two_user_server() -> (Server, Key) {
    let dir = tempfile::tempdir().unwrap();
    let bob = [0x42u8; 32];
    let guest = [0x17u8; 32];
    std::fs::write(
        dir.path().join("users"),
        format!("guest {}\nbob {}\n", hex::encode(guest), hex::encode(bob)),
    )
    .unwrap();
    (Server::start_in(dir, "127.0.0.1:0", &[]), bob)
}

#[test]
fn users_are_isolated() {
    let (server, bob_key) = two_user_server();
    let mut guest = server.client();
    let mut bob = Client::connect(
        server.addr,
        &Credentials::Key {
            user: "bob".into(),
            key: bob_key,
        },
    )
    .unwrap();
    put(&mut bob, "/mine", b"bob's", json!({}));
    put(&mut guest, "/mine", b"guest's", json!({}));
    assert_eq!(
        req(&mut guest, "get", json!({"path":"/mine"})).body,
        b"guest's"
    );
    assert_eq!(req(&mut bob, "get", json!({"path":"/mine"})).body, b"bob's");
    // Another user's name in a path is just a name inside your own root.
    for path in ["/bob/mine", "../bob/mine", "/../bob/mine"] {
        let r = req(&mut guest, "get", json!({"path": path}));
        assert!(r.status() == 404 || r.status() == 403, "{path}: {r:?}");
    }
    assert_eq!(ls_names(&mut bob, "/").len(), 1);
    assert_eq!(
        std::fs::read(root(&server, "bob").join("mine")).unwrap(),
        b"bob's"
    );
}

#[test]
fn pipelined_requests_wait_for_a_sum_in_order() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let data = vec![3u8; 5 * 1024 * 1024];
    put(&mut c, "/f", &data, json!({}));
    let ids: Vec<u64> = vec![
        c.send("sum", json!({"path":"/f"}), b"").unwrap(),
        c.send("echo", json!({}), b"after").unwrap(),
        c.send("sum", json!({"path":"/f"}), b"").unwrap(),
        c.send("get", json!({"path":"/f","offset":5_242_870}), b"")
            .unwrap(),
        c.send("ping", json!({}), b"").unwrap(),
    ];
    let got: Vec<Frame> = ids.iter().map(|_| c.read_reply().unwrap()).collect();
    let got_ids: Vec<Option<u64>> = got.iter().map(|f| f.id()).collect();
    assert_eq!(got_ids, ids.iter().map(|i| Some(*i)).collect::<Vec<_>>());
    assert_eq!(got[0].str("sha256"), Some(sha_hex(&data).as_str()));
    assert_eq!(got[1].body, b"after");
    assert_eq!(got[3].body, vec![3u8; 10]);
}

/// Reads one reply header from a raw stream, leaving the body unread.
fn read_head(s: &mut impl Read) -> Value {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut head = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut head).unwrap();
    serde_json::from_slice(&head).unwrap()
}

/// The pseudo-random block a big transfer repeats, varied per MiB.
fn block(i: u64, buf: &mut [u8]) {
    for (j, b) in buf.iter_mut().enumerate() {
        *b = (i as usize * 31 + j * 7 + (j >> 9)) as u8;
    }
}

#[test]
fn big_put_and_get_stream_with_flat_memory_and_pings_stay_prompt() {
    const MIB: u64 = 1024 * 1024;
    const SIZE: u64 = 256 * MIB;
    let server = Server::start(&[]);
    let idle = server.rss_kib();
    let mut raw = server.raw_authed();
    raw.request(json!({"op":"put","path":"/big","size":SIZE,"id":1}), b"");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut peak = 0;
    for i in 0..SIZE / MIB {
        block(i, &mut buf);
        hasher.update(&buf);
        raw.s.write_all(&buf).unwrap();
        if i % 32 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    let want = hex::encode(hasher.finalize());
    let reply = read_head(&mut raw.s);
    assert_eq!(reply["status"], 200, "{reply}");
    assert_eq!(reply["sha256"], want.as_str());
    peak = peak.max(server.rss_kib());
    assert_eq!(
        std::fs::metadata(root(&server, "guest").join("big"))
            .unwrap()
            .len(),
        SIZE
    );

    // get it back, reading slowly at first while another connection pings.
    raw.request(json!({"op":"get","path":"/big","id":2}), b"");
    let head = read_head(&mut raw.s);
    assert_eq!(
        (head["status"].clone(), head["size"].clone()),
        (json!(200), json!(SIZE))
    );
    let mut other = server.client();
    let mut worst = Duration::ZERO;
    let mut hasher = Sha256::new();
    let mut left = SIZE;
    let mut n = 0;
    while left > 0 {
        let want = left.min(MIB) as usize;
        raw.s.read_exact(&mut buf[..want]).unwrap();
        hasher.update(&buf[..want]);
        left -= want as u64;
        n += 1;
        if n % 16 == 0 {
            let t = Instant::now();
            assert_eq!(req(&mut other, "ping", json!({})).status(), 200);
            worst = worst.max(t.elapsed());
            peak = peak.max(server.rss_kib());
        }
    }
    assert_eq!(hex::encode(hasher.finalize()), want);
    assert!(worst < Duration::from_millis(200), "slowest ping {worst:?}");
    // A sum of the same 256 MiB runs in steps: pings on another connection still answer.
    raw.request(json!({"op":"sum","path":"/big","id":3}), b"");
    let t = Instant::now();
    assert_eq!(req(&mut other, "ping", json!({})).status(), 200);
    let ping_during_sum = t.elapsed();
    let reply = read_head(&mut raw.s);
    assert_eq!(reply["sha256"], want.as_str());
    assert!(
        ping_during_sum < Duration::from_millis(200),
        "{ping_during_sum:?}"
    );
    assert!(
        peak < idle + 64 * 1024,
        "RSS grew from {idle} KiB to {peak} KiB during 256 MiB transfers"
    );
    assert_eq!(tmp_entries(&server), 0);
}

/// ENOSPC: a 1 MiB tmpfs as data directory. The put fails with a clear error,
/// the temp file is gone and nothing appears at the destination.
#[test]
fn full_disk_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(status.success(), "this test mounts a tmpfs: run it as root");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.path().to_path_buf());
    let server = Server::start_in(
        tempfile::tempdir_in(dir.path()).unwrap(),
        "127.0.0.1:0",
        &[],
    );
    let mut c = server.client();
    let r = put(&mut c, "/huge", &vec![1u8; 2 * 1024 * 1024], json!({}));
    assert_eq!(r.status(), 500, "{r:?}");
    assert!(r.error().unwrap().contains("disk is full"), "{r:?}");
    assert_eq!(tmp_entries(&server), 0);
    assert!(!root(&server, "guest").join("huge").exists());
    assert_eq!(put(&mut c, "/small", b"fits", json!({})).status(), 200);
    drop(server);
}

#[test]
fn file_ops_need_authentication() {
    let server = Server::start(&[]);
    let (mut raw, _hello): (Raw, Frame) = server.raw();
    raw.request(json!({"op":"ls"}), b"");
    assert_eq!(raw.recv().status(), 401);
    raw.expect_closed();
    let _ = auth::AUTH_FAILED;
}

/// A `get` body goes out corked (whole segments); the tail must be pushed as soon
/// as the body is out. A tail left corked waits 200 ms in the kernel per reply.
#[test]
fn small_gets_are_not_held_back_by_corking() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(put(&mut c, "/odd.bin", &data, json!({})).status(), 200);
    let start = Instant::now();
    for _ in 0..10 {
        let r = req(&mut c, "get", json!({"path": "/odd.bin"}));
        assert_eq!(r.status(), 200, "{r:?}");
        assert_eq!(r.body, data);
        assert_eq!(req(&mut c, "ping", json!({})).status(), 200);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1000), "10 gets took {took:?}");
}
