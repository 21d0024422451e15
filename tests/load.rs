//! `frameloop load` from outside: it counts right replies against the real
//! server, counts wrong ones against a lying server, keeps an open-loop rate,
//! and refuses bad options.

mod common;

use common::Server;
use frameloop::client::read_frame;
use frameloop::proto::encode_frame;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Output};

fn load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .arg("load")
        .args(args)
        .output()
        .expect("run load")
}

fn report(out: &Output) -> serde_json::Value {
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{e}: {line:?} / {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn every_reply_from_the_real_server_checks_out() {
    let server = Server::start(&[]);
    let users = server.dir.path().join("users");
    for op in ["echo", "upper", "ping", "stamp", "time"] {
        let out = load(&[
            "--addr",
            &server.addr.to_string(),
            "--users",
            users.to_str().unwrap(),
            "--op",
            op,
            "--conns",
            "4",
            "--pipeline",
            "4",
            "--size",
            "300",
            "--duration",
            "0.5",
            "--warmup",
            "0.1",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = report(&out);
        assert_eq!(r["errors"], 0, "{op}");
        assert!(r["requests"].as_u64().unwrap() > 100, "{op}: {r}");
        assert!(r["p50_us"].as_u64().unwrap() > 0);
        assert!(r["p99_us"].as_u64() >= r["p50_us"].as_u64());
    }
}

/// How the lying server answers request number `n` with id `id` and body `body`:
/// the id and body it sends back.
type Spoil = fn(u64, u64, Vec<u8>) -> (u64, Vec<u8>);

/// A server that answers every request with status 200 and the right id, but
/// spoils some replies as `spoil` says.
fn lying_server(spoil: Spoil) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        writer
            .write_all(&encode_frame(
                br#"{"op":"hello","proto":1,"auth":"none"}"#,
                b"",
            ))
            .unwrap();
        let mut n = 0;
        while let Ok(req) = read_frame(&mut reader) {
            n += 1;
            let (id, body) = spoil(n, req.id().unwrap_or(0), req.body);
            let header = format!(r#"{{"status":200,"id":{id},"size":{}}}"#, body.len());
            if writer
                .write_all(&encode_frame(header.as_bytes(), &body))
                .is_err()
            {
                return;
            }
        }
    });
    addr
}

fn against_liar(addr: std::net::SocketAddr) -> (Output, serde_json::Value) {
    let out = load(&[
        "--addr",
        &addr.to_string(),
        "--no-auth",
        "--conns",
        "1",
        "--op",
        "echo",
        "--size",
        "8",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--json",
    ]);
    let r = report(&out);
    (out, r)
}

#[test]
fn a_wrong_body_is_counted_as_an_error() {
    let addr = lying_server(|n, id, mut body| {
        if n % 3 == 0 {
            body[0] ^= 1;
        }
        (id, body)
    });
    let (out, r) = against_liar(addr);
    assert!(!out.status.success(), "wrong replies must fail the run");
    let (requests, errors) = (
        r["requests"].as_u64().unwrap(),
        r["errors"].as_u64().unwrap(),
    );
    assert!(requests > 30, "{r}");
    // One in three, give or take the edges of the window.
    assert!(
        errors * 3 >= requests - 3 && errors * 3 <= requests + 3,
        "{errors} of {requests}"
    );
}

#[test]
fn a_wrong_id_or_length_is_counted_as_an_error() {
    let addr = lying_server(|n, id, body| {
        if n % 2 == 0 {
            (id + 1, body)
        } else {
            (id, body)
        }
    });
    let (out, r) = against_liar(addr);
    assert!(!out.status.success());
    assert!(
        r["errors"].as_u64().unwrap() * 2 + 2 >= r["requests"].as_u64().unwrap(),
        "{r}"
    );
    let addr = lying_server(|_, id, mut body| {
        body.push(b'!');
        (id, body)
    });
    let (_, r) = against_liar(addr);
    assert_eq!(r["errors"], r["requests"], "{r}");
}

#[test]
fn open_loop_keeps_its_rate() {
    let server = Server::start(&["--no-auth"]);
    let out = load(&[
        "--addr",
        &server.addr.to_string(),
        "--no-auth",
        "--conns",
        "10",
        "--rate",
        "2000",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    let requests = r["requests"].as_u64().unwrap();
    assert!(
        (1600..=2400).contains(&requests),
        "{requests} requests at 2000/s for 1 s"
    );
    assert_eq!(r["rate"], 2000.0);
}

#[test]
fn bad_options_are_refused() {
    for args in [
        &["--conns", "0"][..],
        &["--pipeline", "0"],
        &["--op", "frobnicate"],
        &["--rate", "0"],
        &["--rate", "fast"],
        &["--duration", "-1"],
        &["--size", "big"],
        &["--key", "abc"],
    ] {
        let out = load(&[args, &["--addr", "127.0.0.1:9", "--duration", "0.1"]].concat());
        assert!(!out.status.success(), "{args:?} was accepted");
        // Refused while checking options: nothing listens on port 9, so a run that got as far
        // as connecting would say "refused" instead.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !said.is_empty() && !said.contains("refused"),
            "{args:?}: {said}"
        );
    }
}
