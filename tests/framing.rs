//! Contract sections 1 and 2 from outside: framing, sticky packets, framing errors,
//! request/reply rules, against the real server over TCP.

mod common;

use common::{Server, be32};
use frameloop::proto::encode_frame;
use serde_json::json;

#[test]
fn hundred_frames_in_one_write_come_back_in_order() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    let mut bytes = Vec::new();
    for id in 0..100u64 {
        let body = format!("body {id}");
        let header = json!({"op":"echo","id":id,"size":body.len()}).to_string();
        bytes.extend(encode_frame(header.as_bytes(), body.as_bytes()));
    }
    raw.send_bytes(&bytes);
    for id in 0..100u64 {
        let reply = raw.recv();
        assert_eq!(reply.status(), 200);
        assert_eq!(reply.id(), Some(id));
        assert_eq!(reply.body, format!("body {id}").as_bytes());
    }
}

#[test]
fn a_frame_sent_one_byte_at_a_time() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    raw.s.set_nodelay(true).unwrap();
    let frame = encode_frame(br#"{"op":"echo","id":5,"size":3}"#, b"abc");
    for byte in &frame {
        raw.send_bytes(&[*byte]);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let reply = raw.recv();
    assert_eq!(
        (reply.status(), reply.id(), reply.body.as_slice()),
        (200, Some(5), &b"abc"[..])
    );
}

/// Sends `bytes` on a fresh authenticated connection; expects one error reply, then a close.
fn framing_error(server: &Server, bytes: &[u8], status: u64) {
    let mut raw = server.raw_authed();
    raw.send_bytes(bytes);
    let reply = raw.recv();
    assert_eq!(reply.status(), status, "{reply:?} for {bytes:?}");
    assert!(reply.error().is_some_and(|e| !e.is_empty()));
    assert_eq!(reply.id(), None);
    raw.expect_closed();
}

#[test]
fn framing_errors_reply_then_close() {
    let server = Server::start(&[]);
    framing_error(&server, &be32(0), 400);
    framing_error(&server, &be32(65537), 431);
    framing_error(&server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 431);
    framing_error(&server, &encode_frame(b"not json", b""), 400);
    framing_error(&server, &encode_frame(b"[1,2,3]", b""), 400);
    framing_error(&server, &encode_frame(b"\"op\"", b""), 400);
    framing_error(
        &server,
        &encode_frame(b"{\"op\":\"ping\",\"x\":\"\xff\xfe\"}", b""),
        400,
    );
    framing_error(
        &server,
        &encode_frame(br#"{"op":"echo","size":-1}"#, b""),
        400,
    );
    framing_error(
        &server,
        &encode_frame(br#"{"op":"echo","size":"3"}"#, b"abc"),
        400,
    );
    framing_error(
        &server,
        &encode_frame(br#"{"op":"echo","size":2.5}"#, b"abc"),
        400,
    );
    assert!(server.stats()["protocol_errors"].as_u64().unwrap() >= 10);
}

#[test]
fn framing_errors_come_before_authentication() {
    let server = Server::start(&[]);
    for (bytes, status) in [
        (be32(0).to_vec(), 400),
        (b"GET / HTTP/1.0\r\n\r\n".to_vec(), 431),
    ] {
        let (mut raw, _) = server.raw();
        raw.send_bytes(&bytes);
        assert_eq!(raw.recv().status(), status);
        raw.expect_closed();
    }
}

#[test]
fn max_header_is_configurable() {
    let server = Server::start(&["--max-header", "100"]);
    let mut raw = server.raw_authed();
    let pad = "x".repeat(100);
    raw.send(&format!(r#"{{"op":"ping","pad":"{pad}"}}"#), b"");
    assert_eq!(raw.recv().status(), 431);
    raw.expect_closed();
}

#[test]
fn request_errors_keep_the_connection() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    // Unknown op with a body: 400, body consumed.
    raw.request(json!({"op":"frobnicate","id":1}), b"some body bytes");
    let r = raw.recv();
    assert_eq!((r.status(), r.id()), (400, Some(1)));
    // Missing op, op not a string.
    raw.request(json!({"id":2}), b"");
    assert_eq!(raw.recv().status(), 400);
    raw.request(json!({"op":7,"id":3}), b"xy");
    let r = raw.recv();
    assert_eq!((r.status(), r.id()), (400, Some(3)));
    // An id that is not an unsigned integer: 400 without id.
    for bad in [json!(-1), json!("4"), json!(1.5), json!(null), json!([1])] {
        raw.request(json!({"op":"ping","id":bad}), b"");
        let r = raw.recv();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(!r.header.contains_key("id"), "{r:?}");
    }
    // Still usable, and replies with no body leave `size` out.
    raw.request(json!({"op":"ping","id":9}), b"");
    let r = raw.recv();
    assert_eq!((r.status(), r.id()), (200, Some(9)));
    assert!(!r.header.contains_key("size"));
    assert!(!r.header.contains_key("error"));
}

#[test]
fn ops_without_body_drop_one_they_are_sent() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    raw.request(json!({"op":"ping","id":1}), &[7u8; 5000]);
    raw.request(json!({"op":"echo","id":2}), b"after");
    let r = raw.recv();
    assert_eq!((r.status(), r.id(), r.body.len()), (200, Some(1), 0));
    let r = raw.recv();
    assert_eq!((r.id(), r.body.as_slice()), (Some(2), &b"after"[..]));
}

#[test]
fn requests_without_id_get_replies_without_id() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    raw.request(json!({"op":"echo"}), b"x");
    let r = raw.recv();
    assert_eq!(r.status(), 200);
    assert!(!r.header.contains_key("id"));
    assert_eq!(r.header.get("size"), Some(&json!(1)));
}

#[test]
fn unknown_header_keys_are_ignored() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    raw.send(
        r#"{"op":"echo","id":1,"size":2,"x":{"deep":[1,2,{"a":null}]},"y":"\u00e9"}"#,
        b"ok",
    );
    let r = raw.recv();
    assert_eq!((r.status(), r.body.as_slice()), (200, &b"ok"[..]));
}

#[test]
fn oversized_body_is_413_and_discarded() {
    let server = Server::start(&["--max-body", "1000"]);
    let mut raw = server.raw_authed();
    raw.request(json!({"op":"echo","id":1}), &[b'a'; 1000]);
    let r = raw.recv();
    assert_eq!((r.status(), r.body.len()), (200, 1000));
    raw.request(json!({"op":"upper","id":2}), &[b'b'; 50_000]);
    let r = raw.recv();
    assert_eq!((r.status(), r.id()), (413, Some(2)));
    raw.request(json!({"op":"echo","id":3}), b"still here");
    let r = raw.recv();
    assert_eq!(
        (r.status(), r.id(), r.body.as_slice()),
        (200, Some(3), &b"still here"[..])
    );
}

#[test]
fn sixteen_mib_body_at_the_default_limit() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let body: Vec<u8> = (0..16 * 1024 * 1024)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let r = client.request("echo", json!({}), &body).unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.body == body);
    let mut over = body;
    over.push(0);
    let r = client.request("echo", json!({}), &over).unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        client.request("ping", json!({}), b"").unwrap().status(),
        200
    );
}

#[test]
fn pipelined_requests_of_mixed_ops_keep_order() {
    let server = Server::start(&[]);
    let mut client = server.client();
    let mut ids = Vec::new();
    for i in 0..50 {
        let id = match i % 4 {
            0 => client.send("ping", json!({}), b"").unwrap(),
            1 => client.send("echo", json!({}), b"e").unwrap(),
            2 => client.send("nope", json!({}), b"").unwrap(),
            _ => client.send("time", json!({}), b"").unwrap(),
        };
        ids.push(id);
    }
    for id in ids {
        assert_eq!(client.read_reply().unwrap().id(), Some(id));
    }
}

#[test]
fn thousands_of_empty_replies_pipelined_keep_the_connection() {
    // Regression: an output chunk filled exactly to its limit followed by an
    // empty body once made the next write fail and the server hang up.
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    let frame = encode_frame(br#"{"op":"echo"}"#, b"");
    let n = 6000;
    raw.send_bytes(&frame.repeat(n));
    for _ in 0..n {
        assert_eq!(raw.recv().status(), 200);
    }
    raw.request(json!({"op":"ping","id":1}), b"");
    assert_eq!(raw.recv().id(), Some(1));
}

#[test]
fn error_replies_stay_within_max_header() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    let op = "\\\"".repeat(30_000);
    raw.send(&format!(r#"{{"op":"{op}","id":1}}"#), b"");
    let r = raw.recv();
    assert_eq!((r.status(), r.id()), (400, Some(1)));
    assert!(
        r.error().unwrap().len() < 200,
        "{}",
        r.error().unwrap().len()
    );
}

#[test]
fn duplicate_keys_take_the_last_value() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed();
    raw.send(
        r#"{"op":"nope","op":"echo","id":3,"id":4,"size":9,"size":2}"#,
        b"hi",
    );
    let r = raw.recv();
    assert_eq!(
        (r.status(), r.id(), r.body.as_slice()),
        (200, Some(4), &b"hi"[..])
    );
}
