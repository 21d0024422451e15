//! `serve --workers N` from outside (contract section 12): every worker accepts
//! on the same addresses, and the server stays one server: chat and `dm` span
//! the workers, `stats` sums them, every limit is the whole server's, one
//! SIGTERM stops them all. Which worker took a connection is read from the
//! log ("open ADDR on worker N"), so each test has members on both.

mod common;

use common::{Raw, Server, TIMEOUT};
use frameloop::client::{Client, Credentials, Frame, Stream};
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The worker the connection from `local` was opened on.
fn worker_of(server: &Server, local: SocketAddr) -> usize {
    let needle = format!("open {local} on worker ");
    let mut worker = None;
    server.wait_for("the connection's open line", |s| {
        let log = s.log();
        worker = log.lines().find_map(|l| {
            let rest = &l[l.find(&needle)? + needle.len()..];
            rest.split(' ').next()?.parse().ok()
        });
        worker.is_some()
    });
    worker.unwrap_or_default()
}

fn local_of(c: &Client) -> SocketAddr {
    match c.stream() {
        Stream::Tcp(s) => s.local_addr().unwrap(),
        _ => panic!("a TCP client"),
    }
}

/// Logged-in guest connections until there are `per_worker` on each of the
/// two workers (the kernel spreads them by their ports), grouped by worker.
fn on_both(server: &Server, per_worker: usize) -> [Vec<Client>; 2] {
    let mut by_worker: [Vec<Client>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..200 {
        if by_worker.iter().all(|w| w.len() >= per_worker) {
            return by_worker;
        }
        let c = server.client();
        let w = worker_of(server, local_of(&c));
        if by_worker[w].len() < per_worker {
            by_worker[w].push(c);
        }
    }
    panic!("connections never reached both workers");
}

fn ok(c: &mut Client, op: &str, fields: Value, body: &[u8]) -> Frame {
    let reply = c.request(op, fields, body).expect("reply");
    assert_eq!(reply.status(), 200, "{op}: {reply:?}");
    reply
}

#[test]
fn chat_rooms_and_dm_span_the_workers() {
    let server = Server::start(&["--workers", "2"]);
    let [mut zero, mut one] = on_both(&server, 2);
    // Joins from both workers: each member hears of the later ones, wherever.
    for c in zero.iter_mut().chain(one.iter_mut()) {
        ok(c, "join", json!({"room": "lobby"}), b"");
    }
    let mut all: Vec<Client> = zero.into_iter().chain(one).collect();
    for (i, c) in all.iter_mut().enumerate() {
        for _ in i + 1..4 {
            let joined = c.next_push().expect("joined");
            assert_eq!(joined.str("op"), Some("joined"));
        }
    }
    // A message from worker 0 reaches the members on worker 1 and the other on 0.
    ok(&mut all[0], "say", json!({"room": "lobby"}), b"across");
    for c in &mut all[1..] {
        let msg = c.next_push().expect("msg");
        assert_eq!(
            (msg.str("op"), msg.str("room")),
            (Some("msg"), Some("lobby"))
        );
        assert_eq!(msg.body, b"across");
    }
    // And back the other way, binary body intact.
    let body: Vec<u8> = (0..=255).collect();
    ok(&mut all[3], "say", json!({"room": "lobby"}), &body);
    for c in &mut all[..3] {
        assert_eq!(c.next_push().expect("msg").body, body);
    }
    // dm: every other connection of the user, on either worker.
    ok(&mut all[2], "dm", json!({"to": "guest"}), b"psst");
    for i in [0, 1, 3] {
        let dm = all[i].next_push().expect("dm");
        assert_eq!((dm.str("op"), dm.str("from")), (Some("msg"), Some("guest")));
        assert_eq!(dm.body, b"psst");
    }
    let nobody = all[0].request("dm", json!({"to": "nobody"}), b"x").unwrap();
    assert_eq!(nobody.status(), 404);
    // A member on worker 0 closes: the others, on both workers, hear `left`.
    drop(all.remove(0));
    for c in &mut all {
        let left = c.next_push().expect("left");
        assert_eq!(
            (left.str("op"), left.str("room")),
            (Some("left"), Some("lobby"))
        );
    }
}

#[test]
fn stats_sum_every_worker() {
    let server = Server::start(&["--workers", "2"]);
    let [mut zero, mut one] = on_both(&server, 2);
    for c in zero.iter_mut().chain(one.iter_mut()) {
        for _ in 0..3 {
            ok(c, "ping", json!({}), b"");
        }
    }
    // Ours, and the connection that asks (once the extra connections
    // `on_both` dropped are closed, on either worker).
    let mut stats = Value::Null;
    server.wait_for("the count of ours", |s| {
        stats = s.stats();
        stats["conns_open"] == 5
    });
    assert_eq!(stats["workers"], 2);
    assert_eq!(stats["ops"]["ping"], 12, "{stats}");
    assert!(stats["ops"]["stats"].as_u64() >= Some(1), "{stats}");
}

/// A raw connection's first frame: a hello, or a 503.
fn first_frame(server: &Server) -> (Raw, Frame) {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut raw = Raw { s };
    let first = raw.recv();
    (raw, first)
}

#[test]
fn max_conns_and_per_ip_hold_for_the_whole_server() {
    for (flag, limit) in [("--max-conns", 4), ("--max-conns-per-ip", 3)] {
        let n = limit.to_string();
        let server = Server::start(&["--workers", "2", flag, &n]);
        let mut held = Vec::new();
        for _ in 0..limit {
            let (raw, hello) = first_frame(&server);
            assert_eq!(hello.str("op"), Some("hello"), "{flag}");
            held.push(raw);
        }
        // Whichever worker the next ones land on: over the limit.
        for _ in 0..6 {
            let (_, refused) = first_frame(&server);
            assert_eq!(refused.status(), 503, "{flag} {n}");
        }
        // A place freed on either worker is free for the next, on either.
        held.pop();
        server.wait_for("the freed place", |s| {
            first_frame(s).1.str("op") == Some("hello")
        });
    }
}

#[test]
fn max_conns_per_user_counts_logins_on_every_worker() {
    let server = Server::start(&["--workers", "2", "--max-conns-per-user", "2"]);
    // Not logged in while they are sorted by worker (a dropped extra one,
    // still closing, must not count as a login).
    let login = |raw: &mut Raw, hello: &Frame| {
        let key = server.key();
        let nonce = frameloop::auth::hex32(hello.str("nonce").unwrap()).unwrap();
        let cnonce = [3u8; 32];
        let mac = frameloop::auth::client_mac(&key, &nonce, &cnonce, "guest");
        raw.request(
            json!({"op":"auth","user":"guest","cnonce":hex::encode(cnonce),"mac":hex::encode(mac)}),
            b"",
        );
        raw.recv().status()
    };
    let mut by_worker: [Option<(Raw, Frame)>; 2] = [None, None];
    for _ in 0..200 {
        if by_worker.iter().all(Option::is_some) {
            break;
        }
        let (raw, hello) = first_frame(&server);
        let w = worker_of(&server, raw.s.local_addr().unwrap());
        by_worker[w].get_or_insert((raw, hello));
    }
    // One login on each worker: the user's two.
    let mut logged_in = Vec::new();
    for (mut raw, hello) in by_worker.into_iter().flatten() {
        assert_eq!(login(&mut raw, &hello), 200);
        logged_in.push(raw);
    }
    assert_eq!(logged_in.len(), 2, "a connection on each worker");
    // A third, on whichever worker: over the whole server's limit.
    for _ in 0..4 {
        let (mut raw, hello) = first_frame(&server);
        assert_eq!(login(&mut raw, &hello), 503, "a third login of guest");
    }
}

/// A connection let in (not refused with 503), still greeting, and its worker.
fn waiting(server: &Server) -> (Raw, usize) {
    loop {
        let (raw, first) = first_frame(server);
        if first.str("op") == Some("hello") {
            let w = worker_of(server, raw.s.local_addr().unwrap());
            return (raw, w);
        }
        // Over --max-unauth while a connection we dropped is still closing.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_oldest_unauthenticated_gives_way_on_whichever_worker() {
    let server = Server::start(&["--workers", "2", "--max-unauth", "2"]);
    // Two waiting, one on each worker, then a newcomer: the oldest gives way,
    // until that was seen across workers (the newcomer's worker is the kernel's pick).
    let mut across = false;
    for _ in 0..12 {
        let oldest = waiting(&server);
        let mut younger = loop {
            let next = waiting(&server);
            if next.1 != oldest.1 {
                break next;
            }
        };
        let (mut oldest, oldest_worker) = oldest;
        std::thread::sleep(Duration::from_millis(1100));
        let (newcomer, hello) = first_frame(&server);
        assert_eq!(hello.str("op"), Some("hello"), "the newcomer is served");
        let bye = oldest.recv();
        assert_eq!(bye.str("op"), Some("bye"));
        assert_eq!(
            bye.str("reason"),
            Some("too many unauthenticated connections")
        );
        oldest.expect_closed();
        // The younger one still waits, untouched.
        younger
            .0
            .s
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            younger.0.try_recv().is_err(),
            "the younger one is left alone"
        );
        across |= worker_of(&server, newcomer.s.local_addr().unwrap()) != oldest_worker;
        drop((younger, newcomer));
        if across {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no newcomer landed on the other worker in 12 tries");
}

#[test]
fn one_sigterm_stops_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let mut server = Server::start(&["--workers", "2", "--unix", &sock_arg]);
    let [mut zero, mut one] = on_both(&server, 1);
    let creds = Credentials::Key {
        user: "guest".into(),
        key: server.key(),
    };
    let mut unix = Client::connect_unix(&sock, &creds).expect("unix");
    ok(&mut unix, "ping", json!({}), b"");
    let started = Instant::now();
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    for c in [&mut zero[0], &mut one[0], &mut unix] {
        let bye = c.next_push().expect("bye");
        assert_eq!(bye.str("reason"), Some("shutdown"));
    }
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(!sock.exists(), "the Unix socket file is removed");
}

#[test]
fn udp_and_tls_are_served_by_every_worker() {
    let server = Server::start(&["--workers", "2", "--tls-listen", "127.0.0.1:0"]);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    for i in 0..8 {
        let frame =
            frameloop::proto::encode_frame(format!(r#"{{"op":"ping","id":{i}}}"#).as_bytes(), b"");
        udp.send_to(&frame, server.udp.unwrap()).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = udp.recv_from(&mut buf).unwrap();
        let reply = frameloop::client::read_frame(&mut &buf[..n]).unwrap();
        assert_eq!(reply.status(), 200);
    }
    // Each worker has its own UDP socket on the port (SO_REUSEPORT).
    let port = format!(":{:04X} ", server.udp.unwrap().port());
    let bound = std::fs::read_to_string("/proc/net/udp").unwrap();
    let sockets = bound
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| format!("{a} ").ends_with(&port))
        })
        .count();
    assert_eq!(sockets, 2, "one UDP socket per worker:\n{bound}");
    let options = frameloop::client::tls::TlsOptions {
        ca: Some(server.dir.path().join("tls/cert.pem")),
    };
    let creds = Credentials::Key {
        user: "guest".into(),
        key: server.key(),
    };
    // Until both workers took TLS connections (the kernel picks).
    for _ in 0..64 {
        let mut c = Client::connect_tls(server.tls.unwrap(), &creds, &options).expect("tls");
        ok(&mut c, "echo", json!({}), b"over tls");
        let log = server.log();
        if log.contains(" on worker 0 ") && log.contains(" on worker 1 ") {
            return;
        }
    }
    panic!(
        "TLS connections never reached both workers:\n{}",
        server.log()
    );
}

#[test]
fn an_address_in_use_fails_as_for_one_worker() {
    let first = Server::start(&["--workers", "2"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["serve", "--workers", "2", "--udp", "off", "--listen"])
        .arg(first.addr.to_string())
        .arg("--data-dir")
        .arg(first.dir.path().join("second"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {}", first.addr)),
        "{err}"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["serve", "--workers", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--workers must be 1 to 64"));
}

#[test]
fn quota_holds_across_workers() {
    const BLOCK: usize = 4096;
    let quota = (5 * BLOCK).to_string();
    let server = Server::start(&["--workers", "2", "--quota", &quota]);
    let [mut zero, mut one] = on_both(&server, 1);
    let put = |c: &mut Client, path: &str| {
        let data = vec![7u8; 2 * BLOCK];
        let fields = json!({"path": path, "size": data.len()});
        c.request("put", fields, &data).expect("reply").status()
    };
    // Two blocks from each worker: four of five.
    assert_eq!(put(&mut zero[0], "a"), 200);
    assert_eq!(put(&mut one[0], "b"), 200);
    // Two more would make six, whichever worker asks.
    assert_eq!(put(&mut zero[0], "c"), 413);
    assert_eq!(put(&mut one[0], "c"), 413);
    // A removal on one worker frees the room for the other.
    let rm = one[0].request("rm", json!({"path": "a"}), b"").unwrap();
    assert_eq!(rm.status(), 200);
    assert_eq!(put(&mut zero[0], "c"), 200);
    let mkdir = one[0].request("mkdir", json!({"path": "d"}), b"").unwrap();
    assert_eq!(mkdir.status(), 200, "the fifth block");
    let mkdir = zero[0].request("mkdir", json!({"path": "e"}), b"").unwrap();
    assert_eq!(mkdir.status(), 413, "no room for a sixth");
}

/// The server's child processes (exec's programs).
fn children_of(pid: u32) -> usize {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        n += children.split_whitespace().count();
    }
    n
}

#[test]
fn exec_max_holds_across_workers_and_each_reaps_its_own() {
    let server = Server::start(&[
        "--workers",
        "2",
        "--allow-exec",
        "sleep,echo",
        "--exec-max",
        "1",
    ]);
    let [mut zero, mut one] = on_both(&server, 1);
    // The long one on either worker: the other worker is busy.
    let mut pair = [zero.remove(0), one.remove(0)];
    for round in 0..2 {
        let [a, b] = &mut pair;
        let (long, short) = if round == 0 { (a, b) } else { (b, a) };
        long.send("exec", json!({"cmd":"sleep","args":["1"]}), b"")
            .unwrap();
        server.wait_for("the sleep", |s| children_of(s.pid()) == 1);
        let busy = short
            .request("exec", json!({"cmd":"echo","args":["x"]}), b"")
            .unwrap();
        assert_eq!(busy.status(), 503, "{busy:?}");
        // The sleep's exit status reaches its own worker, whoever reaped it.
        let done = long.read_reply().unwrap();
        assert_eq!(done.status(), 200, "{done:?}");
        let echoed = short
            .request("exec", json!({"cmd":"echo","args":["x"]}), b"")
            .unwrap();
        assert_eq!(echoed.status(), 200);
    }
    // Execs on both workers at once, one after the other, all collected.
    for _ in 0..5 {
        for c in &mut pair {
            let r = c
                .request("exec", json!({"cmd":"echo","args":["y"]}), b"")
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    server.wait_for("no zombie", |s| children_of(s.pid()) == 0);
}

/// Servers of a cluster share a data dir (contract section 12): one starting
/// leaves another's upload in progress alone, and the upload completes.
#[test]
fn a_server_starting_on_a_shared_data_dir_leaves_uploads_in_progress() {
    let a = Server::start(&[]);
    let mut raw = a.raw_authed();
    raw.request(
        json!({"op":"put","id":1,"path":"/shared.bin","size":2_000_000}),
        b"",
    );
    raw.send_bytes(&[5u8; 1_000_000]);
    let tmp = a.dir.path().join("tmp");
    let entries = |d: &std::path::Path| std::fs::read_dir(d).map(|d| d.count()).unwrap_or(0);
    a.wait_for("the temp file", |_| entries(&tmp) == 1);
    // A second server on the same data dir (its log beside it).
    let log = std::fs::File::create(a.dir.path().join("b.log")).unwrap();
    let mut b = common::serve_command(a.dir.path())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(b.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("listening"), "{line}");
    assert_eq!(entries(&tmp), 1, "the other server's upload is left alone");
    raw.send_bytes(&[5u8; 1_000_000]);
    let reply = raw.recv();
    assert_eq!(reply.status(), 200, "{reply:?}");
    let stored = a.dir.path().join("files/guest/shared.bin");
    assert_eq!(std::fs::metadata(stored).unwrap().len(), 2_000_000);
    let _ = b.kill();
    let _ = b.wait();
}

/// Authenticated raw connections: `want[w]` of them on worker `w`.
fn raws_on(server: &Server, want: [usize; 2]) -> [Vec<Raw>; 2] {
    let mut by: [Vec<Raw>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..400 {
        if by[0].len() >= want[0] && by[1].len() >= want[1] {
            return by;
        }
        let raw = server.raw_authed();
        let w = worker_of(server, raw.s.local_addr().unwrap());
        if by[w].len() < want[w] {
            by[w].push(raw);
        }
    }
    panic!("connections never reached both workers");
}

/// `--max-memory` picks the biggest holder first whichever worker holds it,
/// not the smaller ones of the worker that saw the total go over.
#[test]
fn memory_eviction_takes_the_biggest_holder_on_any_worker() {
    use std::io::Write;
    let limit = (32u64 << 20).to_string();
    let server = Server::start(&["--workers", "2", "--max-memory", &limit]);
    let [_, mut big] = raws_on(&server, [0, 1]);
    let frame = frameloop::proto::encode_frame(br#"{"op":"echo","id":1,"size":16777216}"#, &[]);
    // One big holder on worker 1: 15 MiB of a 16 MiB echo body, buffered.
    big[0].s.write_all(&frame).unwrap();
    big[0].s.write_all(&vec![b'b'; 15 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let big_addr = big[0].s.local_addr().unwrap().to_string();
    // Smaller holders on worker 0, a MiB each, until one connection is evicted.
    let mut small = Vec::new();
    for _ in 0..40 {
        if server.log().contains("memory limit (") {
            break;
        }
        let [mut s, _] = raws_on(&server, [1, 0]);
        let mut s = s.remove(0);
        s.s.write_all(&frame).unwrap();
        s.s.write_all(&vec![b's'; 1 << 20]).unwrap();
        small.push(s);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log();
    let evicted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("memory limit ("))
        .collect();
    assert!(!evicted.is_empty(), "someone was evicted:\n{log}");
    assert!(
        evicted.iter().all(|l| l.contains(&big_addr)),
        "the biggest holder ({big_addr}, worker 1) goes first: {evicted:#?}"
    );
}

/// One worker's sweep (`waitpid(-1)`) must never reap a child another worker
/// is spawning: a program that fails to exec (the standard library waits for
/// it, and asserts it can), or one that exits at once (its pidfd is opened
/// after the spawn).
#[test]
fn spawns_and_sweeps_on_both_workers_never_race() {
    let bin = tempfile::tempdir().unwrap();
    let gone = bin.path().join("gone");
    std::fs::copy("/bin/true", &gone).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    let args = [
        "--workers",
        "2",
        "--allow-exec",
        "gone,true",
        "--exec-max",
        "64",
        "--exec-max-per-user",
        "64",
    ];
    let server = Server::start_with(tempfile::tempdir().unwrap(), "127.0.0.1:0", &args, |cmd| {
        cmd.env("PATH", &path);
    });
    // Resolved at start and removed now: every exec of it fails at execve.
    std::fs::remove_file(&gone).unwrap();
    let [zero, one] = on_both(&server, 3);
    let clients = zero.into_iter().zip(["gone", "true", "gone"]);
    let clients = clients.chain(one.into_iter().zip(["true", "gone", "true"]));
    let threads: Vec<_> = clients
        .map(|(mut c, cmd)| {
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..150 {
                    let r = c
                        .request("exec", json!({"cmd": cmd}), b"")
                        .expect("a reply");
                    ok += usize::from(r.status() == 200);
                }
                (cmd, ok)
            })
        })
        .collect();
    for t in threads {
        let (cmd, ok) = t.join().expect("the client thread");
        if cmd == "true" {
            assert_eq!(ok, 150, "every `true` ran and was collected");
        }
    }
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
    let mut c = server.client();
    ok(&mut c, "ping", json!({}), b"");
}

/// Over `--max-memory` with nothing left to evict (closing TLS connections
/// still count), workers must not keep asking each other: the loops go idle.
#[test]
fn over_memory_with_nothing_to_evict_the_workers_stay_idle() {
    let server = Server::start(&[
        "--workers",
        "2",
        "--tls-listen",
        "127.0.0.1:0",
        "--max-memory",
        "409600",
    ]);
    let mut sessions = Vec::new();
    for _ in 0..40 {
        let mut sock = TcpStream::connect(server.tls.unwrap()).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut tls = common::tls_session(&server);
        // The handshake and the hello's first bytes.
        let mut buf = [0u8; 4];
        let mut stream = rustls::Stream::new(&mut tls, &mut sock);
        let _ = std::io::Read::read(&mut stream, &mut buf);
        sessions.push((sock, tls));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let spent = server.cpu_ticks() - before;
    assert!(spent < 20, "{spent} ticks of server CPU in 2 s while idle");
}
