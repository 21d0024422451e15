//! Unit tests of the connection machine, driven with no socket: bytes in (split
//! every way), `now` moved by hand, output taken as the server would write it.

use super::*;
use crate::auth::{self, Users};
use crate::client::{Frame, read_frame};
use crate::config::Config;
use crate::proto::encode_frame;
use crate::service::Next;
use std::rc::Rc;
use tempfile::TempDir;

const KEY: [u8; 32] = [7; 32];
const IDLE: Duration = Duration::from_secs(10);
const AUTH: Duration = Duration::from_secs(5);
const MAX_OUT: usize = 64 * 1024;

struct World {
    _dir: TempDir,
    services: Services,
    t0: Instant,
}

fn world(no_auth: bool) -> World {
    world_with(|config| config.no_auth = no_auth)
}

/// A world whose server settings `configure` changes (exec, quota).
fn world_with(configure: impl FnOnce(&mut Config)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        users_file: dir.path().join("users"),
        ..Config::default()
    };
    configure(&mut config);
    let users = Users::parse(&format!("guest {}\n", hex::encode(KEY))).unwrap();
    let t0 = Instant::now();
    World {
        services: Services::new(users, &config, t0).unwrap(),
        _dir: dir,
        t0,
    }
}

fn rules(max_outbuf: usize) -> Rules {
    Rules {
        idle_timeout: IDLE,
        auth_timeout: AUTH,
        max_outbuf,
    }
}

fn open(w: &mut World, key: usize) -> Conn {
    Conn::open(&mut w.services, rules(MAX_OUT), key, key, true, w.t0)
}

/// Writes all of the output as the server would, and tells the machine.
/// Returns the frames written and whether it asked for the write side to shut.
fn write_all(services: &mut Services, conn: &mut Conn, now: Instant) -> (Vec<Frame>, bool) {
    let mut mem = Vec::new();
    let done = conn.out.write_to(&mut mem, usize::MAX).unwrap();
    conn.written(services, done.bytes, now);
    let shut = conn.take_shutdown();
    let mut frames = Vec::new();
    let mut rest = mem.as_slice();
    while !rest.is_empty() {
        frames.push(read_frame(&mut rest).unwrap());
    }
    (frames, shut)
}

fn frame(header: &str, body: &[u8]) -> Vec<u8> {
    encode_frame(header.as_bytes(), body)
}

/// The `auth` frame answering `hello`.
fn auth_frame(hello: &Frame) -> Vec<u8> {
    let nonce = auth::hex32(hello.str("nonce").unwrap()).unwrap();
    let cnonce = [1; 32];
    let mac = auth::client_mac(&KEY, &nonce, &cnonce, "guest");
    let head = format!(
        r#"{{"op":"auth","id":1,"user":"guest","cnonce":"{}","mac":"{}"}}"#,
        hex::encode(cnonce),
        hex::encode(mac)
    );
    frame(&head, b"")
}

/// A connection logged in as guest, its output written.
fn logged_in(w: &mut World, key: usize) -> Conn {
    let mut conn = open(w, key);
    let (hello, _) = write_all(&mut w.services, &mut conn, w.t0);
    let login = auth_frame(&hello[0]);
    assert_eq!(
        conn.receive(&mut w.services, Some(&login), w.t0),
        login.len()
    );
    let (replies, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(replies[0].status(), 200);
    assert_eq!(conn.state(), State::Serving);
    assert_eq!(conn.out.take_frames(), 2, "hello and the auth reply");
    conn
}

fn echo(id: u64, body: &[u8]) -> Vec<u8> {
    frame(
        &format!(r#"{{"op":"echo","id":{id},"size":{}}}"#, body.len()),
        body,
    )
}

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
    let mut conn = Conn::open(&mut w.services, rules(MAX_OUT), 0, 0, false, w.t0);
    assert_eq!(conn.state(), State::Flushing { drain: true });
    let (frames, _) = write_all(&mut w.services, &mut conn, w.t0);
    assert_eq!(frames.len(), 1, "no hello");
    assert_eq!(frames[0].status(), 503);
}

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
