//! Behind a proxy: nothing is said until the PROXY header is read; a bad
//! header, none in time or a shutdown close it without a word.

use super::*;

fn await_proxy(w: &mut World) -> Conn {
    Conn::await_proxy(&mut w.services, rules(MAX_OUT), 0, 0, None, w.t0)
}

#[test]
fn the_hello_waits_for_the_header() {
    let mut w = world(false);
    let mut conn = await_proxy(&mut w);
    assert_eq!(conn.reading(), Reading::Proxy);
    assert!(!conn.wants_write(), "nothing before the header");
    let line = b"PROXY TCP4 10.9.8.7 127.0.0.1 4000 7878\r\n";
    let mut input = line.to_vec();
    input.extend_from_slice(&frame(r#"{"op":"ping"}"#, b""));
    for cut in 0..line.len() {
        assert_eq!(
            conn.proxy_header(&mut w.services, &input[..cut], w.t0),
            None
        );
        assert_eq!(conn.state(), State::Proxy);
    }
    let (len, source) = conn
        .proxy_header(&mut w.services, &input, w.t0)
        .expect("a header");
    assert_eq!(len, line.len(), "only the header is taken");
    assert_eq!(source, Some("10.9.8.7:4000".parse().unwrap()));
    conn.greet(&mut w.services, true);
    assert_eq!(conn.state(), State::Greeting);
    let (frames, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(frames[0].str("op"), Some("hello"));
}

#[test]
fn refused_after_the_header_gets_503() {
    let mut w = world(false);
    let mut conn = await_proxy(&mut w);
    conn.greet(&mut w.services, false);
    let (frames, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(frames.len(), 1, "no hello");
    assert_eq!(frames[0].status(), 503);
}

#[test]
fn no_header_closes_without_a_word() {
    let mut w = world(false);
    // Frames where the header should be.
    let mut conn = await_proxy(&mut w);
    let ping = frame(r#"{"op":"ping"}"#, b"");
    assert_eq!(conn.proxy_header(&mut w.services, &ping, w.t0), None);
    assert!(conn.is_closed());
    assert_eq!(conn.close_reason(), "bad PROXY header");
    assert!(conn.out.is_empty());
    // Nothing in time.
    let mut conn = await_proxy(&mut w);
    assert_eq!(conn.deadline(), Some(w.t0 + AUTH));
    conn.timer(&mut w.services, w.t0 + AUTH);
    assert!(conn.is_closed());
    assert!(conn.out.is_empty());
    // A shutdown, and the peer leaving.
    let mut conn = await_proxy(&mut w);
    conn.close_politely(&mut w.services, "shutdown", Some("shutdown"), w.t0);
    assert!(conn.is_closed() && conn.out.is_empty());
    let mut conn = await_proxy(&mut w);
    conn.peer_closed(&mut w.services, w.t0);
    assert!(conn.is_closed());
}
