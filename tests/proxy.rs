//! `--proxy-protocol` from outside (contract section 12): every stream
//! connection begins with a PROXY header (v1 or v2); the client address in it
//! is the one limited and logged; a connection without one is closed.

mod common;

use common::{Raw, Server, TIMEOUT};
use frameloop::client::{Frame, read_frame};
use ppp::v2::{Builder, Command, Protocol, Version};
use rustls::StreamOwned;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn v1(client: &str) -> Vec<u8> {
    let (ip, port) = client.rsplit_once(':').unwrap();
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 7878\r\n").into_bytes()
}

/// A v2 header as HAProxy's `send-proxy-v2` writes it (`Local`: a health check).
fn v2(command: Command, client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let server: SocketAddr = if client.is_ipv4() {
        "127.0.0.1:7878".parse().unwrap()
    } else {
        "[::1]:7878".parse().unwrap()
    };
    Builder::with_addresses(Version::Two | command, Protocol::Stream, (client, server))
        .build()
        .unwrap()
}

/// A raw connection that has sent `first` (a header, perhaps more).
fn connect(server: &Server, first: &[u8]) -> Raw {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut raw = Raw { s };
    raw.send_bytes(first);
    raw
}

#[test]
fn a_v1_or_v2_header_then_the_usual_conversation() {
    let server = Server::start(&["--proxy-protocol"]);
    let headers = [
        v1("10.1.2.3:5555"),
        v2(Command::Proxy, "192.0.2.44:6000"),
        v2(Command::Proxy, "[2001:db8::7]:7000"),
    ];
    for header in headers {
        let mut raw = connect(&server, &header);
        let hello = raw.recv();
        assert_eq!(hello.str("op"), Some("hello"));
        raw.auth(&hello, "guest", &server.key());
        raw.request(json!({"op":"ping","id":1}), b"");
        assert_eq!(raw.recv().status(), 200);
    }
    server.wait_for("the client addresses in the log", |s| {
        let log = s.log();
        [
            "open 10.1.2.3:5555 via 127.0.0.1:",
            "open 192.0.2.44:6000 via",
            "open [2001:db8::7]:7000 via",
        ]
        .iter()
        .all(|line| log.contains(line))
    });
}

#[test]
fn the_header_and_frames_in_one_write_or_cut_into_bytes() {
    let server = Server::start(&["--proxy-protocol", "--no-auth"]);
    // With the first request behind it: nothing after the header is lost.
    let mut together = v2(Command::Proxy, "192.0.2.1:1");
    together.extend(frameloop::proto::encode_frame(
        br#"{"op":"echo","id":1,"size":2}"#,
        b"hi",
    ));
    let mut raw = connect(&server, &together);
    assert_eq!(raw.recv().str("op"), Some("hello"));
    let echo = raw.recv();
    assert_eq!((echo.status(), echo.body.as_slice()), (200, &b"hi"[..]));
    // A byte at a time, each in its own segment.
    for header in [v1("10.0.0.9:9"), v2(Command::Proxy, "192.0.2.2:2")] {
        let mut raw = connect(&server, &[]);
        for b in &header {
            raw.send_bytes(&[*b]);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(raw.recv().str("op"), Some("hello"));
        raw.request(json!({"op":"ping","id":2}), b"");
        assert_eq!(raw.recv().status(), 200);
    }
}

#[test]
fn the_per_address_limit_counts_the_client_not_the_proxy() {
    let server = Server::start(&["--proxy-protocol", "--no-auth", "--max-conns-per-ip", "1"]);
    let mut first = connect(&server, &v1("10.0.0.1:1000"));
    assert_eq!(first.recv().str("op"), Some("hello"));
    // The same client through the same proxy: over its limit.
    let mut again = connect(&server, &v2(Command::Proxy, "10.0.0.1:1001"));
    assert_eq!(again.recv().status(), 503);
    // Another client through the same proxy address: served.
    let mut other = connect(&server, &v2(Command::Proxy, "10.0.0.2:1000"));
    assert_eq!(other.recv().str("op"), Some("hello"));
    other.request(json!({"op":"ping","id":1}), b"");
    assert_eq!(other.recv().status(), 200);
    first.request(json!({"op":"ping","id":1}), b"");
    assert_eq!(first.recv().status(), 200);
}

#[test]
fn a_health_check_gets_the_hello_without_logging_in() {
    let server = Server::start(&["--proxy-protocol"]);
    // HAProxy's check-send-proxy with send-proxy-v2: LOCAL, then it expects the
    // hello. A LOCAL header's addresses do not count: the socket's own peer does.
    let mut check = connect(&server, &v2(Command::Local, "192.0.2.9:1"));
    let hello = check.recv();
    assert_eq!(hello.str("op"), Some("hello"));
    assert!(hello.str("nonce").is_some());
    server.wait_for("the proxy's address in the log", |s| {
        s.log().contains("open 127.0.0.1:")
    });
    assert!(!server.log().contains("192.0.2.9"), "{}", server.log());
}

#[test]
fn a_connection_without_a_header_is_closed_unanswered() {
    let server = Server::start(&["--proxy-protocol", "--auth-timeout", "1"]);
    let ping = frameloop::proto::encode_frame(br#"{"op":"ping"}"#, b"");
    for first in [
        ping.as_slice(),
        b"GET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 nonsense\r\n",
    ] {
        let mut raw = connect(&server, first);
        raw.expect_closed();
    }
    // Silence: closed at the auth timeout, still without a word.
    let started = Instant::now();
    let mut raw = connect(&server, &[]);
    raw.expect_closed();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    // An unfinished header too, at the timeout; its bytes were only peeked,
    // so the close may come as a reset.
    let mut raw = connect(&server, b"PROXY TCP4 10.0.0.1 ");
    let mut buf = [0u8; 16];
    let end = raw.s.read(&mut buf);
    let reset = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionReset;
    assert!(
        matches!(&end, Ok(0)) || end.as_ref().is_err_and(reset),
        "{end:?}"
    );
    // The server is unharmed.
    let mut ok = connect(&server, &v1("10.0.0.3:3"));
    assert_eq!(ok.recv().str("op"), Some("hello"));
}

#[test]
fn the_header_comes_before_tls_on_the_tls_port() {
    let server = Server::start(&["--proxy-protocol", "--tls-listen", "127.0.0.1:0"]);
    let mut sock = TcpStream::connect(server.tls.unwrap()).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.write_all(&v2(Command::Proxy, "198.51.100.5:443"))
        .unwrap();
    let mut stream = StreamOwned::new(common::tls_session(&server), sock);
    let hello: Frame = read_frame(&mut stream).expect("the hello, inside TLS");
    assert_eq!(hello.str("op"), Some("hello"));
    assert_eq!(hello.str("cb"), Some("tls-server-end-point"));
    server.wait_for("the client address in the log", |s| {
        s.log().contains("open 198.51.100.5:443 via")
    });
}

#[test]
fn a_peer_that_leaves_mid_header_is_closed_at_once() {
    let server = Server::start(&["--proxy-protocol", "--auth-timeout", "5"]);
    let mut raw = connect(&server, b"PROXY TCP4 10.0.0.1 ");
    std::thread::sleep(Duration::from_millis(50));
    raw.s.shutdown(std::net::Shutdown::Write).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let _ = raw.s.read(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "closed after {waited:?}");
}

#[test]
fn the_auth_timeout_counts_from_the_accept_and_header_waiters_count_as_unauthenticated() {
    let server = Server::start(&[
        "--proxy-protocol",
        "--auth-timeout",
        "2",
        "--max-unauth",
        "2",
    ]);
    // A header sent late: the auth timeout still counts from the accept.
    let started = Instant::now();
    let mut late = connect(&server, &[]);
    std::thread::sleep(Duration::from_millis(1200));
    late.send_bytes(&v1("10.0.0.5:5"));
    assert_eq!(late.recv().str("op"), Some("hello"));
    let bye = late.recv();
    assert_eq!(bye.str("reason"), Some("auth timeout"));
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(3000),
        "timed out after {waited:?}, not 2 s after the header"
    );
    // Two waiting for their header fill --max-unauth: a third, at once, gets 503.
    let _a = connect(&server, &[]);
    let _b = connect(&server, &[]);
    std::thread::sleep(Duration::from_millis(100));
    let mut third = connect(&server, &[]);
    assert_eq!(third.recv().status(), 503);
    // After a second, the oldest gives way to a newcomer (closed without a word).
    std::thread::sleep(Duration::from_millis(1100));
    let mut fourth = connect(&server, &v1("10.0.0.6:6"));
    assert_eq!(fourth.recv().str("op"), Some("hello"));
}
