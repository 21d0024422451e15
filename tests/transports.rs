//! UDP, the Unix socket, signals and descriptor exhaustion, from outside: the
//! real server binary, real sockets (contract sections 1-4, 8, 9, 10).

mod common;

use common::{Server, TIMEOUT};
use frameloop::client::udp::UdpClient;
use frameloop::client::{Client, Credentials, Frame, read_frame};
use frameloop::proto::encode_frame;
use serde_json::{Value, json};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long a test waits to be sure no reply is coming.
const SILENCE: Duration = Duration::from_millis(300);

fn udp_socket(server: &Server) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server.udp.expect("udp on")).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket
}

/// Sends one datagram and returns the reply datagram, whole.
fn exchange(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    socket.send(datagram).unwrap();
    let mut buf = vec![0u8; 65_536];
    let n = socket.recv(&mut buf).expect("a reply datagram");
    buf.truncate(n);
    buf
}

/// The reply to `header` + `body` as a frame; the datagram holds exactly that frame.
fn udp_request(socket: &UdpSocket, header: Value, body: &[u8]) -> Frame {
    let reply = exchange(socket, &encode_frame(header.to_string().as_bytes(), body));
    let mut rest = reply.as_slice();
    let frame = read_frame(&mut rest).expect("a frame");
    assert!(rest.is_empty(), "one frame per datagram");
    frame
}

/// Asserts that no datagram comes back within `SILENCE`.
fn expect_silence(socket: &UdpSocket, what: &str) {
    socket.set_read_timeout(Some(SILENCE)).unwrap();
    let mut buf = [0u8; 1024];
    if let Ok(n) = socket.recv(&mut buf) {
        panic!(
            "{what}: got a reply {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
}

#[test]
fn udp_serves_every_stateless_op_with_ids() {
    let server = Server::start(&[]);
    let s = udp_socket(&server);
    let r = udp_request(&s, json!({"op":"ping","id":1}), b"");
    assert_eq!((r.status(), r.id(), r.body.len()), (200, Some(1), 0));
    let r = udp_request(&s, json!({"op":"echo","id":2,"size":5}), b"hello");
    assert_eq!(
        (r.status(), r.id(), &r.body[..]),
        (200, Some(2), &b"hello"[..])
    );
    let r = udp_request(&s, json!({"op":"upper","id":3,"size":6}), b"abc\xffz1");
    assert_eq!(
        (r.status(), r.id(), &r.body[..]),
        (200, Some(3), &b"ABC\xffZ1"[..])
    );
    let r = udp_request(&s, json!({"op":"stamp","id":4,"size":2}), b"hi");
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert_eq!((r.status(), r.id()), (200, Some(4)));
    assert!(text.starts_with('[') && text.ends_with("] hi"), "{text}");
    assert_eq!(text.len(), "[Sun Nov 22 03:58:07 2026] hi".len(), "{text}");
    let r = udp_request(&s, json!({"op":"time","id":5,"format":"%Y"}), b"");
    assert_eq!((r.status(), r.id(), r.body.len()), (200, Some(5), 4));
    let r = udp_request(&s, json!({"op":"time","id":6}), b"");
    assert_eq!((r.status(), r.id(), r.body.len()), (200, Some(6), 19));
    let r = udp_request(&s, json!({"op":"time","id":7,"format":"%Q"}), b"");
    assert_eq!((r.status(), r.id()), (400, Some(7)));
    // Largest ids come back unchanged; no id: a reply without one.
    let r = udp_request(&s, json!({"op":"ping","id":u64::MAX}), b"");
    assert_eq!(r.id(), Some(u64::MAX));
    let r = udp_request(&s, json!({"op":"ping"}), b"");
    assert_eq!((r.status(), r.id()), (200, None));
    // An id that is not an unsigned integer: 400 without id.
    let r = udp_request(&s, json!({"op":"ping","id":"7"}), b"");
    assert_eq!((r.status(), r.id()), (400, None));
    // Replies to pipelined datagrams carry their ids.
    for id in 100..110u64 {
        s.send(&encode_frame(
            json!({"op":"echo","id":id,"size":8}).to_string().as_bytes(),
            &id.to_be_bytes(),
        ))
        .unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    for _ in 100..110 {
        let n = s.recv(&mut buf).unwrap();
        let f = read_frame(&mut &buf[..n]).unwrap();
        assert_eq!(
            f.id().map(u64::to_be_bytes).as_ref().map(|b| &b[..]),
            Some(&f.body[..])
        );
    }
    let stats = server.stats();
    assert_eq!(stats["udp_in"], 20, "{stats}");
    assert_eq!(stats["udp_dropped"], 0, "{stats}");
}

#[test]
fn malformed_datagrams_get_no_reply_and_are_counted() {
    let server = Server::start(&[]);
    let s = udp_socket(&server);
    let good = encode_frame(br#"{"op":"echo","id":1,"size":2}"#, b"hi");
    let mut bad: Vec<(Vec<u8>, &str)> = vec![
        (b"GET / HTTP/1.0\r\n\r\n".to_vec(), "text"),
        (vec![0, 0], "half a length prefix"),
        (encode_frame(b"", b""), "H = 0"),
        (encode_frame(b"{not json", b""), "bad JSON"),
        (encode_frame(b"[1,2]", b""), "not an object"),
        (encode_frame(br#"{"op":"ping","size":-1}"#, b""), "bad size"),
        (
            encode_frame(br#"{"op":"echo","id":1,"size":3}"#, b"hi"),
            "body short of size",
        ),
        (
            encode_frame(br#"{"op":"echo","id":1,"size":1}"#, b"hi"),
            "body beyond size",
        ),
        (
            encode_frame(br#"{"op":"ping","id":1}"#, b"x"),
            "bytes after a frame",
        ),
        (
            encode_frame(&[b'x'; 70_000][..60_000], b""),
            "header not JSON",
        ),
    ];
    // Length prefix past the end of the datagram, and one that cuts the header.
    let mut long = good.clone();
    long[..4].copy_from_slice(&common::be32(good.len() as u32));
    bad.push((long, "length prefix past the datagram"));
    let mut short = good.clone();
    short[3] -= 1;
    bad.push((short, "length prefix short of the header"));
    for (datagram, what) in &bad {
        s.send(datagram).unwrap();
        expect_silence(&s, what);
    }
    // The socket still serves.
    let r = udp_request(&s, json!({"op":"echo","id":9,"size":2}), b"ok");
    assert_eq!(
        (r.status(), r.id(), &r.body[..]),
        (200, Some(9), &b"ok"[..])
    );
    let stats = server.stats();
    assert_eq!(stats["udp_dropped"], bad.len() as u64, "{stats}");
    assert_eq!(stats["udp_in"], bad.len() as u64 + 1, "{stats}");
}

#[test]
fn udp_refuses_stats_stream_ops_and_unknown_ops() {
    let server = Server::start(&[]);
    let s = udp_socket(&server);
    for (id, op) in ["stats", "auth", "ls", "pwd", "get", "put", "exec", "nope"]
        .into_iter()
        .enumerate()
    {
        let r = udp_request(&s, json!({"op":op,"id":id}), b"");
        assert_eq!((r.status(), r.id()), (400, Some(id as u64)), "{op}: {r:?}");
        assert!(r.error().is_some());
    }
    let r = udp_request(&s, json!({"id":42,"op":null}), b"");
    assert_eq!((r.status(), r.id()), (400, Some(42)), "missing op");
    assert_eq!(server.stats()["udp_dropped"], 0);
    // The 3x cap holds for refusals too: a 13-byte request cannot get a 46-byte
    // 400, so it gets nothing (and counts as dropped).
    s.send(&encode_frame(br#"{"id":42}"#, b"")).unwrap();
    expect_silence(&s, "tiny request");
    assert_eq!(server.stats()["udp_dropped"], 1);
}

#[test]
fn udp_replies_stay_within_three_times_the_request() {
    let server = Server::start(&[]);
    let s = udp_socket(&server);
    // `%c` is 2 bytes in the request and 24 in the reply.
    let header = json!({"op":"time","id":77,"format":"%c".repeat(100)}).to_string();
    let request = encode_frame(header.as_bytes(), b"");
    let reply = exchange(&s, &request);
    assert!(reply.len() <= 3 * request.len());
    let f = read_frame(&mut reply.as_slice()).unwrap();
    assert_eq!((f.status(), f.id()), (413, Some(77)), "{f:?}");
    // A reply just within the cap is sent.
    let header = json!({"op":"time","id":78,"format":"%c".repeat(4)}).to_string();
    let request = encode_frame(header.as_bytes(), b"");
    let reply = exchange(&s, &request);
    assert!(reply.len() <= 3 * request.len());
    assert_eq!(read_frame(&mut reply.as_slice()).unwrap().status(), 200);
    // Every reply of this test stayed within the cap, big bodies too.
    let body = vec![b'a'; 60_000];
    let request = encode_frame(
        json!({"op":"upper","id":79,"size":body.len()})
            .to_string()
            .as_bytes(),
        &body,
    );
    let reply = exchange(&s, &request);
    assert!(reply.len() <= 3 * request.len());
    let f = read_frame(&mut reply.as_slice()).unwrap();
    assert_eq!((f.status(), f.body.len()), (200, 60_000));
    assert!(f.body.iter().all(|&b| b == b'A'));
}

#[test]
fn udp_off_and_client_over_udp() {
    let server = Server::start(&["--udp", "off"]);
    assert!(server.udp.is_none());
    assert!(
        !server.log().contains("udp on"),
        "no UDP socket with --udp off"
    );
    let server = Server::start(&[]);
    let udp = server.udp.unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["client", "--udp", &udp, "upper", "over", "udp"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OVER UDP\n");
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["client", "--udp", &udp, "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a 400 from the server: {out:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["client", "--udp", &udp, "--addr", "127.0.0.1:1", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "one transport at a time");
}

#[test]
fn udp_client_retries_a_lost_datagram() {
    // A server that loses the first copy of every request.
    let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        fake.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 2048];
        let (_, _) = fake.recv_from(&mut buf).unwrap(); // lost
        let (n, peer) = fake.recv_from(&mut buf).unwrap();
        let request = read_frame(&mut &buf[..n]).unwrap();
        let header = json!({"status":200,"id":request.id(),"size":request.body.len()});
        // A stray reply to another id first: the client skips it.
        fake.send_to(&encode_frame(br#"{"status":200,"id":999}"#, b""), peer)
            .unwrap();
        fake.send_to(
            &encode_frame(header.to_string().as_bytes(), &request.body),
            peer,
        )
        .unwrap();
    });
    let mut client = UdpClient::connect(addr).unwrap();
    client.timeout = Duration::from_millis(200);
    let r = client.request("echo", json!({}), b"again").unwrap();
    assert_eq!((r.status(), &r.body[..]), (200, &b"again"[..]));
    server.join().unwrap();
    // Nobody answers at all: the client gives up after its tries.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut client = UdpClient::connect(silent.local_addr().unwrap()).unwrap();
    client.timeout = Duration::from_millis(50);
    let started = Instant::now();
    assert!(client.request("ping", json!({}), b"").is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn guest(server: &Server) -> Credentials {
    Credentials::Key {
        user: "guest".into(),
        key: server.key(),
    }
}

#[test]
fn unix_socket_serves_the_same_protocol_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frameloop.sock");
    let server = Server::start(&["--unix", path.to_str().unwrap()]);
    let mut c = Client::connect_unix(&path, &guest(&server)).unwrap();
    let r = c.request("echo", json!({}), b"over unix").unwrap();
    assert_eq!((r.status(), &r.body[..]), (200, &b"over unix"[..]));
    let r = c.request("ls", json!({}), b"").unwrap();
    assert_eq!(r.status(), 200, "file ops work over the Unix socket: {r:?}");
    // Wrong key: refused, as over TCP.
    let wrong = Credentials::Key {
        user: "guest".into(),
        key: [7; 32],
    };
    let err = Client::connect_unix(&path, &wrong).err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    // A request before auth: 401 and close.
    let mut raw = std::os::unix::net::UnixStream::connect(&path).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    let hello = read_frame(&mut raw).unwrap();
    assert_eq!(hello.op(), Some("hello"));
    std::io::Write::write_all(&mut raw, &encode_frame(br#"{"op":"ping","id":1}"#, b"")).unwrap();
    assert_eq!(read_frame(&mut raw).unwrap().status(), 401);
    // The CLI client too.
    let users = server.dir.path().join("users");
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["client", "--unix", path.to_str().unwrap()])
        .args(["--users", users.to_str().unwrap(), "echo", "cli", "unix"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cli unix\n");
    assert!(server.log().contains("open unix:"), "{}", server.log());
}

/// Runs `serve` with `args` (UDP off unless they say otherwise), expecting it to
/// refuse to start; returns its stderr.
fn serve_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let udp: &[&str] = if args.contains(&"--udp") {
        &[]
    } else {
        &["--udp", "off"]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(udp)
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn stale_socket_file_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let path_str = path.to_str().unwrap();
    // A dead server's socket file: bound, then its listener gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::start(&["--unix", path_str]);
    let mut c = Client::connect_unix(&path, &guest(&server)).unwrap();
    assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
    // A second server on the live path refuses to start and leaves the file alone.
    let err = serve_fails(&["--unix", path_str]);
    assert!(err.contains("another server is listening on"), "{err}");
    assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
    let mut c2 = Client::connect_unix(&path, &guest(&server)).unwrap();
    assert_eq!(c2.request("ping", json!({}), b"").unwrap().status(), 200);
    // A file that is not a socket is never replaced.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "keep me").unwrap();
    let err = serve_fails(&["--unix", plain.to_str().unwrap()]);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
}

#[test]
fn udp_address_in_use_is_an_error_at_start() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = serve_fails(&["--udp", &addr]);
    assert!(
        err.contains("cannot bind UDP") && err.contains(&addr),
        "{err}"
    );
}

fn signal(server: &Server, signal: i32) {
    // SAFETY: kill(2) with our own child's pid.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, signal) }, 0);
}

/// Waits for the server to exit, up to `limit`.
fn exit_within(server: &mut Server, limit: Duration) -> (ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "still running after {limit:?}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_says_bye_removes_the_socket_file_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let mut server = Server::start(&["--unix", path.to_str().unwrap()]);
    let mut tcp = server.client();
    let mut unix = Client::connect_unix(&path, &guest(&server)).unwrap();
    assert_eq!(tcp.request("ping", json!({}), b"").unwrap().status(), 200);
    // A put in progress: its temp file must go.
    let id = tcp
        .requester()
        .send_stream(
            "put",
            json!({"path":"half"}),
            1_000_000,
            &mut &[b'x'; 1000][..],
        )
        .err();
    assert!(id.is_some(), "the body ends short on purpose");
    server.wait_for("the upload's temp file", |s| {
        !leftover_files(s.dir.path()).is_empty()
    });
    signal(&server, libc::SIGTERM);
    for c in [&mut tcp, &mut unix] {
        let bye = c.next_push().expect("bye push");
        assert_eq!(
            (bye.op(), bye.str("reason")),
            (Some("bye"), Some("shutdown"))
        );
    }
    let (status, took) = exit_within(&mut server, Duration::from_secs(6));
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(took < Duration::from_secs(6));
    assert!(!path.exists(), "socket file removed");
    // Only the users file is left in the data dir (no upload's temp file).
    let left = leftover_files(server.dir.path());
    assert!(left.is_empty(), "{left:?}");
    assert!(server.log().contains("SIGTERM"), "{}", server.log());
}

/// Files under `dir` other than the users file and the server log.
fn leftover_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                todo.push(entry.path());
            } else {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != "users" && name != "server.log" {
                    found.push(entry.path().display().to_string());
                }
            }
        }
    }
    found
}

/// A client that asked for a big reply and reads none of it keeps the server
/// flushing: the shutdown waits for it at most 5 s; a second signal ends it at once.
fn stuck_client(server: &Server) -> TcpStream {
    let mut c = server.client();
    c.send("echo", json!({}), &vec![b'z'; 16 * 1024 * 1024])
        .unwrap();
    // Let the server read it all and queue its reply.
    std::thread::sleep(Duration::from_millis(500));
    match c.stream().try_clone().unwrap() {
        frameloop::client::Stream::Tcp(s) => s,
        _ => unreachable!("a TCP client"),
    }
}

#[test]
fn shutdown_waits_at_most_5_s_for_a_stuck_client() {
    let mut server = Server::start(&[]);
    let _stuck = stuck_client(&server);
    signal(&server, libc::SIGINT);
    let (status, took) = exit_within(&mut server, Duration::from_secs(8));
    assert_eq!(status.code(), Some(0));
    assert!(
        took > Duration::from_secs(4) && took < Duration::from_secs(7),
        "{took:?}"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = Server::start(&[]);
    let _stuck = stuck_client(&server);
    signal(&server, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    signal(&server, libc::SIGTERM);
    let (status, took) = exit_within(&mut server, Duration::from_secs(3));
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(server.log().contains("again"), "{}", server.log());
}

#[test]
fn out_of_descriptors_neither_spins_nor_exits() {
    // The server raises its soft limit to the hard one, so lower both.
    const LIMIT: libc::rlim_t = 40;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir, "127.0.0.1:0", &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: LIMIT,
                    rlim_max: LIMIT,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    // More connections than descriptors: the rest wait in the listen backlog.
    let clients: Vec<TcpStream> = (0..LIMIT * 2)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    server.wait_for("accepts paused", |s| s.log().contains("out of descriptors"));
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let ticks = server.cpu_ticks() - before;
    // 100 ticks are one core for a second; retrying every 100 ms costs ~nothing.
    eprintln!("server CPU while out of descriptors: {ticks} ticks in 1 s");
    assert!(
        ticks <= 10,
        "{ticks} ticks of CPU in 1 s while out of descriptors"
    );
    // One log line for the episode, not one per retry.
    let log = server.log();
    assert_eq!(log.matches("out of descriptors").count(), 1, "{log}");
    drop(clients);
    // Served again once the clients are gone (the backlog drains first).
    let start = Instant::now();
    let mut c = loop {
        let creds = guest(&server);
        match Client::connect(server.addr, &creds) {
            Ok(c) => break c,
            Err(e) => {
                assert!(start.elapsed() < TIMEOUT, "not served again: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let r = c.request("echo", json!({}), b"back").unwrap();
    assert_eq!(&r.body[..], b"back");
    let log = server.log();
    assert!(log.contains("accepting connections again"), "{log}");
}

#[test]
fn shutdown_flushes_pending_replies_before_the_bye() {
    let mut server = Server::start(&[]);
    let mut c = server.client();
    // A reply far bigger than the socket buffers, not read yet when the signal comes.
    let body: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let id = c.send("echo", json!({}), &body).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&server, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let reply = c.read_reply().unwrap();
    assert_eq!((reply.status(), reply.id()), (200, Some(id)));
    assert!(reply.body == body, "the whole reply, intact");
    let bye = c.next_push().unwrap();
    assert_eq!(
        (bye.op(), bye.str("reason")),
        (Some("bye"), Some("shutdown"))
    );
    assert!(c.next_push().is_err(), "closed after the bye");
    let (status, _) = exit_within(&mut server, Duration::from_secs(6));
    assert_eq!(status.code(), Some(0));
}

/// A ping frame with this id.
fn ping(id: u64) -> Vec<u8> {
    encode_frame(format!(r#"{{"op":"ping","id":{id}}}"#).as_bytes(), b"")
}

/// The replies to pings 1 and 2, in order, both 200.
fn both_answered(s: &mut impl std::io::Read, round: usize) {
    for id in [1, 2] {
        let reply =
            read_frame(s).unwrap_or_else(|e| panic!("round {round}: no reply to ping {id}: {e}"));
        assert_eq!(
            (reply.status(), reply.id()),
            (200, Some(id)),
            "round {round}"
        );
    }
}

/// A TCP read stops at an urgent (MSG_OOB) mark with the rest of the stream
/// already queued: the frame behind the mark must be answered anyway, though
/// the read before it came up short. The mark lands mid-read only when both
/// parts travel in one segment (corked), and not every time: 20 rounds.
#[test]
fn a_frame_behind_an_urgent_mark_is_answered() {
    use std::os::fd::AsRawFd;
    let server = Server::start(&["--no-auth"]);
    for round in 0..20 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(read_frame(&mut s).unwrap().op(), Some("hello"));
        let fd = s.as_raw_fd();
        let cork = |on: libc::c_int| {
            // SAFETY: an open socket and a c_int of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_CORK,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
        };
        cork(1);
        std::io::Write::write_all(&mut s, &ping(1)).unwrap();
        // SAFETY: one byte from a live buffer on an open socket.
        let sent = unsafe { libc::send(fd, b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(sent, 1);
        std::io::Write::write_all(&mut s, &ping(2)).unwrap();
        cork(0);
        both_answered(&mut s, round);
    }
}

/// A Unix-socket read stops after a message that carries descriptors
/// (SCM_RIGHTS), with the rest already queued: the frame after it must be
/// answered anyway. 10 rounds, as the timing varies.
#[test]
fn a_frame_after_passed_descriptors_is_answered() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let _server = Server::start(&["--no-auth", "--unix", path.to_str().unwrap()]);
    for round in 0..10 {
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(read_frame(&mut s).unwrap().op(), Some("hello"));
        let first = ping(1);
        let mut iov = libc::iovec {
            iov_base: first.as_ptr() as *mut libc::c_void,
            iov_len: first.len(),
        };
        let fd_len = std::mem::size_of::<libc::c_int>() as u32;
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
        let mut control = vec![0u8; space];
        // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer has room for one header and one descriptor.
        let sent = unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), s.as_raw_fd());
            libc::sendmsg(s.as_raw_fd(), &msg, 0)
        };
        assert_eq!(sent, first.len() as isize);
        std::io::Write::write_all(&mut s, &ping(2)).unwrap();
        both_answered(&mut s, round);
    }
}
