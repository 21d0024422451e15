//! Contract section 6 from outside: allowlisted programs without a shell, output
//! counts and truncation, timeouts, signals, ordering, and no zombies or leaks.

mod common;

use common::Server;
use frameloop::client::{Client, Frame};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn exec(c: &mut Client, cmd: &str, args: &[&str]) -> Frame {
    c.request("exec", json!({"cmd": cmd, "args": args}), b"")
        .expect("reply")
}

fn streams(r: &Frame) -> (String, String) {
    let out = r.header["stdout"].as_u64().unwrap() as usize;
    let err = r.header["stderr"].as_u64().unwrap() as usize;
    assert_eq!(out + err, r.body.len());
    (
        String::from_utf8_lossy(&r.body[..out]).into_owned(),
        String::from_utf8_lossy(&r.body[out..]).into_owned(),
    )
}

const ALLOW: &[&str] = &["--allow-exec", "echo,ls,sh,sleep,head,cat,env,pwd,kill"];

#[test]
fn allowed_command_output_and_counts() {
    let server = Server::start(ALLOW);
    let mut c = server.client();
    let r = exec(&mut c, "echo", &["hello", "world"]);
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(streams(&r), ("hello world\n".into(), String::new()));
    assert_eq!(r.header["exit"], 0);
    assert_eq!(r.header["signal"], Value::Null);
    assert_eq!(r.header["timed_out"], false);
    assert_eq!(r.header["truncated"], false);
    // stdout then stderr, with their counts.
    // (`/usr`, not `/`: confinement lets an exec list no more than it may read.)
    let r = exec(&mut c, "ls", &["/nonexistent-dir", "/usr"]);
    let (out, err) = streams(&r);
    assert!(out.contains("bin"), "{out}");
    assert!(err.contains("nonexistent-dir"), "{err}");
    assert_eq!(r.header["exit"], 2);
    // Cleared environment.
    let (out, _) = streams(&exec(&mut c, "env", &[]));
    let mut vars: Vec<&str> = out.lines().collect();
    vars.sort();
    assert_eq!(vars, ["LANG=C.UTF-8", "PATH=/usr/bin:/bin"]);
    // stdin is empty: cat ends at once.
    let r = exec(&mut c, "cat", &[]);
    assert_eq!(
        (r.status(), r.body.len(), r.header["exit"].clone()),
        (200, 0, json!(0))
    );
}

#[test]
fn runs_in_the_connections_directory_inside_the_root() {
    let server = Server::start(ALLOW);
    let mut c = server.client();
    c.request("mkdir", json!({"path":"/sub"}), b"").unwrap();
    c.request("put", json!({"path":"/sub/f.txt","size":2}), b"hi")
        .unwrap();
    c.request("cd", json!({"path":"/sub"}), b"").unwrap();
    let (out, _) = streams(&exec(&mut c, "ls", &[]));
    assert_eq!(out, "f.txt\n");
    let (out, _) = streams(&exec(&mut c, "pwd", &[]));
    let want = server.dir.path().join("files/guest/sub");
    assert_eq!(out.trim(), want.canonicalize().unwrap().to_str().unwrap());
}

#[test]
fn anything_not_allowed_is_403() {
    let server = Server::start(&["--allow-exec", "echo"]);
    let mut c = server.client();
    for cmd in [
        "",
        "rm",
        "/bin/echo",
        "./echo",
        "bin/echo",
        "echo ",
        "ECHO",
        "sh",
    ] {
        let r = exec(&mut c, cmd, &[]);
        assert_eq!(r.status(), 403, "{cmd:?}: {r:?}");
    }
    let r = c.request("exec", json!({}), b"").unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .request("exec", json!({"cmd":"echo","args":"x"}), b"")
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .request("exec", json!({"cmd":"echo","args":[1]}), b"")
        .unwrap();
    assert_eq!(r.status(), 400);
    let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let r = c
        .request("exec", json!({"cmd":"echo","args":many}), b"")
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .request("exec", json!({"cmd":"echo","args":["x".repeat(4097)]}), b"")
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .request("exec", json!({"cmd":"echo","args":["x".repeat(4096)]}), b"")
        .unwrap();
    assert_eq!(r.status(), 200);
    // Default: nothing allowed.
    let server = Server::start(&[]);
    let mut c = server.client();
    assert_eq!(exec(&mut c, "echo", &["hi"]).status(), 403);
}

#[test]
fn shell_metacharacters_are_literal() {
    let server = Server::start(ALLOW);
    let mut c = server.client();
    let args = [
        "$(id)", "`id`", ";", "rm", "-rf", "/", "|", "cat", "&&", "$HOME", "*",
    ];
    let (out, _) = streams(&exec(&mut c, "echo", &args));
    assert_eq!(out, format!("{}\n", args.join(" ")));
}

#[test]
fn timeout_kills_and_truncation_keeps_one_mib() {
    let server = Server::start(&[ALLOW[0], ALLOW[1], "--exec-timeout", "0.5"]);
    let mut c = server.client();
    let t = Instant::now();
    let r = exec(&mut c, "sleep", &["30"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(r.header["timed_out"], true, "{r:?}");
    assert_eq!(r.header["signal"], 9);
    assert_eq!(r.header["exit"], Value::Null);
    let r = exec(&mut c, "head", &["-c", "3000000", "/dev/zero"]);
    assert_eq!(r.header["truncated"], true);
    assert_eq!(r.header["stdout"], 1024 * 1024);
    assert_eq!(r.body.len(), 1024 * 1024);
    assert_eq!(r.header["exit"], 0);
    // Exit codes and signals.
    let r = exec(&mut c, "sh", &["-c", "echo oops >&2; exit 7"]);
    assert_eq!(
        (r.header["exit"].clone(), streams(&r).1),
        (json!(7), "oops\n".into())
    );
    let r = exec(&mut c, "sh", &["-c", "kill -TERM $$"]);
    assert_eq!(
        (r.header["exit"].clone(), r.header["signal"].clone()),
        (Value::Null, json!(15))
    );
}

#[test]
fn pipelined_requests_wait_and_other_connections_do_not() {
    let server = Server::start(ALLOW);
    let mut c = server.client();
    let ids = [
        c.send("exec", json!({"cmd":"sleep","args":["1"]}), b"")
            .unwrap(),
        c.send("echo", json!({}), b"behind").unwrap(),
        c.send("exec", json!({"cmd":"echo","args":["second"]}), b"")
            .unwrap(),
    ];
    let mut other = server.client();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert_eq!(other.request("ping", json!({}), b"").unwrap().status(), 200);
    let ping = t.elapsed();
    assert!(
        ping < Duration::from_millis(200),
        "ping took {ping:?} while sleep ran"
    );
    let got: Vec<Frame> = ids.iter().map(|_| c.read_reply().unwrap()).collect();
    let got_ids: Vec<u64> = got.iter().map(|f| f.id().unwrap()).collect();
    assert_eq!(got_ids, ids);
    assert_eq!(got[1].body, b"behind");
    assert_eq!(streams(&got[2]).0, "second\n");
}

fn children_of(pid: u32) -> Vec<String> {
    // Every process whose parent is the server, with its state (Z = zombie).
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split(' ').collect();
        if fields.get(1) == Some(&pid.to_string().as_str()) {
            found.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                fields[0]
            ));
        }
    }
    found
}

#[test]
fn disconnect_mid_exec_kills_reaps_and_frees_descriptors() {
    let server = Server::start(ALLOW);
    let mut c = server.client();
    exec(&mut c, "echo", &["warm"]);
    let fds = server.fd_count();
    for _ in 0..3 {
        let mut c = server.client();
        c.send("exec", json!({"cmd":"sleep","args":["30"]}), b"")
            .unwrap();
        server.wait_for("the child", |s| children_of(s.pid()).len() == 1);
        drop(c);
        server.wait_for("the child gone (no zombie)", |s| {
            children_of(s.pid()).is_empty()
        });
    }
    // The same after many quick execs.
    for _ in 0..20 {
        exec(&mut c, "echo", &["x"]);
    }
    assert!(children_of(server.pid()).is_empty());
    server.wait_for("descriptors back", |s| s.fd_count() == fds);
}

#[test]
fn unknown_program_refuses_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-exec",
            "echo,no-such-program-xyz",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-program-xyz"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-exec",
            "/bin/echo",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
