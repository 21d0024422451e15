//! Timers, backpressure, framing errors, and requests that run on (sum, exec).

use super::*;

#[test]
fn activity_moves_the_idle_deadline_and_an_early_timer_does_nothing() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let t1 = w.t0 + Duration::from_secs(4);
    conn.receive(&mut w.services, Some(&echo(1, b"a")), t1);
    assert_eq!(conn.deadline(), Some(t1 + IDLE));
    // The timer armed for the old deadline fires: nothing is due.
    conn.timer(&mut w.services, w.t0 + IDLE);
    assert_eq!(conn.state(), State::Serving);
    conn.timer(&mut w.services, t1 + IDLE);
    assert_eq!(conn.close_reason(), "idle timeout");
    let (frames, _) = write_all(&mut w.services, &mut conn, t1 + IDLE);
    assert_eq!(frames.last().unwrap().str("reason"), Some("idle timeout"));
}

#[test]
fn an_unfinished_header_does_not_count_as_activity() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let trickle = echo(1, b"abc");
    conn.receive(&mut w.services, Some(&trickle[..5]), w.t0 + IDLE / 2);
    assert_eq!(conn.deadline(), Some(w.t0 + IDLE));
}

#[test]
fn output_over_the_limit_pauses_reading_at_a_frame_boundary_and_resumes_below_half() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let body = vec![b'x'; MAX_OUT / 2 + 1];
    let input: Vec<u8> = (0..4).flat_map(|id| echo(id, &body)).collect();
    let used = conn.receive(&mut w.services, Some(&input), w.t0);
    assert_eq!(conn.state(), State::Paused(Pause::Output));
    assert_eq!(conn.reading(), Reading::Not);
    assert!(used < input.len(), "the frames behind wait");
    assert_eq!(
        used % echo(0, &body).len(),
        0,
        "stopped at a frame boundary"
    );
    conn.keep_input(&input[used..]);
    assert!(!conn.take_revisit());
    let (first, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(conn.state(), State::Serving);
    assert!(conn.take_revisit(), "bytes in the kernel raise no new edge");
    // The server revisits: the stash first.
    let mut replies = first;
    while conn.has_stash() || !conn.out.is_empty() {
        conn.receive(&mut w.services, None, w.t0);
        replies.extend(write_all(&mut w.services, &mut conn, w.t0).0);
    }
    let ids: Vec<_> = replies.iter().map(Frame::id).collect();
    assert_eq!(ids, [Some(0), Some(1), Some(2), Some(3)]);
}

#[test]
fn a_frame_in_hand_is_finished_before_pausing() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let body = vec![b'y'; MAX_OUT + 10];
    let input = echo(1, &body);
    // The header and part of the body: the body's rest still arrives while over the limit.
    let (a, b) = input.split_at(100);
    conn.receive(&mut w.services, Some(a), w.t0);
    assert_eq!(conn.receive(&mut w.services, Some(b), w.t0), b.len());
    assert_eq!(conn.state(), State::Paused(Pause::Output));
    let (replies, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(replies[0].body.len(), body.len());
}

#[test]
fn a_framing_error_replies_without_id_and_closes() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let input = frame("not json", b"");
    assert_eq!(
        conn.receive(&mut w.services, Some(&input), w.t0),
        input.len()
    );
    let (replies, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!((replies[0].status(), replies[0].id()), (400, None));
    assert_eq!(conn.close_reason(), "framing error");
}

#[test]
fn requests_behind_a_running_sum_wait_in_order() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    let data = vec![b'd'; 3 << 20];
    let put = frame(
        &format!(r#"{{"op":"put","id":1,"path":"f","size":{}}}"#, data.len()),
        &data,
    );
    conn.receive(&mut w.services, Some(&put), w.t0);
    // The upload's flushes (the file's, then its directory's after the rename)
    // are blocking work, done inline here (no pool threads); the reply follows.
    assert_eq!(conn.state(), State::Working(Wait::NextTurn));
    while matches!(conn.state(), State::Working(_)) {
        conn.resume(&mut w.services, w.t0);
    }
    assert_eq!(
        write_all(&mut w.services, &mut conn, w.t0).0[0].status(),
        200
    );
    let mut input = frame(r#"{"op":"sum","id":2,"path":"f"}"#, b"");
    let sum_len = input.len();
    input.extend(frame(r#"{"op":"ping","id":3}"#, b""));
    assert_eq!(conn.receive(&mut w.services, Some(&input), w.t0), sum_len);
    assert_eq!(conn.state(), State::Working(Wait::NextTurn));
    assert!(conn.take_revisit(), "a sum step needs a turn, not an event");
    assert_eq!(conn.reading(), Reading::Ahead(tuning::READ_AHEAD_MAX));
    conn.keep_input(&input[sum_len..]);
    assert_eq!(
        conn.reading(),
        Reading::Ahead(tuning::READ_AHEAD_MAX - (input.len() - sum_len))
    );
    let mut steps = 0;
    while matches!(conn.state(), State::Working(_)) {
        conn.resume(&mut w.services, w.t0);
        steps += 1;
        assert!(steps < 1000);
    }
    assert!(conn.take_revisit(), "the stash waits");
    conn.receive(&mut w.services, None, w.t0);
    let (replies, _) = write_all(&mut w.services, &mut conn, w.t0);
    let got: Vec<_> = replies.iter().map(|f| (f.id(), f.status())).collect();
    assert_eq!(got, [(Some(2), 200), (Some(3), 200)]);
    assert_eq!(replies[0].str("sha256").map(str::len), Some(64));
}

#[test]
fn read_ahead_is_bounded_while_working() {
    let mut w = world(false);
    let mut conn = logged_in(&mut w, 0);
    conn.answered(&mut w.services, Next::Job(Wait::NextTurn));
    conn.keep_input(&vec![0; tuning::READ_AHEAD_MAX]);
    assert_eq!(conn.reading(), Reading::Not);
}

#[test]
fn an_exec_timeout_holds_while_a_chatty_child_keeps_it_working() {
    let mut w = world_with(|config| {
        config.allow_exec =
            crate::service::exec::Allowlist::resolve(&["yes".to_string()], "/usr/bin:/bin")
                .unwrap();
        config.exec_timeout = Duration::from_millis(300);
    });
    let t0 = w.t0;
    let mut conn = logged_in(&mut w, 0);
    let exec = frame(r#"{"op":"exec","id":5,"cmd":"yes"}"#, b"");
    conn.receive(&mut w.services, Some(&exec), t0);
    assert_eq!(conn.state(), State::Working(Wait::Child));
    assert!(
        conn.take_watch()
            .is_some_and(|fds| fds.iter().all(|fd| *fd >= 0))
    );
    assert!(conn.take_watch().is_none(), "handed over once");
    let due = conn.deadline().unwrap();
    assert!(due <= Instant::now() + Duration::from_millis(300) && due > t0);
    // A step that spends its read budget (a child writing flat out) asks for
    // the next turn instead of an event; the exec's deadline still holds.
    conn.answered(&mut w.services, Next::Job(Wait::NextTurn));
    assert_eq!(conn.state(), State::Working(Wait::NextTurn));
    assert_eq!(conn.deadline(), Some(due));
    conn.timer(&mut w.services, due);
    assert_eq!(
        conn.deadline(),
        Some(due + IDLE),
        "killed: the idle timeout again"
    );
    let start = Instant::now();
    while matches!(conn.state(), State::Working(_)) {
        conn.resume(&mut w.services, due);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the killed child is reaped"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let (replies, _) = write_all(&mut w.services, &mut conn, due);
    assert_eq!(replies[0].id(), Some(5));
    assert_eq!(replies[0].header["timed_out"], serde_json::json!(true));
}
