//! Contract section 6's confinement and limits from outside: the audit of issue 16
//! rerun against the real server (files, network, privileges, process cap, killing
//! the whole tree at the deadline and on disconnect, `--exec-max`, short errors).

mod common;

use common::Server;
use frameloop::client::{Client, Frame};
use serde_json::json;
use std::time::{Duration, Instant};

fn exec(c: &mut Client, cmd: &str, args: &[&str]) -> Frame {
    c.request("exec", json!({"cmd": cmd, "args": args}), b"")
        .expect("reply")
}

fn streams(r: &Frame) -> (String, String) {
    let out = r.header["stdout"].as_u64().unwrap() as usize;
    (
        String::from_utf8_lossy(&r.body[..out]).into_owned(),
        String::from_utf8_lossy(&r.body[out..]).into_owned(),
    )
}

/// Live (not zombie) processes whose command line is exactly `argv`.
fn running(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
        .count()
}

/// Processes whose parent is `pid`, zombies included.
fn children_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
                let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
                after.split(' ').nth(1) == Some(pid.to_string().as_str())
            })
        })
        .count()
}

fn failed(r: &Frame) -> bool {
    r.status() == 200 && r.header["exit"] != 0
}

#[test]
fn files_outside_the_root_are_out_of_reach() {
    let server = Server::start(&["--allow-exec", "cat,ls,sh,find"]);
    let key = hex::encode(server.key());
    let mut c = server.client();
    let data = server.dir.path().canonicalize().unwrap();
    let users = data.join("users");
    for args in [vec!["../../users"], vec![users.to_str().unwrap()]] {
        let r = exec(&mut c, "cat", &args);
        assert!(failed(&r), "cat {args:?}: {r:?}");
        assert!(!String::from_utf8_lossy(&r.body).contains(&key), "{args:?}");
    }
    for dir in ["/root", "../..", "/home", "/tmp"] {
        assert!(failed(&exec(&mut c, "ls", &[dir])), "ls {dir}");
    }
    assert!(failed(&exec(&mut c, "cat", &["/etc/shadow"])));
    // Writing: only beneath the root.
    let outside = format!("/tmp/frameloop-exec16-{}", std::process::id());
    let r = exec(&mut c, "sh", &["-c", &format!("echo x > {outside}")]);
    assert!(failed(&r), "{r:?}");
    assert!(!std::path::Path::new(&outside).exists());
    let r = exec(&mut c, "sh", &["-c", "echo inside > f && cat f && ls /usr"]);
    assert_eq!(r.header["exit"], 0, "{r:?}");
    assert!(streams(&r).0.starts_with("inside\n"));
    // find -exec runs what it likes, but with nothing more than the exec has.
    let r = exec(
        &mut c,
        "find",
        &["/etc/hostname", "-exec", "cat", "/etc/shadow", ";"],
    );
    assert!(!streams(&r).0.contains("root:"), "{r:?}");
}

#[test]
fn no_privileges_and_limits_hold() {
    let server = Server::start(&["--allow-exec", "cat,sh", "--exec-memory", "268435456"]);
    let mut c = server.client();
    let (status, _) = streams(&exec(&mut c, "cat", &["/proc/self/status"]));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    for cap in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(cap), "0000000000000000", "{cap} {status}");
    }
    let r = exec(&mut c, "sh", &["-c", "ulimit -c; ulimit -n; ulimit -v"]);
    assert_eq!(streams(&r).0, "0\n256\n262144\n", "{r:?}");
}

#[test]
fn no_network_no_signals_outside() {
    let server = Server::start(&["--allow-exec", "bash,sh,kill"]);
    let mut c = server.client();
    let port = server.addr.port();
    let r = exec(
        &mut c,
        "bash",
        &[
            "-c",
            &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"),
        ],
    );
    assert!(failed(&r), "{r:?}");
    assert!(!streams(&r).0.contains("connected"));
    // The server is outside the tree: no signal reaches it.
    let r = exec(&mut c, "kill", &["-STOP", &server.pid().to_string()]);
    assert!(failed(&r), "{r:?}");
    assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
    // Its own tree it may signal.
    let r = exec(&mut c, "sh", &["-c", "sleep 5 & kill $!; wait $!; echo $?"]);
    assert_eq!(streams(&r).0, "143\n", "{r:?}");
}

#[test]
fn uptime_still_works() {
    let server = Server::start(&["--allow-exec", "uptime"]);
    let mut c = server.client();
    let r = exec(&mut c, "uptime", &[]);
    assert_eq!(r.header["exit"], 0, "{r:?}");
    assert!(streams(&r).0.contains("load average"), "{r:?}");
}

#[test]
fn a_tree_is_capped_at_64_and_killed_at_the_deadline() {
    let server = Server::start(&["--allow-exec", "sh", "--exec-timeout", "2"]);
    let mut c = server.client();
    let script = "for i in $(seq 200); do sleep 7.77 & done; wait";
    c.send("exec", json!({"cmd":"sh","args":["-c", script]}), b"")
        .unwrap();
    let t = Instant::now();
    let mut most = 0;
    while t.elapsed() < Duration::from_millis(1500) {
        most = most.max(running(&["sleep", "7.77"]));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(most > 0 && most <= 64, "{most} sleeps at once");
    let r = c.read_reply().unwrap();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(r.header["timed_out"], true, "{r:?}");
    assert_eq!(
        running(&["sleep", "7.77"]),
        0,
        "sleeps left after the reply"
    );
    server.wait_for("no zombie", |s| children_of(s.pid()) == 0);
}

#[test]
fn background_children_do_not_outlive_the_deadline() {
    let server = Server::start(&["--allow-exec", "sh,setsid", "--exec-timeout", "2"]);
    let mut c = server.client();
    let t = Instant::now();
    let r = exec(&mut c, "sh", &["-c", "sleep 8.31 &"]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(r.header["timed_out"], true, "{r:?}");
    assert_eq!(running(&["sleep", "8.31"]), 0, "the sleep survived");
    // Its own session: killed too.
    let t = Instant::now();
    let r = exec(&mut c, "setsid", &["sleep", "30.7"]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(r.header["timed_out"], true, "{r:?}");
    assert_eq!(running(&["sleep", "30.7"]), 0, "the setsid sleep survived");
    // Detached from the pipes too: the reply comes when the program ends, and
    // nothing it started survives the reply.
    let t = Instant::now();
    let r = exec(&mut c, "sh", &["-c", "setsid sleep 30.8 >/dev/null 2>&1 &"]);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(r.header["timed_out"], false, "{r:?}");
    assert_eq!(
        running(&["sleep", "30.8"]),
        0,
        "the detached sleep survived"
    );
    server.wait_for("no zombie", |s| children_of(s.pid()) == 0);
}

#[test]
fn disconnect_kills_the_whole_tree() {
    let server = Server::start(&["--allow-exec", "sh"]);
    let mut c = server.client();
    c.send(
        "exec",
        json!({"cmd":"sh","args":["-c", "setsid sleep 30.9 & sleep 30.9 & wait"]}),
        b"",
    )
    .unwrap();
    server.wait_for("both sleeps", |_| running(&["sleep", "30.9"]) == 2);
    drop(c);
    server.wait_for("no sleep left", |_| running(&["sleep", "30.9"]) == 0);
    server.wait_for("no zombie", |s| children_of(s.pid()) == 0);
}

#[test]
fn busy_past_exec_max_and_exec_max_per_user() {
    let server = Server::start(&[
        "--allow-exec",
        "sleep,echo",
        "--exec-max",
        "2",
        "--exec-max-per-user",
        "16",
    ]);
    let mut held = Vec::new();
    for n in 1..=2 {
        let mut c = server.client();
        c.send("exec", json!({"cmd":"sleep","args":["3"]}), b"")
            .unwrap();
        server.wait_for("the sleep", |s| children_of(s.pid()) == n);
        held.push(c);
    }
    let mut c = server.client();
    let r = exec(&mut c, "echo", &["x"]);
    assert_eq!(r.status(), 503, "{r:?}");
    drop(held);
    server.wait_for("slots free", |s| children_of(s.pid()) == 0);
    assert_eq!(exec(&mut c, "echo", &["x"]).status(), 200);

    let server = Server::start(&["--allow-exec", "sleep,echo", "--exec-max-per-user", "1"]);
    let mut first = server.client();
    first
        .send("exec", json!({"cmd":"sleep","args":["3"]}), b"")
        .unwrap();
    server.wait_for("the sleep", |s| children_of(s.pid()) == 1);
    let mut c = server.client();
    assert_eq!(exec(&mut c, "echo", &["x"]).status(), 503);
    assert_eq!(first.read_reply().unwrap().status(), 200);
    assert_eq!(exec(&mut c, "echo", &["x"]).status(), 200);
}

#[test]
fn errors_quote_little_of_a_long_name() {
    let server = Server::start(&["--allow-exec", "echo"]);
    let mut c = server.client();
    let r = exec(&mut c, &"x".repeat(20_000), &[]);
    assert_eq!(r.status(), 403);
    let header = serde_json::to_string(&r.header).unwrap();
    assert!(header.len() < 300, "{} bytes", header.len());
}

#[test]
fn no_udp_even_to_the_servers_own_port() {
    let server = Server::start(&["--allow-exec", "bash"]);
    let port = server.udp.expect("udp on").port();
    let before = server.stats()["udp_in"].as_u64().unwrap();
    let mut c = server.client();
    let script = format!("echo hi > /dev/udp/127.0.0.1/{port} && echo sent");
    let r = exec(&mut c, "bash", &["-c", &script]);
    assert!(failed(&r), "{r:?}");
    let (out, err) = streams(&r);
    assert!(!out.contains("sent"), "{out}");
    assert!(err.contains("Permission denied"), "{err}");
    // Had a datagram gone out, the server would have counted it by now.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.stats()["udp_in"].as_u64().unwrap(), before);
}

/// A server with `--unix` at `<user's root>/s.sock` (a place the exec can see),
/// python3 allowed (found on the system's PATH, not a shim under /root).
fn server_with_unix_in_root(allow: &str) -> (Server, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files").join("guest");
    std::fs::create_dir_all(&root).unwrap();
    let path = root.join("s.sock");
    let server = Server::start_with(
        dir,
        "127.0.0.1:0",
        &["--unix", path.to_str().unwrap(), "--allow-exec", allow],
        |cmd| {
            cmd.env("PATH", "/usr/bin:/bin");
        },
    );
    (server, path)
}

#[test]
fn no_unix_socket_even_the_servers_own() {
    let (server, path) = server_with_unix_in_root("python3");
    let mut c = server.client();
    let script = "import os, socket, sys\n\
                  os.stat(sys.argv[1]); print('seen', flush=True)\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1]); print('connected')";
    let r = exec(&mut c, "python3", &["-c", script, path.to_str().unwrap()]);
    assert!(failed(&r), "{r:?}");
    let (out, err) = streams(&r);
    assert_eq!(out, "seen\n", "{err}");
    assert!(err.contains("PermissionError"), "{err}");
    // Raw sockets, UDP, netlink: no socket at all.
    for family in ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"] {
        let script = format!("import socket\nsocket.socket(socket.{family}, socket.SOCK_DGRAM)");
        let r = exec(&mut c, "python3", &["-c", &script]);
        assert!(failed(&r), "{family}: {r:?}");
        assert!(streams(&r).1.contains("PermissionError"), "{family}: {r:?}");
    }
    // A datagram socket pair could address any pathname socket: refused too.
    let script = "import socket\nsocket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)";
    let r = exec(&mut c, "python3", &["-c", script]);
    assert!(failed(&r), "{r:?}");
    // A stream socket pair is fine.
    let script = "import socket\na, b = socket.socketpair()\na.send(b'x'); print(b.recv(1))";
    let r = exec(&mut c, "python3", &["-c", script]);
    assert_eq!(
        (r.header["exit"].as_i64(), streams(&r).0),
        (Some(0), "b'x'\n".into()),
        "{r:?}"
    );
}

#[test]
fn everyday_programs_still_work_under_the_socket_filter() {
    let server = Server::start(&["--allow-exec", "ls,uptime,sh,find,cat,sleep"]);
    let mut c = server.client();
    // ls -l looks the owner up (nss may try a socket to nscd first).
    let r = exec(&mut c, "ls", &["-l", "/usr/bin/env"]);
    assert_eq!(r.header["exit"], 0, "{r:?}");
    assert!(streams(&r).0.contains(" root root "), "{r:?}");
    let r = exec(&mut c, "uptime", &[]);
    assert_eq!(r.header["exit"], 0, "{r:?}");
    let r = exec(
        &mut c,
        "sh",
        &["-c", "echo a | cat; sleep 0.1; find /usr/bin/env"],
    );
    assert_eq!(streams(&r).0, "a\n/usr/bin/env\n", "{r:?}");
    assert_eq!(r.header["exit"], 0, "{r:?}");
}

/// A 64-bit program may still make i386 system calls (`int 0x80`), where
/// `socketcall` makes sockets: the filter kills it at the first one.
#[cfg(target_arch = "x86_64")]
#[test]
fn i386_system_calls_are_killed() {
    let (server, _) = server_with_unix_in_root("python3");
    let mut c = server.client();
    // mov eax, 20 (i386 getpid); int 0x80; ret
    let script = "import ctypes, mmap\n\
                  m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n\
                  m.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3]))\n\
                  f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))\n\
                  print('pid', f())";
    let r = exec(&mut c, "python3", &["-c", script]);
    assert_eq!(r.header["signal"], libc::SIGSYS, "{r:?}");
    assert!(!streams(&r).0.contains("pid"), "{r:?}");
}

#[test]
fn what_an_exec_wrote_counts_toward_the_quota_when_it_ends() {
    // Four blocks: the exec writes two; then two one-byte files fit and a third does not.
    let server = Server::start(&["--allow-exec", "sh", "--quota", "16384"]);
    let mut c = server.client();
    let r = exec(&mut c, "sh", &["-c", "head -c 8192 /dev/zero > written"]);
    assert_eq!(r.header["exit"], json!(0), "{r:?}");
    let put = |c: &mut Client, path: &str| {
        c.request("put", json!({"path": path, "size": 1}), b"x")
            .unwrap()
            .status()
    };
    // Sent right after the reply: the connection waits for the recount first.
    let statuses = [put(&mut c, "a"), put(&mut c, "b"), put(&mut c, "c")];
    assert_eq!(statuses, [200, 200, 413]);
}
