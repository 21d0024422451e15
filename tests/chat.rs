//! Chat (contract section 7) from outside: real server, real sockets, several
//! users; every push checked field by field; refusals; leaving on close; a member
//! that never reads is disconnected while the others get every message in order.

mod common;

use common::{Raw, Server};
use frameloop::auth::Key;
use frameloop::client::{Client, Credentials, Frame};
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpStream};

const USERS: [(&str, u8); 4] = [("guest", 1), ("alice", 2), ("bob", 3), ("carol", 4)];

fn key_of(user: &str) -> Key {
    let (_, k) = USERS.iter().find(|(u, _)| *u == user).expect("known user");
    [*k; 32]
}

/// A server whose users file holds guest, alice, bob and carol.
fn start(args: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = USERS
        .iter()
        .map(|(u, _)| format!("{u} {}\n", hex::encode(key_of(u))))
        .collect();
    std::fs::write(dir.path().join("users"), lines).unwrap();
    Server::start_in(dir, "127.0.0.1:0", args)
}

fn connect(server: &Server, user: &str) -> Client {
    let creds = Credentials::Key {
        user: user.into(),
        key: key_of(user),
    };
    Client::connect(server.addr, &creds).expect("connect")
}

/// A request that must succeed.
fn ok(c: &mut Client, op: &str, fields: Value, body: &[u8]) {
    let r = c.request(op, fields, body).unwrap();
    assert_eq!(r.status(), 200, "{op}: {r:?}");
    assert!(r.body.is_empty());
}

/// A request that must be refused with `status`; returns the error text.
fn refused(c: &mut Client, op: &str, fields: Value, body: &[u8], status: u64) -> String {
    let r = c.request(op, fields, body).unwrap();
    assert_eq!(r.status(), status, "{op}: {r:?}");
    r.error().expect("an error text").to_string()
}

fn join(c: &mut Client, room: &str) {
    ok(c, "join", json!({ "room": room }), b"");
}

fn say(c: &mut Client, room: &str, text: &[u8]) {
    ok(c, "say", json!({ "room": room }), text);
}

/// The next push, as its whole header (so every field is checked) and body.
fn push(c: &mut Client) -> (Value, Vec<u8>) {
    let f: Frame = c.next_push().expect("a push");
    assert!(f.is_push(), "{f:?}");
    (Value::Object(f.header), f.body)
}

fn expect_push(c: &mut Client, header: Value, body: &[u8]) {
    let (h, b) = push(c);
    assert_eq!(h, header);
    assert_eq!(b, body);
}

/// Asserts no push is waiting: a ping's reply comes first (a push queued for this
/// connection before the ping would arrive before its reply).
fn quiet(c: &mut Client) {
    ok(c, "ping", json!({}), b"");
    assert_eq!(c.queued_pushes(), 0, "unexpected push: {:?}", c.next_push());
}

fn joined(room: &str, user: &str) -> Value {
    json!({"op": "joined", "room": room, "user": user})
}

fn left(room: &str, user: &str) -> Value {
    json!({"op": "left", "room": room, "user": user})
}

fn msg(room: &str, from: &str, size: usize) -> Value {
    json!({"op": "msg", "room": room, "from": from, "size": size})
}

#[test]
fn two_clients_join_say_leave() {
    let server = start(&[]);
    let mut alice = connect(&server, "alice");
    let mut bob = connect(&server, "bob");
    join(&mut alice, "lobby");
    join(&mut bob, "lobby");
    expect_push(&mut alice, joined("lobby", "bob"), b"");
    quiet(&mut bob); // the joiner hears nothing of its own join

    say(&mut bob, "lobby", b"hi alice");
    expect_push(&mut alice, msg("lobby", "bob", 8), b"hi alice");
    quiet(&mut bob); // never its own message
    say(&mut alice, "lobby", b"hi bob");
    expect_push(&mut bob, msg("lobby", "alice", 6), b"hi bob");
    // An empty message still says its size.
    say(&mut alice, "lobby", b"");
    expect_push(&mut bob, msg("lobby", "alice", 0), b"");

    ok(&mut bob, "leave", json!({"room": "lobby"}), b"");
    expect_push(&mut alice, left("lobby", "bob"), b"");
    say(&mut alice, "lobby", b"anyone?");
    quiet(&mut bob);
    quiet(&mut alice);
    // Bob is out of the room now.
    refused(&mut bob, "say", json!({"room": "lobby"}), b"x", 403);
    let stats = server.stats();
    assert_eq!(stats["ops"]["join"], 2);
    assert_eq!(stats["ops"]["say"], 5);
}

#[test]
fn three_clients_and_a_second_connection_of_one_user() {
    let server = start(&[]);
    let mut alice = connect(&server, "alice");
    let mut alice2 = connect(&server, "alice");
    let mut bob = connect(&server, "bob");
    let mut carol = connect(&server, "carol");
    join(&mut alice, "r1");
    join(&mut alice2, "r1");
    expect_push(&mut alice, joined("r1", "alice"), b"");
    join(&mut bob, "r1");
    join(&mut carol, "r1");
    for c in [&mut alice, &mut alice2] {
        expect_push(c, joined("r1", "bob"), b"");
        expect_push(c, joined("r1", "carol"), b"");
    }
    expect_push(&mut bob, joined("r1", "carol"), b"");

    // Every other member connection, the sender's own user's other one included.
    say(&mut alice, "r1", b"hello all");
    for c in [&mut alice2, &mut bob, &mut carol] {
        expect_push(c, msg("r1", "alice", 9), b"hello all");
    }
    quiet(&mut alice);

    // A dm goes to each connection of its user, and has no room.
    ok(&mut carol, "dm", json!({"to": "alice"}), b"psst");
    for c in [&mut alice, &mut alice2] {
        expect_push(c, json!({"op": "msg", "from": "carol", "size": 4}), b"psst");
    }
    quiet(&mut bob);
    quiet(&mut carol);
    // A dm to one's own user reaches the other connections, not the sending one.
    ok(&mut alice, "dm", json!({"to": "alice"}), b"note");
    expect_push(
        &mut alice2,
        json!({"op": "msg", "from": "alice", "size": 4}),
        b"note",
    );
    quiet(&mut alice);
    // A dm needs no shared room.
    ok(&mut bob, "leave", json!({"room": "r1"}), b"");
    for c in [&mut alice, &mut alice2, &mut carol] {
        expect_push(c, left("r1", "bob"), b"");
    }
    ok(&mut alice, "dm", json!({"to": "bob"}), b"still there?");
    expect_push(
        &mut bob,
        json!({"op": "msg", "from": "alice", "size": 12}),
        b"still there?",
    );
    // Rooms are separate: a say in r2 reaches only r2's members.
    join(&mut bob, "r2");
    join(&mut carol, "r2");
    expect_push(&mut bob, joined("r2", "carol"), b"");
    say(&mut carol, "r2", b"only bob");
    expect_push(&mut bob, msg("r2", "carol", 8), b"only bob");
    for c in [&mut alice, &mut alice2] {
        quiet(c);
    }
}

#[test]
fn refusals_and_choices() {
    let server = start(&["--max-body", "1024"]);
    let mut alice = connect(&server, "alice");
    let mut bob = connect(&server, "bob");
    // say without join: 403, body consumed, connection fine.
    let e = refused(&mut alice, "say", json!({"room": "lobby"}), b"x", 403);
    assert!(e.contains("not a member"), "{e}");
    refused(&mut alice, "leave", json!({"room": "lobby"}), b"", 403);
    // dm to a user with no open connection (known or not): 404.
    refused(&mut alice, "dm", json!({"to": "carol"}), b"hi", 404);
    refused(&mut alice, "dm", json!({"to": "nobody"}), b"hi", 404);
    // Names: 1-64 of [A-Za-z0-9_.-], a string, present.
    for room in [
        json!(""),
        json!("a b"),
        json!("é"),
        json!("x".repeat(65)),
        json!(7),
        json!(null),
    ] {
        refused(&mut alice, "join", json!({ "room": room }), b"", 400);
        refused(&mut alice, "say", json!({ "room": room }), b"x", 400);
    }
    refused(&mut alice, "join", json!({}), b"", 400);
    refused(&mut alice, "dm", json!({}), b"x", 400);
    refused(&mut alice, "dm", json!({"to": "b/b"}), b"x", 400);
    join(&mut alice, &"x".repeat(64));
    join(&mut alice, "A-z_0.9");

    // Joining twice is a 200 with no second `joined`.
    join(&mut bob, "lobby");
    join(&mut alice, "lobby");
    expect_push(&mut bob, joined("lobby", "alice"), b"");
    join(&mut alice, "lobby");
    quiet(&mut bob);
    // A body over --max-body: 413, dropped unread, nothing pushed, connection stays.
    refused(
        &mut alice,
        "say",
        json!({"room": "lobby"}),
        &[b'x'; 2000],
        413,
    );
    refused(&mut alice, "dm", json!({"to": "bob"}), &[b'x'; 2000], 413);
    quiet(&mut bob);
    say(&mut alice, "lobby", &[b'y'; 1024]);
    expect_push(&mut bob, msg("lobby", "alice", 1024), &[b'y'; 1024]);
}

#[test]
fn a_closing_connection_leaves_its_rooms() {
    let server = start(&[]);
    let mut alice = connect(&server, "alice");
    let mut bob = connect(&server, "bob");
    for room in ["x", "y"] {
        join(&mut alice, room);
        join(&mut bob, room);
        expect_push(&mut alice, joined(room, "bob"), b"");
    }
    drop(bob); // a clean close (FIN)
    let mut rooms: Vec<String> = (0..2)
        .map(|_| {
            let (h, _) = push(&mut alice);
            assert_eq!(
                (&h["op"], &h["user"]),
                (&json!("left"), &json!("bob")),
                "{h}"
            );
            assert_eq!(h.as_object().unwrap().len(), 3, "{h}");
            h["room"].as_str().unwrap().to_string()
        })
        .collect();
    rooms.sort();
    assert_eq!(rooms, ["x", "y"]);
    // Bob has no connection now: a dm to him is a 404.
    refused(&mut alice, "dm", json!({"to": "bob"}), b"hi", 404);

    // An abrupt close mid-frame (unread bytes, so the kernel resets) too.
    let mut carol = Raw {
        s: TcpStream::connect(server.addr).unwrap(),
    };
    carol.s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let hello = carol.recv();
    carol.auth(&hello, "carol", &key_of("carol"));
    carol.request(json!({"op": "join", "room": "x"}), b"");
    assert_eq!(carol.recv().status(), 200);
    expect_push(&mut alice, joined("x", "carol"), b"");
    carol.send(r#"{"op":"say","room":"x","size":100}"#, b"half");
    drop(carol);
    expect_push(&mut alice, left("x", "carol"), b"");
    say(&mut alice, "x", b"alone");
    quiet(&mut alice);
    server.wait_for("connections closed", |s| s.stats()["conns_open"] == 2);
}

#[test]
fn big_messages_and_pipelined_messages_arrive_whole_and_in_order() {
    let server = start(&[]);
    let mut alice = connect(&server, "alice");
    join(&mut alice, "big");
    let mut members: Vec<Client> = (0..40).map(|_| connect(&server, "bob")).collect();
    for m in &mut members {
        join(m, "big");
    }
    // Bodies above the copy threshold are one shared frame in every member's queue.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    say(&mut alice, "big", &body);
    // 1,000 pipelined says to 40 members: more pushes than one visit may queue,
    // so the sender pauses and resumes; nothing is lost or reordered.
    let n = 1000;
    let ids: Vec<u64> = (0..n)
        .map(|i| {
            alice
                .send("say", json!({"room": "big"}), format!("m{i}").as_bytes())
                .unwrap()
        })
        .collect();
    for id in ids {
        let r = alice.read_reply().unwrap();
        assert_eq!((r.status(), r.id()), (200, Some(id)));
    }
    for (k, m) in members.iter_mut().enumerate() {
        // The `joined` of the members after this one come first.
        for _ in k + 1..40 {
            expect_push(m, joined("big", "bob"), b"");
        }
        expect_push(m, msg("big", "alice", body.len()), &body);
        for i in 0..n {
            let text = format!("m{i}");
            expect_push(m, msg("big", "alice", text.len()), text.as_bytes());
        }
    }
    // Alice, joined first, heard every join.
    for _ in 0..40 {
        expect_push(&mut alice, joined("big", "bob"), b"");
    }
    quiet(&mut alice);
}

/// A TCP connection with a small receive buffer, set before connecting so the
/// window it advertises is small from the start.
fn small_window_stream(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected")
    };
    // SAFETY: plain socket calls on a descriptor we own; it is handed to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn a_member_that_never_reads_is_disconnected_and_the_others_get_everything_in_order() {
    let server = start(&["--max-outbuf", "65536"]);
    let mut alice = connect(&server, "alice");
    let mut bob = connect(&server, "bob");
    join(&mut alice, "room");
    join(&mut bob, "room");
    expect_push(&mut alice, joined("room", "bob"), b"");
    // Carol joins, then never reads again.
    let mut carol = Raw {
        s: small_window_stream(server.addr),
    };
    carol.s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let hello = carol.recv();
    carol.auth(&hello, "carol", &key_of("carol"));
    carol.request(json!({"op": "join", "room": "room"}), b"");
    assert_eq!(carol.recv().status(), 200);
    expect_push(&mut alice, joined("room", "carol"), b"");
    expect_push(&mut bob, joined("room", "carol"), b"");

    // 8 KiB messages until Bob hears that Carol left (her socket buffers, then
    // her 64 KiB queue, fill up), then some more: Bob gets every one, in order,
    // and Alice's says are never refused or held up.
    let mut carol_left_at = None;
    let mut i = 0u32;
    while carol_left_at.is_none_or(|at| i < at + 50) {
        assert!(
            i < 4000,
            "carol was never disconnected; log:\n{}",
            server.log()
        );
        let mut body = vec![b'.'; 8192];
        body[..4].copy_from_slice(&i.to_be_bytes());
        say(&mut alice, "room", &body);
        loop {
            let (h, b) = push(&mut bob);
            if h == left("room", "carol") {
                assert!(carol_left_at.is_none(), "left twice");
                carol_left_at = Some(i);
                // Closed politely: reading now, Carol gets what was queued for her
                // (a prefix of the messages, in order), the bye, then EOF.
                let mut got = 0u32;
                loop {
                    let f = carol.recv();
                    if f.op() == Some("bye") {
                        let want = json!({"op": "bye", "reason": "slow consumer"});
                        assert_eq!(Value::Object(f.header), want);
                        break;
                    }
                    assert_eq!(Value::Object(f.header), msg("room", "alice", 8192));
                    assert_eq!(f.body[..4], got.to_be_bytes());
                    got += 1;
                }
                carol.expect_closed();
                assert!(got > 0 && got <= i, "carol got {got} of {i}");
                continue;
            }
            assert_eq!(h, msg("room", "alice", 8192));
            assert_eq!(b, body, "message {i} out of order or damaged");
            break;
        }
        i += 1;
    }
    // Alice heard Carol leave too, and nothing else.
    expect_push(&mut alice, left("room", "carol"), b"");
    quiet(&mut alice);
    let stats = server.stats();
    assert_eq!(stats["slow_consumers"], 1, "{stats}");
    assert!(server.log().contains("slow consumer"), "{}", server.log());
    eprintln!(
        "carol was disconnected after {} messages",
        carol_left_at.unwrap_or(0)
    );
}
