//! `frameloop load` from outside: it counts right replies against the real
//! server, counts wrong ones against a lying server, keeps an open-loop rate,
//! and refuses bad options; `--resp` against a RESP server (a small stand-in
//! for Redis) and `--raw` against the no-parse floor (`examples/floor.rs`).

mod common;

use common::Server;
use frameloop::client::read_frame;
use frameloop::proto::encode_frame;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

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
        &["--resp", "--raw"],
        &["--resp", "--op", "upper"],
        &["--raw", "--op", "ping"],
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

/// A RESP server for the load tool: `ECHO x` gets `x` back as a bulk string,
/// `PING` gets `+PONG`; with `wrong`, every reply is an error instead. A thread
/// per connection, as many as come.
fn resp_server(wrong: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                // Each command: `*N` then N bulk strings `$LEN` + bytes.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let n: usize = line.trim().trim_start_matches('*').parse().unwrap();
                    let mut args = Vec::new();
                    for _ in 0..n {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        let len: usize = line.trim().trim_start_matches('$').parse().unwrap();
                        let mut arg = vec![0; len + 2];
                        reader.read_exact(&mut arg).unwrap();
                        arg.truncate(len);
                        args.push(arg);
                    }
                    line.clear();
                    let reply = match (wrong, args.first().map(Vec::as_slice)) {
                        (true, _) => b"-ERR unknown command\r\n".to_vec(),
                        (false, Some(b"PING")) => b"+PONG\r\n".to_vec(),
                        (false, _) => {
                            let body = args.get(1).cloned().unwrap_or_default();
                            [
                                format!("${}\r\n", body.len()).into_bytes(),
                                body,
                                b"\r\n".to_vec(),
                            ]
                            .concat()
                        }
                    };
                    if writer.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn quick(addr: &str, extra: &[&str]) -> Output {
    let base = [
        "--addr",
        addr,
        "--conns",
        "3",
        "--pipeline",
        "4",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--json",
    ];
    load(&[&base[..], extra].concat())
}

/// A run that succeeded on `wire` with more than 100 requests, all right.
fn assert_clean_run(out: &Output, wire: &str) {
    assert!(
        out.status.success(),
        "{wire}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(out);
    assert_eq!(
        (r["wire"].as_str(), r["errors"].as_u64()),
        (Some(wire), Some(0)),
        "{r}"
    );
    assert!(r["requests"].as_u64().unwrap() > 100, "{r}");
}

#[test]
fn resp_echo_and_ping_check_out_against_a_resp_server() {
    let addr = resp_server(false).to_string();
    for op in ["echo", "ping"] {
        // No users file, no key: a RESP run logs in to nothing.
        let out = quick(&addr, &["--resp", "--op", op, "--size", "100"]);
        assert_clean_run(&out, "resp");
    }
}

#[test]
fn a_wrong_resp_reply_ends_the_run_and_says_what_came() {
    let addr = resp_server(true).to_string();
    let out = quick(&addr, &["--resp"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("did not match") && said.contains("-ERR unknown command"),
        "{said}"
    );
}

/// Stops the floor server however the test ends.
struct Floor(std::process::Child);

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn raw_echoes_come_back_unchanged_from_the_floor() {
    // `cargo test` builds the examples beside the binaries.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_frameloop"));
    let floor_bin = bin.with_file_name("examples").join("floor");
    assert!(floor_bin.exists(), "{} was not built", floor_bin.display());
    let mut floor = Floor(
        Command::new(&floor_bin)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(floor.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.split_whitespace().last().unwrap().to_string();
    let out = quick(&addr, &["--raw", "--size", "64"]);
    assert_clean_run(&out, "raw");
}
