//! The `frameloop client` command and `scripts/client.py`, driven from outside:
//! one-shot commands with their exit codes, failures that must be one clear line,
//! an interactive session through a pseudo-terminal.

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

/// `--addr ADDR --users FILE` for `server`, as both clients take them.
fn server_flags(server: &Server) -> Vec<String> {
    let users = server.dir.path().join("users");
    vec![
        "--addr".into(),
        server.addr.to_string(),
        "--users".into(),
        users.display().to_string(),
    ]
}

fn client(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .arg("client")
        .args(server_flags(server))
        .args(args)
        .output()
        .expect("run client")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn one_shot_commands_print_the_reply_body() {
    let server = Server::start(&[]);
    let out = client(&server, &["echo", "hello", "world"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hello world\n");
    assert_eq!(text(&client(&server, &["upper", "abc"]).stdout), "ABC\n");
    let year = chrono::Local::now().format("%Y").to_string();
    assert_eq!(text(&client(&server, &["time", "%Y"]).stdout).trim(), year);
    assert!(text(&client(&server, &["stamp", "x"]).stdout).ends_with("] x\n"));
    assert!(text(&client(&server, &["ping"]).stdout).starts_with("pong in "));
    let stats: serde_json::Value =
        serde_json::from_slice(&client(&server, &["stats"]).stdout).unwrap();
    assert!(stats["conns_total"].as_u64().unwrap() >= 1);
}

#[test]
fn json_prints_the_reply_header() {
    let server = Server::start(&[]);
    let out = client(&server, &["--json", "echo", "hi"]);
    assert!(out.status.success());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["status"], 200);
    assert_eq!(line["size"], 2);
    assert_eq!(line["body"], "hi");
}

#[test]
fn server_errors_exit_1_with_the_error_on_stderr() {
    let server = Server::start(&[]);
    let out = client(&server, &["time", "%Q"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("400") && err.contains("strftime"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn usage_errors_exit_2() {
    let server = Server::start(&[]);
    let out = client(&server, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown command"));
}

#[test]
fn a_wrong_key_is_one_clear_line() {
    let server = Server::start(&[]);
    let out = client(&server, &["--key", &"00".repeat(32), "ping"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn no_server_is_one_clear_line() {
    // A port nothing listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args([
            "client",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--key",
            &"11".repeat(32),
            "ping",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn a_server_that_fails_mutual_authentication_is_refused() {
    // An impostor: accepts any login and answers with a MAC it cannot compute.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let impostor = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let hello = format!(
            r#"{{"op":"hello","proto":1,"auth":"hmac-sha256","nonce":"{}"}}"#,
            "ab".repeat(32)
        );
        s.write_all(&frameloop::proto::encode_frame(hello.as_bytes(), b""))
            .unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        let ok = format!(
            r#"{{"status":200,"user":"guest","mac":"{}"}}"#,
            "cd".repeat(32)
        );
        s.write_all(&frameloop::proto::encode_frame(ok.as_bytes(), b""))
            .unwrap();
        let _ = s.read(&mut buf);
    });
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args([
            "client",
            "--addr",
            &addr.to_string(),
            "--key",
            &"11".repeat(32),
            "echo",
            "secret",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("mutual authentication"), "{err}");
    assert!(out.stdout.is_empty());
    impostor.join().unwrap();
}

#[test]
fn zero_config_after_serve_with_no_flags() {
    // `frameloop serve` and `frameloop client` run from the same directory need no flags.
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        // UDP off: the default 7878/udp may be taken by a test running in parallel.
        .args(["serve", "--listen", &addr, "--udp", "off"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = [0u8; 1];
    serve
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap(); // started
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["client", "--addr", &addr, "echo", "zero", "config"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "zero config\n");
}

/// `frameloop client` (interactive) in a pseudo-terminal, its history in the server's temp dir.
fn shell_in_pty(server: &Server) -> rexpect::session::PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frameloop"));
    cmd.arg("client").args(server_flags(server));
    cmd.env("HOME", server.dir.path());
    rexpect::session::spawn_command(cmd, Some(10_000)).expect("spawn in a pty")
}

#[test]
fn interactive_session_through_a_pty() {
    let server = Server::start(&[]);
    let mut p = shell_in_pty(&server);
    p.exp_string("frameloop> ").unwrap();
    p.send_line("echo hello from a pty").unwrap();
    p.exp_string("hello from a pty").unwrap();
    p.exp_string("frameloop> ").unwrap();
    p.send_line("time").unwrap();
    p.exp_regex(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").unwrap();
    p.send_line("help").unwrap();
    p.exp_string("time [FORMAT]").unwrap();
    p.send_line("time %Q").unwrap();
    p.exp_string("error 400").unwrap();
    p.send_line("quit").unwrap();
    p.exp_eof().unwrap();
    let history = std::fs::read_to_string(server.dir.path().join(".frameloop_history")).unwrap();
    assert!(history.contains("echo hello from a pty"));
}

#[test]
fn python_client_round_trips_auth_and_echo() {
    let server = Server::start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/client.py");
    let run = |args: &[&str]| {
        Command::new("python3")
            .arg(script)
            .args(server_flags(&server))
            .args(args)
            .output()
            .expect("python3")
    };
    let out = run(&["echo", "hello", "python"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello python\n");
    assert_eq!(text(&run(&["upper", "py"]).stdout), "PY\n");
    assert_eq!(text(&run(&["ping"]).stdout), "pong\n");
    assert!(text(&run(&["stats"]).stdout).contains("\"conns_total\""));
    assert_eq!(run(&["time", "%Q"]).status.code(), Some(1));
    let bad = Command::new("python3")
        .arg(script)
        .args([
            "--addr",
            &server.addr.to_string(),
            "--key",
            &"00".repeat(32),
            "ping",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("401"));
}

#[test]
fn a_push_is_printed_above_the_line_being_typed() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut p = shell_in_pty(&server);
    p.exp_string("frameloop> ").unwrap();
    // Type half a command, no Enter; the server's idle `bye` push arrives meanwhile.
    p.send("echo half typed").unwrap();
    p.flush().unwrap();
    p.exp_string("echo half typed").unwrap();
    p.exp_string("[server closed the connection: idle timeout]")
        .unwrap();
    // The prompt and the half-typed line are drawn again below the push.
    p.exp_string("frameloop> echo half typed").unwrap();
    // The connection is gone: finishing the line sends it, which says so and ends the shell.
    p.send_line("").unwrap();
    p.exp_string("connection lost").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn file_commands_put_get_and_verify_end_to_end() {
    let server = Server::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("data.bin");
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let local_s = local.display().to_string();
    let out = client(&server, &["put", &local_s]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).starts_with("stored data.bin: 2500000 bytes"));
    // Without -f an existing file is a refusal (exit 1); with -f it is replaced.
    assert_eq!(client(&server, &["put", &local_s]).status.code(), Some(1));
    assert!(client(&server, &["put", "-f", &local_s]).status.success());
    assert!(client(&server, &["mkdir", "-p", "a/b"]).status.success());
    let ls = text(&client(&server, &["ls"]).stdout);
    assert!(
        ls.contains("a/") && ls.contains("2500000") && ls.contains("data.bin"),
        "{ls}"
    );
    let sum = text(&client(&server, &["sum", "data.bin"]).stdout);
    let want = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    assert!(sum.starts_with(&want), "{sum}");
    let back = work.path().join("back.bin");
    let out = client(&server, &["get", "data.bin", &back.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // A missing file: exit 1 and no partial file left behind.
    let none = work.path().join("none.bin");
    let out = client(&server, &["get", "nope", &none.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 2);
    assert!(client(&server, &["rm", "data.bin"]).status.success());
    assert_eq!(client(&server, &["sum", "data.bin"]).status.code(), Some(1));
}

#[test]
fn exec_prints_both_streams_and_exits_with_the_childs_code() {
    let server = Server::start(&["--allow-exec", "sh"]);
    let out = client(
        &server,
        &["exec", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("out\n".into(), "err\n".into())
    );
    let out = client(&server, &["exec", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));
    assert_eq!(client(&server, &["exec", "ls"]).status.code(), Some(1));
}

/// Reads pushes until a `msg`, which it returns as (header, body text).
fn next_msg(c: &mut frameloop::client::Client) -> (serde_json::Value, String) {
    loop {
        let f = c.next_push().expect("a push");
        if f.op() == Some("msg") {
            return (serde_json::Value::Object(f.header), text(&f.body));
        }
    }
}

#[test]
fn chat_commands_in_the_shell_show_pushes_live() {
    use serde_json::json;
    let server = Server::start(&[]);
    let mut p = shell_in_pty(&server);
    p.exp_string("frameloop> ").unwrap();
    p.send_line("join lobby").unwrap();
    p.exp_string("ok").unwrap();
    p.exp_string("frameloop> ").unwrap();
    let mut other = server.client();
    let r = other
        .request("join", json!({"room": "lobby"}), b"")
        .unwrap();
    assert_eq!(r.status(), 200);
    p.exp_string("[lobby] * guest joined").unwrap();
    let r = other
        .request("say", json!({"room": "lobby"}), b"hello from outside")
        .unwrap();
    assert_eq!(r.status(), 200);
    p.exp_string("[lobby] guest: hello from outside").unwrap();
    p.send_line("say lobby hi back").unwrap();
    let (h, body) = next_msg(&mut other);
    assert_eq!(
        (h, body.as_str()),
        (
            json!({"op":"msg","room":"lobby","from":"guest","size":7}),
            "hi back"
        )
    );
    p.send_line("dm guest direct").unwrap();
    let (h, body) = next_msg(&mut other);
    assert_eq!(
        (h, body.as_str()),
        (json!({"op":"msg","from":"guest","size":6}), "direct")
    );
    other
        .request("dm", json!({"to": "guest"}), b"to you")
        .unwrap();
    p.exp_string("[dm] guest: to you").unwrap();
    p.send_line("say nowhere x").unwrap();
    p.exp_string("error 403").unwrap();
    p.send_line("leave lobby").unwrap();
    let left = other.next_push().unwrap();
    assert_eq!(
        (left.op(), left.str("room"), left.str("user")),
        (Some("left"), Some("lobby"), Some("guest"))
    );
    p.send_line("quit").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn chat_mode_says_each_line_and_keeps_the_prompt_whole() {
    use serde_json::json;
    let server = Server::start(&[]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frameloop"));
    cmd.arg("client")
        .args(server_flags(&server))
        .args(["chat", "lobby"]);
    cmd.env("HOME", server.dir.path());
    let mut p = rexpect::session::spawn_command(cmd, Some(10_000)).expect("spawn in a pty");
    p.exp_string("lobby> ").unwrap();
    let mut other = server.client();
    assert_eq!(
        other
            .request("join", json!({"room": "lobby"}), b"")
            .unwrap()
            .status(),
        200
    );
    p.exp_string("[lobby] * guest joined").unwrap();
    p.send_line("hello room").unwrap();
    let (h, body) = next_msg(&mut other);
    assert_eq!(
        (h, body.as_str()),
        (
            json!({"op":"msg","room":"lobby","from":"guest","size":10}),
            "hello room"
        )
    );
    // A message arrives while a line is half typed: it is printed above, and the
    // prompt with the half-typed line is drawn again below it.
    p.send("half typ").unwrap();
    p.flush().unwrap();
    p.exp_string("half typ").unwrap();
    other
        .request("say", json!({"room": "lobby"}), b"interrupting")
        .unwrap();
    p.exp_string("[lobby] guest: interrupting").unwrap();
    p.exp_string("lobby> half typ").unwrap();
    p.send_line("ed").unwrap();
    let (_, body) = next_msg(&mut other);
    assert_eq!(body, "half typed");
    // Ctrl-D at the next prompt leaves: the room hears it.
    p.exp_string("lobby> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    let left = other.next_push().unwrap();
    assert_eq!(
        (left.op(), left.str("room"), left.str("user")),
        (Some("left"), Some("lobby"), Some("guest"))
    );
}

/// When the server closes the connection (here: it shuts down) while the user
/// types nothing, the end of input reports the lost connection: exit 2, not 0.
#[test]
fn input_ending_after_the_server_left_exits_2() {
    use std::process::Stdio;
    let server = Server::start(&[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .arg("client")
        .args(server_flags(&server))
        .args(["chat", "lobby"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run client");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    server.wait_for("the chat client to join", |s| {
        s.stats()["ops"]["say"].as_u64() == Some(1)
    });
    // SIGTERM: the server says bye to everyone and exits.
    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while !out.contains("shutdown]") {
        assert_eq!(
            stdout.read(&mut byte).unwrap(),
            1,
            "client output so far: {out:?}"
        );
        out.push(byte[0] as char);
    }
    drop(stdin);
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(2), "{done:?}");
    assert!(text(&done.stderr).contains("connection lost"), "{done:?}");
}
