//! Chat pushes: who gets them, slow consumers, the push budget, leaving rooms.

use super::*;

#[test]
fn pushes_are_queued_only_while_serving() {
    let mut w = world(false);
    let frame: Rc<[u8]> = Rc::from(&b"push"[..]);
    let mut greeting = open(&mut w, 0);
    assert_eq!(greeting.push(&mut w.services, &frame), Pushed::Skipped);
    let mut conn = logged_in(&mut w, 1);
    assert_eq!(conn.push(&mut w.services, &frame), Pushed::Queued);
    assert_eq!(conn.out.take_frames(), 1);
    conn.close_politely(&mut w.services, "test", None, w.t0);
    assert_eq!(conn.push(&mut w.services, &frame), Pushed::Skipped);
}

#[test]
fn a_member_over_the_limit_is_a_slow_consumer() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let big: Rc<[u8]> = Rc::from(vec![0u8; MAX_OUT + 1]);
    assert_eq!(conn.push(&mut w.services, &big), Pushed::Queued);
    assert_eq!(conn.push(&mut w.services, &big), Pushed::SlowConsumer);
    assert_eq!(conn.close_reason(), "slow consumer");
    assert_eq!(conn.state(), State::Flushing { drain: true });
}

#[test]
fn a_frame_that_queues_chat_pushes_stops_decoding_until_they_are_carried_out() {
    let mut w = world(false);
    let mut alice = logged_in(&mut w, 0);
    let mut bob = logged_in(&mut w, 1);
    let join = frame(r#"{"op":"join","room":"r"}"#, b"");
    bob.receive(&mut w.services, Some(&join), w.t0);
    let _ = w.services.take_pushes();
    let mut input = frame(r#"{"op":"join","id":1,"room":"r"}"#, b"");
    let first = input.len();
    input.extend(frame(r#"{"op":"ping","id":2}"#, b""));
    assert_eq!(alice.receive(&mut w.services, Some(&input), w.t0), first);
    assert!(w.services.has_pushes(), "bob hears alice joined");
    let pushes = w.services.take_pushes();
    w.services.return_pushes(pushes);
    let rest = &input[first..];
    assert_eq!(alice.receive(&mut w.services, Some(rest), w.t0), rest.len());
    let (replies, _) = write_all(&mut w.services, &mut alice, w.t0);
    assert_eq!(
        replies.iter().map(Frame::id).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
}

#[test]
fn a_sender_over_its_push_budget_pauses_until_its_output_is_written() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    conn.pause_for_pushes();
    assert_eq!(conn.state(), State::Paused(Pause::Pushes));
    assert_eq!(conn.receive(&mut w.services, Some(&echo(1, b"a")), w.t0), 0);
    write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(conn.state(), State::Serving);
    assert!(conn.take_revisit());
}

#[test]
fn closing_leaves_chat_rooms_and_drops_the_stash() {
    let mut w = world(false);
    let mut alice = logged_in(&mut w, 0);
    let mut bob = logged_in(&mut w, 1);
    for conn in [&mut alice, &mut bob] {
        conn.receive(
            &mut w.services,
            Some(&frame(r#"{"op":"join","room":"r"}"#, b"")),
            w.t0,
        );
    }
    let _ = w.services.take_pushes();
    alice.keep_input(b"stashed");
    alice.close(&mut w.services, "read error");
    assert!(!alice.has_stash());
    assert!(w.services.has_pushes(), "bob hears alice left");
    let mut to = Vec::new();
    let pushes = w.services.take_pushes();
    w.services.recipients(&pushes[0].to, &mut to);
    assert_eq!(to, [1]);
}
