//! Contract section 3 from outside: hello, mutual HMAC auth, every failure mode,
//! pre-auth limits, auth timeout, --no-auth, the users file and keygen.

mod common;

use common::Server;
use frameloop::auth::{self, Users};
use frameloop::client::{Client, Credentials};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const FAIL: &str = "authentication failed";

#[test]
fn hello_has_the_contract_fields() {
    let server = Server::start(&[]);
    let (_raw, hello) = server.raw();
    assert!(hello.is_push());
    assert_eq!(hello.op(), Some("hello"));
    assert_eq!(hello.header["proto"], json!(1));
    assert!(hello.str("server").unwrap().starts_with("frameloop/"));
    assert_eq!(hello.str("auth"), Some("hmac-sha256"));
    let nonce = hello.str("nonce").unwrap();
    assert_eq!(nonce.len(), 64);
    assert!(
        nonce
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(hello.header["max_header"], json!(65536));
    assert_eq!(hello.header["max_body"], json!(16777216));
    // Fresh per connection.
    let (_raw2, hello2) = server.raw();
    assert_ne!(hello2.str("nonce"), Some(nonce));
}

#[test]
fn mutual_auth_succeeds_and_server_proves_the_key() {
    let server = Server::start(&[]);
    let mut raw = server.raw_authed(); // checks server_mac inside
    raw.request(json!({"op":"ping","id":1}), b"");
    assert_eq!(raw.recv().status(), 200);
    // The client library refuses a server that cannot prove the key: a server
    // with a different users file for the same name.
    let other = Server::start(&[]);
    let creds = Credentials::Key {
        user: "guest".into(),
        key: server.key(),
    };
    let err = Client::connect(other.addr, &creds)
        .err()
        .expect("must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
}

/// Sends an auth request built from `fields` and expects 401 with the one text, then a close.
fn refused(server: &Server, fields: impl FnOnce(&str) -> serde_json::Value) {
    let (mut raw, hello) = server.raw();
    let header = fields(hello.str("nonce").unwrap());
    raw.request(header.clone(), b"");
    let reply = raw.recv();
    assert_eq!(reply.status(), 401, "{header}");
    assert_eq!(reply.error(), Some(FAIL));
    raw.expect_closed();
}

#[test]
fn every_auth_failure_is_the_same_401_then_close() {
    let server = Server::start(&[]);
    let key = server.key();
    let cnonce = [3u8; 32];
    let mac_for = |nonce_hex: &str, user: &str, key: &[u8; 32]| {
        let nonce = auth::hex32(nonce_hex).unwrap();
        hex::encode(auth::client_mac(key, &nonce, &cnonce, user))
    };
    let c = hex::encode(cnonce);
    // Wrong key.
    refused(
        &server,
        |n| json!({"op":"auth","user":"guest","cnonce":c,"mac":mac_for(n,"guest",&[1;32])}),
    );
    // Unknown user (with a MAC made for it).
    refused(
        &server,
        |n| json!({"op":"auth","user":"mallory","cnonce":c,"mac":mac_for(n,"mallory",&key)}),
    );
    // MAC for another user name.
    refused(
        &server,
        |n| json!({"op":"auth","user":"guest","cnonce":c,"mac":mac_for(n,"guest2",&key)}),
    );
    // Bad hex, wrong lengths.
    refused(
        &server,
        |_| json!({"op":"auth","user":"guest","cnonce":c,"mac":"zz".repeat(32)}),
    );
    refused(
        &server,
        |n| json!({"op":"auth","user":"guest","cnonce":&c[..62],"mac":mac_for(n,"guest",&key)}),
    );
    refused(
        &server,
        |n| json!({"op":"auth","user":"guest","cnonce":c,"mac":&mac_for(n,"guest",&key)[..62]}),
    );
    // Missing and mistyped fields.
    refused(&server, |_| json!({"op":"auth","user":"guest"}));
    refused(
        &server,
        |n| json!({"op":"auth","user":5,"cnonce":c,"mac":mac_for(n,"guest",&key)}),
    );
    // A MAC over another connection's nonce (replay).
    refused(
        &server,
        |_| json!({"op":"auth","user":"guest","cnonce":c,"mac":mac_for(&"00".repeat(32),"guest",&key)}),
    );
    assert!(server.stats()["auth_failures"].as_u64().unwrap() >= 9);
}

#[test]
fn uppercase_hex_is_accepted() {
    let server = Server::start(&[]);
    let key = server.key();
    let (mut raw, hello) = server.raw();
    let nonce = auth::hex32(hello.str("nonce").unwrap()).unwrap();
    let cnonce = [0xab; 32];
    let mac = hex::encode_upper(auth::client_mac(&key, &nonce, &cnonce, "guest"));
    raw.request(
        json!({"op":"auth","id":4,"user":"guest","cnonce":hex::encode_upper(cnonce),"mac":mac}),
        b"",
    );
    let r = raw.recv();
    assert_eq!(
        (r.status(), r.id(), r.str("user")),
        (200, Some(4), Some("guest"))
    );
    let mac = r.str("mac").unwrap();
    assert_eq!(mac, mac.to_lowercase());
}

#[test]
fn any_other_op_before_auth_is_401_then_close() {
    let server = Server::start(&[]);
    for op in ["ping", "echo", "stats", "nope"] {
        let (mut raw, _) = server.raw();
        raw.request(json!({"op":op,"id":1}), b"");
        let r = raw.recv();
        assert_eq!((r.status(), r.id()), (401, Some(1)), "{op}");
        raw.expect_closed();
    }
}

#[test]
fn pre_auth_limits_are_tighter() {
    let server = Server::start(&[]);
    // A header over 4096 bytes: 431.
    let (mut raw, _) = server.raw();
    raw.send(
        &format!(r#"{{"op":"auth","pad":"{}"}}"#, "x".repeat(4100)),
        b"",
    );
    assert_eq!(raw.recv().status(), 431);
    raw.expect_closed();
    // A body: 400.
    let (mut raw, _) = server.raw();
    raw.request(json!({"op":"auth","user":"guest"}), b"body");
    assert_eq!(raw.recv().status(), 400);
    raw.expect_closed();
}

#[test]
fn auth_timeout_says_bye_then_closes() {
    let server = Server::start(&["--auth-timeout", "0.3"]);
    let (mut raw, _) = server.raw();
    let start = Instant::now();
    let bye = raw.recv();
    assert_eq!(
        (bye.op(), bye.str("reason")),
        (Some("bye"), Some("auth timeout"))
    );
    assert!(bye.is_push());
    raw.expect_closed();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn authenticated_connections_do_not_hit_the_auth_timeout() {
    let server = Server::start(&["--auth-timeout", "0.2"]);
    let mut client = server.client();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        client.request("ping", json!({}), b"").unwrap().status(),
        200
    );
}

#[test]
fn no_auth_serves_at_once_as_anonymous() {
    let server = Server::start(&["--no-auth"]);
    let (mut raw, hello) = server.raw();
    assert_eq!(hello.str("auth"), Some("none"));
    assert!(!hello.header.contains_key("nonce"));
    raw.request(json!({"op":"echo","id":1}), b"hi");
    assert_eq!(raw.recv().body, b"hi");
    let c = Client::connect(server.addr, &Credentials::Anonymous).unwrap();
    assert_eq!(c.user, "anonymous");
    assert!(!server.dir.path().join("users").exists());
}

#[test]
fn first_start_creates_a_private_users_file_with_guest() {
    let server = Server::start(&[]);
    let path = server.dir.path().join("users");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let users = Users::load(&path).unwrap();
    assert_eq!(users.len(), 1);
    assert!(users.key("guest").is_some());
    assert!(
        server.log().contains(&path.display().to_string()),
        "log says where"
    );
}

#[test]
fn users_file_from_keygen_with_comments() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["keygen", "alice.b-2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let users_path = dir.path().join("my-users");
    std::fs::write(
        &users_path,
        format!("# team\n\n   # indented comment\n{line}"),
    )
    .unwrap();
    let users = Users::load(&users_path).unwrap();
    let key = *users.key("alice.b-2").unwrap();
    let server = Server::start(&["--users", users_path.to_str().unwrap()]);
    let creds = Credentials::Key {
        user: "alice.b-2".into(),
        key,
    };
    let mut c = Client::connect(server.addr, &creds).unwrap();
    assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
    // keygen refuses bad names.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["keygen", "no/slash"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn auth_after_auth_is_a_plain_400() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let r = c.request("auth", json!({"user":"guest"}), b"").unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
}
