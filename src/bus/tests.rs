//! The bus node against Redis's replies, written by hand.

use super::*;

fn node() -> Node {
    let url = Url::parse("redis://ann:pw@h:1").unwrap();
    let mut node = Node::new(&url, *b"aaaaaaaaaaaaaa00", 1 << 16);
    assert!(node.restart().is_empty());
    node
}

fn events(node: &mut Node, line: Line, bytes: &[u8]) -> Result<Vec<Event>, Malformed> {
    node.received(line, bytes);
    let mut all = Vec::new();
    while let Some(e) = node.next_event(line)? {
        all.push(e);
    }
    Ok(all)
}

fn up() -> Node {
    let mut n = node();
    assert_eq!(
        n.output(Line::Sub).as_slice(),
        b"*3\r\n$4\r\nAUTH\r\n$3\r\nann\r\n$2\r\npw\r\n"
    );
    assert_eq!(events(&mut n, Line::Sub, b"+OK\r\n"), Ok(vec![]));
    assert!(!n.is_up());
    assert_eq!(events(&mut n, Line::Pub, b"+OK\r\n"), Ok(vec![Event::Up]));
    assert!(n.is_up());
    n.output(Line::Sub).clear();
    n.output(Line::Pub).clear();
    n
}

#[test]
fn a_subscription_answers_its_ticket_and_messages_come_in() {
    let mut n = up();
    n.subscribe(Channel::Room("lobby"), Some(7));
    n.unsubscribe(Channel::User("bob"));
    assert_eq!(
        n.output(Line::Sub).as_slice(),
        &b"*2\r\n$9\r\nSUBSCRIBE\r\n$20\r\nframeloop:room:lobby\r\n\
           *2\r\n$11\r\nUNSUBSCRIBE\r\n$18\r\nframeloop:user:bob\r\n"[..]
    );
    let confirmations = b"*3\r\n$9\r\nsubscribe\r\n$20\r\nframeloop:room:lobby\r\n:1\r\n\
        *3\r\n$11\r\nunsubscribe\r\n$18\r\nframeloop:user:bob\r\n:0\r\n";
    assert_eq!(
        events(&mut n, Line::Sub, confirmations),
        Ok(vec![Event::Answer {
            ticket: 7,
            count: 1
        }])
    );
    let frame = msg(b"\0\r\n$3\r\n");
    let mut push = Vec::new();
    for (channel, origin) in [
        (&b"frameloop:room:lobby"[..], &b"bbbbbbbbbbbbbb01"[..]),
        (b"frameloop:user:bob", b"aaaaaaaaaaaaaa00"),
    ] {
        resp::command(
            &mut push,
            &[b"message", channel, &[origin, &frame].concat()],
        );
    }
    assert_eq!(
        events(&mut n, Line::Sub, &push),
        Ok(vec![Event::Message {
            room: true,
            name: "lobby".into(),
            frame: frame.into()
        }]),
        "binary-safe, and our own message skipped"
    );
}

/// A `msg` push frame with `body`.
fn msg(body: &[u8]) -> Vec<u8> {
    let head = format!(
        r#"{{"op":"msg","room":"lobby","from":"ann","size":{}}}"#,
        body.len()
    );
    crate::proto::encode_frame(head.as_bytes(), body)
}

#[test]
fn what_is_not_a_whole_push_frame_is_not_passed_on() {
    let good = msg(b"hello");
    let bad = [
        &good[..good.len() - 1],     // the body cut short
        &[&good[..], b"x"].concat(), // more than its size
        &encode(r#"{"op":"ping"}"#), // not a push chat makes
        &encode("not json"),
        &b"\0\0\0"[..],             // shorter than a length
        &b"\xff\xff\xff\xff{}"[..], // a length past the end
    ];
    for frame in bad {
        let mut n = up();
        let mut push = Vec::new();
        let payload = [&b"bbbbbbbbbbbbbb01"[..], frame].concat();
        resp::command(&mut push, &[b"message", b"frameloop:room:r", &payload]);
        assert_eq!(events(&mut n, Line::Sub, &push), Ok(vec![]), "{frame:?}");
    }
}

fn encode(head: &str) -> Vec<u8> {
    crate::proto::encode_frame(head.as_bytes(), b"")
}

#[test]
fn a_barrier_is_answered_after_what_came_before_it() {
    let mut n = up();
    n.barrier(9);
    assert_eq!(n.output(Line::Sub).as_slice(), b"*1\r\n$4\r\nPING\r\n");
    assert!(n.owes(Line::Sub) && !n.owes(Line::Pub));
    let answered = Ok(vec![Event::Answer {
        ticket: 9,
        count: 1,
    }]);
    assert_eq!(
        events(&mut n, Line::Sub, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        answered
    );
    n.barrier(9);
    assert_eq!(
        events(&mut n, Line::Sub, b"+PONG\r\n"),
        answered,
        "nothing subscribed"
    );
    assert!(!n.owes(Line::Sub));
}

#[test]
fn a_publish_carries_the_origin_and_its_count_answers() {
    let mut n = up();
    n.publish(Channel::User("bob"), b"f", Some(3));
    n.publish(Channel::Room("r"), b"g", None);
    let mut want = Vec::new();
    resp::command(
        &mut want,
        &[b"PUBLISH", b"frameloop:user:bob", b"aaaaaaaaaaaaaa00f"],
    );
    resp::command(
        &mut want,
        &[b"PUBLISH", b"frameloop:room:r", b"aaaaaaaaaaaaaa00g"],
    );
    assert_eq!(n.output(Line::Pub).as_slice(), want.as_slice());
    assert_eq!(
        events(&mut n, Line::Pub, b":0\r\n:2\r\n"),
        Ok(vec![Event::Answer {
            ticket: 3,
            count: 0
        }])
    );
    assert!(events(&mut n, Line::Pub, b":1\r\n").is_err(), "unasked");
}

#[test]
fn refusals_and_surprises_drop_the_connection() {
    let mut n = node();
    assert!(events(&mut n, Line::Sub, b"-WRONGPASS invalid\r\n").is_err());
    let mut n = up();
    n.publish(Channel::Room("r"), b"g", Some(1));
    assert!(events(&mut n, Line::Pub, b"-NOPERM no\r\n").is_err());
    assert_eq!(
        n.take_error().as_deref(),
        Some("NOPERM no"),
        "kept for the log"
    );
    assert!(events(&mut up(), Line::Sub, b":1\r\n").is_err());
    let mut short = Vec::new();
    resp::command(&mut short, &[b"message", b"frameloop:room:r", b"short"]);
    assert_eq!(events(&mut up(), Line::Sub, &short), Ok(vec![]), "dropped");
}

#[test]
fn a_restart_gives_back_the_tickets_still_waiting() {
    let mut n = up();
    n.subscribe(Channel::Room("a"), Some(1));
    n.publish(Channel::User("b"), b"x", Some(2));
    n.publish(Channel::User("b"), b"x", None);
    let mut lost = n.restart();
    lost.sort();
    assert_eq!(lost, [1, 2]);
    assert!(!n.is_up());
}

#[test]
fn origins_name_the_server_and_the_worker() {
    assert_eq!(&origin("0123456789abcdef", 10), b"0123456789abcd0a");
    assert_ne!(origin("0123456789abcdef", 1), origin("0123456789abcdef", 2));
}
