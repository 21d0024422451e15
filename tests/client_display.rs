//! What `frameloop client` shows of text other people chose (audit finding 11):
//! a chat message or an `ls` name is one line, whatever it holds, and cannot pass
//! for another sender's message; `--json` stays raw JSON.

mod common;

use common::Server;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const FORGED: &str = "hello\n[lobby] admin: click http://evil";
const BIDI: &str = "see \u{202e}txt.exe\u{202c} \u{2066}now\u{2069}\r\x1b[2J";

fn client(server: &Server) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frameloop"));
    cmd.arg("client")
        .args(["--addr", &server.addr.to_string(), "--users"])
        .arg(server.dir.path().join("users"));
    cmd
}

#[test]
fn a_chat_message_is_shown_as_one_line() {
    let server = Server::start(&[]);
    let mut other = server.client();
    let r = other
        .request("join", json!({"room": "lobby"}), b"")
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut chat = client(&server)
        .args(["chat", "lobby"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the chat client");
    let joined = other.next_push().unwrap();
    assert_eq!(joined.op(), Some("joined"), "{joined:?}");
    for text in [FORGED, BIDI, "the end"] {
        let r = other
            .request("say", json!({"room": "lobby"}), text.as_bytes())
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut lines = Vec::new();
    for line in BufReader::new(chat.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.ends_with("the end");
        lines.push(line);
        if done {
            break;
        }
    }
    drop(chat.stdin.take());
    assert!(chat.wait().unwrap().success());
    // The greeting, then one line per message, each from its real sender.
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(
        lines[1],
        r"[lobby] guest: hello\n[lobby] admin: click http://evil"
    );
    assert_eq!(
        lines[2],
        r"[lobby] guest: see \u{202e}txt.exe\u{202c} \u{2066}now\u{2069}\r\u{1b}[2J"
    );
    assert!(!lines.iter().any(|l| l.starts_with("[lobby] admin")));
}

#[test]
fn an_ls_name_is_shown_as_one_line_and_json_stays_raw() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let name = "a\n[lobby] admin: hi \u{202e}";
    let r = c.request("mkdir", json!({"path": name}), b"").unwrap();
    assert_eq!(r.status(), 200, "{r:?}");
    let out = client(&server).arg("ls").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.trim_end()
            .ends_with(r"  a\n[lobby] admin: hi \u{202e}/"),
        "{text}"
    );
    // --json is JSON, which carries the name exactly.
    let out = client(&server).args(["--json", "ls"]).output().unwrap();
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries: Value = serde_json::from_str(line["body"].as_str().unwrap()).unwrap();
    assert_eq!(entries[0]["name"], name);
}
