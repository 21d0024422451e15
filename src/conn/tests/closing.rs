//! Closing: peer EOF, draining, flush timeout, the 503 over max-conns.

use super::*;

#[test]
fn peer_eof_sends_what_is_owed_then_closes_without_draining() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    conn.receive(&mut w.services, Some(&echo(9, b"last")), w.t0);
    conn.peer_closed(&mut w.services, w.t0);
    assert_eq!(conn.state(), State::Flushing { drain: false });
    assert_eq!(conn.close_reason(), "peer closed");
    let (replies, shut) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(replies[0].body, b"last");
    assert!(!shut);
    assert!(conn.is_closed());
}

#[test]
fn peer_eof_mid_frame_is_named() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    conn.receive(&mut w.services, Some(&echo(1, b"abc")[..6]), w.t0);
    conn.peer_closed(&mut w.services, w.t0);
    assert_eq!(conn.close_reason(), "peer closed mid-frame");
}

#[test]
fn draining_ends_at_peer_eof_or_its_time_limit() {
    let mut w = world(false);
    for by_eof in [true, false] {
        let mut conn = logged_in(&mut w, 0);
        conn.close_politely(&mut w.services, "test", Some("bye now"), w.t0);
        let (frames, shut) = write_all(&mut w.services, &mut conn, w.t0);
        assert_eq!(frames[0].str("reason"), Some("bye now"));
        assert!(shut);
        assert_eq!(conn.deadline(), Some(w.t0 + tuning::DRAIN_LIMIT));
        if by_eof {
            conn.peer_closed(&mut w.services, w.t0);
        } else {
            conn.timer(&mut w.services, w.t0 + tuning::DRAIN_LIMIT);
        }
        assert!(conn.is_closed());
        assert_eq!(conn.close_reason(), "test");
    }
}

#[test]
fn a_flush_that_takes_too_long_closes_at_once() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let t1 = w.t0 + Duration::from_secs(1);
    conn.receive(&mut w.services, Some(&echo(1, b"never read")), t1);
    conn.close_politely(&mut w.services, "idle timeout", None, t1);
    assert_eq!(conn.deadline(), Some(t1 + tuning::FLUSH_LIMIT));
    conn.timer(&mut w.services, t1 + tuning::FLUSH_LIMIT);
    assert!(conn.is_closed());
    assert_eq!(
        conn.close_reason(),
        "idle timeout",
        "the first reason is kept"
    );
    assert!(!conn.wants_write(), "a closed connection writes nothing");
}

#[test]
fn over_max_conns_a_503_and_a_close() {
    let mut w = world(false);
    let mut conn = Conn::open(&mut w.services, rules(MAX_OUT), 0, 0, false, None, w.t0);
    assert_eq!(conn.state(), State::Flushing { drain: true });
    let (frames, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(frames.len(), 1, "no hello");
    assert_eq!(frames[0].status(), 503);
}
