//! Contract section 4 from outside: ping, echo, upper, stamp, time, stats.

mod common;

use common::Server;
use serde_json::json;

#[test]
fn ping_echo_upper() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let r = c.request("ping", json!({}), b"").unwrap();
    assert_eq!((r.status(), r.body.len()), (200, 0));
    let bin: Vec<u8> = (0..=255).collect();
    assert_eq!(c.request("echo", json!({}), &bin).unwrap().body, bin);
    assert_eq!(c.request("echo", json!({}), b"").unwrap().body, b"");
    let r = c
        .request("upper", json!({}), "héllo wörld z{~\u{0}".as_bytes())
        .unwrap();
    assert_eq!(r.body, "HéLLO WöRLD Z{~\u{0}".as_bytes());
    let mut want = bin.clone();
    want.make_ascii_uppercase();
    assert_eq!(c.request("upper", json!({}), &bin).unwrap().body, want);
}

#[test]
fn stamp_prefixes_ctime_local_time() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let r = c.request("stamp", json!({}), b"hi there").unwrap();
    let text = String::from_utf8(r.body).unwrap();
    // "[Sun Nov 22 03:58:07 2026] hi there"
    assert!(
        text.starts_with('[') && text.ends_with("] hi there"),
        "{text}"
    );
    let inner = &text[1..text.len() - "] hi there".len()];
    let parsed = chrono::NaiveDateTime::parse_from_str(inner, "%a %b %e %H:%M:%S %Y");
    assert!(parsed.is_ok(), "{inner:?}");
    let now = chrono::Local::now().naive_local();
    assert!((now - parsed.unwrap()).num_seconds().abs() < 5);
}

#[test]
fn time_default_custom_and_bad_formats() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let r = c.request("time", json!({}), b"").unwrap();
    let text = String::from_utf8(r.body).unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S").is_ok(),
        "{text}"
    );
    let r = c.request("time", json!({"format":"%Y!"}), b"").unwrap();
    assert_eq!(
        r.body,
        format!("{}!", chrono::Local::now().format("%Y")).as_bytes()
    );
    for bad in ["%", "%Q", "abc%E"] {
        let r = c.request("time", json!({"format":bad}), b"").unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = c
        .request("time", json!({"format":"a".repeat(257)}), b"")
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        c.request("time", json!({"format":"a".repeat(256)}), b"")
            .unwrap()
            .status(),
        200
    );
    let r = c.request("time", json!({"format":7}), b"").unwrap();
    assert_eq!(r.status(), 400);
    // Still fine after all that.
    assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
}

#[test]
fn stats_has_every_counter_and_they_move() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.request("echo", json!({}), b"12345").unwrap();
    c.request("echo", json!({}), b"12345").unwrap();
    let r = c.request("stats", json!({}), b"").unwrap();
    let s: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    for key in [
        "uptime_s",
        "conns_open",
        "conns_total",
        "frames_in",
        "frames_out",
        "bytes_in",
        "bytes_out",
        "auth_failures",
        "protocol_errors",
        "udp_in",
        "udp_dropped",
    ] {
        assert!(s[key].is_u64(), "{key} in {s}");
    }
    assert_eq!(s["conns_open"], json!(1));
    assert_eq!(s["ops"]["echo"], json!(2));
    assert_eq!(s["ops"]["stats"], json!(1));
    assert!(s["frames_in"].as_u64().unwrap() >= 4); // auth, 2 echo, stats
    assert!(s["bytes_in"].as_u64().unwrap() > 10);
    let s2: serde_json::Value =
        serde_json::from_slice(&c.request("stats", json!({}), b"").unwrap().body).unwrap();
    assert!(s2["bytes_out"].as_u64() > s["bytes_out"].as_u64());
}
