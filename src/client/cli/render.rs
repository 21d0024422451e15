//! How replies and pushes are shown: a successful reply by its command's `Show`,
//! `--json` lines, pushes as one line each, network text made safe for a terminal.

use super::commands::Show;
use crate::client::Frame;
use crate::client::text::one_line;
use serde_json::{Map, Value};
use std::io::{self, Write};
use std::time::Duration;

/// The reply header as one JSON line, with the body as `body` (UTF-8) or `body_hex`.
pub(super) fn json_line(reply: &Frame) -> String {
    let mut header: Map<String, Value> = reply.header.clone();
    if !reply.body.is_empty() {
        match std::str::from_utf8(&reply.body) {
            Ok(text) => header.insert("body".into(), text.into()),
            Err(_) => header.insert("body_hex".into(), hex::encode(&reply.body).into()),
        };
    }
    Value::Object(header).to_string()
}

/// Prints a successful reply as the user sees it (an exec's stderr to our stderr).
pub(super) fn print_success(
    reply: &Frame,
    show: Show,
    took: Duration,
    note: Option<&str>,
) -> io::Result<()> {
    if let Show::Exec = show {
        let stdout_len = reply
            .header
            .get("stdout")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let split = usize::try_from(stdout_len)
            .unwrap_or(usize::MAX)
            .min(reply.body.len());
        let (out, err) = reply.body.split_at(split);
        io::stdout().write_all(out)?;
        io::stdout().flush()?;
        return io::stderr().write_all(err);
    }
    io::stdout().write_all(render(reply, show, took, note).as_bytes())
}

/// A successful reply as text, ending in a newline.
fn render(reply: &Frame, show: Show, took: Duration, note: Option<&str>) -> String {
    let body = || String::from_utf8_lossy(&reply.body).into_owned();
    let mut text = match (note, show) {
        (Some(note), _) => note.to_string(),
        (None, Show::RoundTrip) => format!("pong in {:.3} ms", took.as_secs_f64() * 1000.0),
        (None, Show::PrettyJson) => serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(body),
        (None, Show::Body | Show::Exec) => body(),
        (None, Show::Field(key)) => one_line(reply.str(key).unwrap_or("")),
        (None, Show::Done) => "ok".to_string(),
        (None, Show::Silent) => return String::new(),
        (None, Show::Sum) => format!(
            "{}  {} bytes",
            reply.str("sha256").unwrap_or("?"),
            reply
                .header
                .get("total")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        ),
        (None, Show::Listing) => listing(&reply.body).unwrap_or_else(body),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// An `ls` body as lines of type, size, modification time and name (dirs end in
/// `/`); a name is one line whatever it holds.
fn listing(body: &[u8]) -> Option<String> {
    let entries: Vec<Value> = serde_json::from_slice(body).ok()?;
    let mut text = String::new();
    for e in &entries {
        let name = one_line(e.get("name")?.as_str()?);
        let dir = e.get("type")?.as_str()? == "dir";
        let size = e.get("size").and_then(Value::as_u64).unwrap_or(0);
        let mtime = e
            .get("mtime")
            .and_then(Value::as_i64)
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        let slash = if dir { "/" } else { "" };
        text.push_str(&format!("{size:>12}  {mtime}  {name}{slash}\n"));
    }
    if entries.is_empty() {
        text.push_str("(empty)\n");
    }
    Some(text)
}

/// A reply's error text as one line.
pub(super) fn error_text(reply: &Frame) -> String {
    one_line(reply.error().unwrap_or(""))
}

/// A push as one line: `[room] user: text`, `[dm] user: text`, `[room] * user joined`.
/// Whatever the server sends, one push is one line and cannot pass for another
/// sender's: line breaks, escape sequences and bidi controls are shown escaped.
pub(super) fn render_push(push: &Frame) -> String {
    let field = |key| one_line(push.str(key).unwrap_or("?"));
    match push.op() {
        Some("bye") => format!("[server closed the connection: {}]", field("reason")),
        Some("msg") => {
            let text = String::from_utf8_lossy(&push.body);
            let text = one_line(text.trim_end_matches(['\n', '\r']));
            match push.str("room") {
                Some(_) => format!("[{}] {}: {text}", field("room"), field("from")),
                None => format!("[dm] {}: {text}", field("from")),
            }
        }
        Some(op @ ("joined" | "left")) => {
            format!("[{}] * {} {op}", field("room"), field("user"))
        }
        _ => format!("[push] {}", one_line(&json_line(push))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(header: Value, body: &[u8]) -> Frame {
        let Value::Object(header) = header else {
            panic!()
        };
        Frame {
            header,
            body: body.to_vec(),
        }
    }

    #[test]
    fn chat_pushes_render_as_one_safe_line() {
        let msg = push(
            json!({"op":"msg","room":"lobby","from":"bob","size":3}),
            b"hi\n",
        );
        assert_eq!(render_push(&msg), "[lobby] bob: hi");
        let dm = push(json!({"op":"msg","from":"carol","size":2}), b"yo");
        assert_eq!(render_push(&dm), "[dm] carol: yo");
        let joined = push(json!({"op":"joined","room":"lobby","user":"bob"}), b"");
        assert_eq!(render_push(&joined), "[lobby] * bob joined");
        let left = push(json!({"op":"left","room":"lobby","user":"bob"}), b"");
        assert_eq!(render_push(&left), "[lobby] * bob left");
        // A terminal escape sequence from the network is not passed through.
        let evil = push(
            json!({"op":"msg","room":"r","from":"x","size":6}),
            b"\x1b[2Jok",
        );
        assert_eq!(render_push(&evil), "[r] x: \\u{1b}[2Jok");
    }

    #[test]
    fn a_push_cannot_pass_for_more_lines_or_another_sender() {
        let forged = push(
            json!({"op":"msg","room":"lobby","from":"mallory","size":40}),
            b"hello\n[lobby] admin: click http://evil\n",
        );
        assert_eq!(
            render_push(&forged),
            "[lobby] mallory: hello\\n[lobby] admin: click http://evil"
        );
        let bidi = push(
            json!({"op":"msg","from":"mal\u{202e}nimda","size":9}),
            "a\u{2066}b\r\nc".as_bytes(),
        );
        assert_eq!(
            render_push(&bidi),
            "[dm] mal\\u{202e}nimda: a\\u{2066}b\\r\\nc"
        );
        let odd = push(json!({"op":"odd","note":"x\u{2028}y\u{85}"}), b"");
        assert_eq!(
            render_push(&odd),
            r#"[push] {"note":"x\u{2028}y\u{85}","op":"odd"}"#
        );
        let bye = push(json!({"op":"bye","reason":"a\nb"}), b"");
        assert_eq!(render_push(&bye), "[server closed the connection: a\\nb]");
        for p in [forged, bidi, odd, bye] {
            assert_eq!(render_push(&p).lines().count(), 1);
        }
    }

    #[test]
    fn ls_names_are_one_line_each() {
        let body = json!([
            {"name":"a\n[lobby] admin: hi","type":"file","size":1,"mtime":0},
            {"name":"txt\u{202e}exe.doc","type":"dir","size":0,"mtime":0},
        ]);
        let text = listing(body.to_string().as_bytes()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("  a\\n[lobby] admin: hi"), "{text}");
        assert!(lines[1].ends_with("  txt\\u{202e}exe.doc/"), "{text}");
    }
}
