//! Greeting, login, and requests split or glued every way.

use super::*;

#[test]
fn a_new_connection_is_greeted_and_waits_for_auth() {
    let mut w = world(false);
    let mut conn = open(&mut w, 0);
    assert_eq!(conn.state(), State::Greeting);
    assert_eq!(conn.reading(), Reading::Requests);
    assert!(conn.wants_write());
    assert_eq!(conn.deadline(), Some(w.t0 + AUTH));
    let (frames, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].op(), Some("hello"));
    assert_eq!(frames[0].str("auth"), Some("hmac-sha256"));
    assert!(!conn.wants_write());
}

#[test]
fn with_no_auth_it_serves_at_once() {
    let mut w = world(true);
    let mut conn = open(&mut w, 0);
    assert_eq!(conn.state(), State::Serving);
    assert_eq!(conn.user(), Some("anonymous"));
    assert_eq!(conn.deadline(), Some(w.t0 + IDLE));
    let (frames, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(frames[0].str("auth"), Some("none"));
}

#[test]
fn login_and_a_request_split_at_every_byte() {
    let mut w = world(false);
    for cut in 0..=200 {
        let mut conn = open(&mut w, 1);
        let (hello, _) = write_all(&mut w.services, &mut conn, w.t0);
        let mut input = auth_frame(&hello[0]);
        input.extend(frame(r#"{"op":"ping","id":2}"#, b""));
        let cut = cut.min(input.len());
        let (a, b) = input.split_at(cut);
        assert_eq!(conn.receive(&mut w.services, Some(a), w.t0), a.len());
        assert_eq!(conn.receive(&mut w.services, Some(b), w.t0), b.len());
        let (replies, _) = write_all(&mut w.services, &mut conn, w.t0);
        let got: Vec<_> = replies.iter().map(|f| (f.status(), f.id())).collect();
        assert_eq!(got, [(200, Some(1)), (200, Some(2))], "cut at {cut}");
        assert_eq!(conn.user(), Some("guest"));
    }
}

#[test]
fn pipelined_frames_fed_one_byte_at_a_time_answer_in_order() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let mut input = Vec::new();
    for id in 0..20 {
        input.extend(echo(id, format!("body {id}").as_bytes()));
    }
    for byte in input.chunks(1) {
        assert_eq!(conn.receive(&mut w.services, Some(byte), w.t0), 1);
    }
    let (replies, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(replies.len(), 20);
    for (id, reply) in replies.iter().enumerate() {
        assert_eq!(reply.id(), Some(id as u64));
        assert_eq!(reply.body, format!("body {id}").as_bytes());
    }
}

#[test]
fn many_frames_in_one_buffer_are_all_served() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let input: Vec<u8> = (0..100).flat_map(|id| echo(id, b"x")).collect();
    assert_eq!(
        conn.receive(&mut w.services, Some(&input), w.t0),
        input.len()
    );
    assert_eq!(conn.out.take_frames(), 100, "every reply counted once");
    let (replies, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(replies.len(), 100);
}

#[test]
fn a_request_before_auth_gets_401_and_a_polite_close() {
    let mut w = world(false);
    let mut conn = open(&mut w, 0);
    write_all(&mut w.services, &mut conn, w.t0);
    let input = frame(r#"{"op":"ping","id":3}"#, b"");
    assert_eq!(
        conn.receive(&mut w.services, Some(&input), w.t0),
        input.len()
    );
    assert_eq!(conn.state(), State::Flushing { drain: true });
    assert_eq!(conn.reading(), Reading::Not);
    assert_eq!(conn.close_reason(), "request before auth");
    let (replies, shut) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!((replies[0].status(), replies[0].id()), (401, Some(3)));
    assert!(shut, "all sent: shut down the write side");
    assert_eq!(conn.state(), State::Draining);
    assert_eq!(conn.reading(), Reading::Discard);
}

#[test]
fn a_wrong_mac_is_refused() {
    let mut w = world(false);
    let mut conn = open(&mut w, 0);
    write_all(&mut w.services, &mut conn, w.t0);
    let head = format!(
        r#"{{"op":"auth","user":"guest","cnonce":"{}","mac":"{}"}}"#,
        "00".repeat(32),
        "11".repeat(32)
    );
    conn.receive(&mut w.services, Some(&frame(&head, b"")), w.t0);
    let (replies, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(replies[0].status(), 401);
    assert_eq!(conn.user(), None);
    assert!(!conn.is_open());
}

#[test]
fn the_auth_timeout_says_bye() {
    let mut w = world(false);
    let mut conn = open(&mut w, 0);
    write_all(&mut w.services, &mut conn, w.t0);
    conn.timer(&mut w.services, w.t0 + AUTH - Duration::from_millis(1));
    assert_eq!(conn.state(), State::Greeting, "not due yet");
    conn.timer(&mut w.services, w.t0 + AUTH);
    let (frames, _) = write_all(&mut w.services, &mut conn, w.t0 + AUTH);
    assert_eq!(frames[0].op(), Some("bye"));
    assert_eq!(frames[0].str("reason"), Some("auth timeout"));
}

#[test]
fn under_a_quota_the_login_completes_once_the_walk_is_done() {
    let mut w = world_with(|config| config.quota = Some(1 << 20));
    let t0 = w.t0;
    let mut conn = open(&mut w, 0);
    let (hello, _) = write_all(&mut w.services, &mut conn, t0);
    let mut input = auth_frame(&hello[0]);
    let login_len = input.len();
    // A request with a body, which the pre-auth limits would refuse.
    input.extend(echo(2, &[b'e'; 1000]));
    assert_eq!(conn.receive(&mut w.services, Some(&input), t0), login_len);
    // The walk of the user's tree is blocking work (inline here): the login
    // reply is out, and the requests behind it wait for the walk.
    assert!(matches!(conn.state(), State::Working(_)));
    conn.keep_input(&input[login_len..]);
    conn.resume(&mut w.services, t0);
    assert_eq!(conn.state(), State::Serving);
    assert!(conn.take_revisit());
    conn.receive(&mut w.services, None, t0);
    let (replies, _) = write_all(&mut w.services, &mut conn, t0);
    let got: Vec<_> = replies.iter().map(|f| (f.id(), f.status())).collect();
    assert_eq!(got, [(Some(1), 200), (Some(2), 200)]);
    assert_eq!(replies[1].body.len(), 1000, "served under the open limits");
}
