//! `serve --bus` from outside (contract section 12): servers sharing one Redis
//! are one chat. Rooms, `joined`/`left` and `dm` reach members on every
//! server; a `dm` to a user connected nowhere is a 404; a bus unreachable at
//! start stops the start; a bus lost later makes chat answer 503 `bus
//! unavailable` until Redis is back, then chat spans the servers again.
//! Needs redis-server (see `common::redis`).

mod common;

use common::Server;
use common::redis::Redis;
use frameloop::client::{Client, Credentials, Frame};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A server on the bus, its users file holding `guest` and `users`.
fn on_bus(redis: &Redis, users: &[&str], more: &[&str]) -> Server {
    on_bus_as(&redis.url(), users, more)
}

fn on_bus_as(url: &str, users: &[&str], more: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::iter::once("guest")
        .chain(users.iter().copied())
        .map(|u| frameloop::auth::keygen_line(u).unwrap())
        .collect();
    std::fs::write(dir.path().join("users"), lines.join("\n") + "\n").unwrap();
    let mut args = vec!["--bus", url];
    args.extend_from_slice(more);
    Server::start_in(dir, "127.0.0.1:0", &args)
}

fn login(server: &Server, user: &str) -> Client {
    let key = *frameloop::auth::Users::load(&server.dir.path().join("users"))
        .unwrap()
        .key(user)
        .unwrap();
    let creds = Credentials::Key {
        user: user.into(),
        key,
    };
    let mut c = Client::connect(server.addr, &creds).expect("log in");
    c.set_timeout(Some(common::TIMEOUT)).unwrap();
    c
}

fn ok(c: &mut Client, op: &str, fields: Value, body: &[u8]) -> Frame {
    let reply = c.request(op, fields, body).expect("reply");
    assert_eq!(reply.status(), 200, "{op}: {reply:?}");
    reply
}

fn push(c: &mut Client, op: &str) -> Frame {
    let p = c.next_push().unwrap_or_else(|e| panic!("a {op} push: {e}"));
    assert_eq!(p.str("op"), Some(op), "{p:?}");
    p
}

/// Nothing more is pushed to `c`: the reply to a ping comes next.
fn quiet(c: &mut Client) {
    ok(c, "ping", json!({}), b"");
    assert_eq!(c.queued_pushes(), 0, "an extra push");
}

#[test]
fn rooms_and_dm_span_the_servers() {
    let Some(redis) = Redis::start() else { return };
    // B logs in to Redis as a user allowed only the bus's commands and channels.
    let a = on_bus(&redis, &[], &[]);
    let b = on_bus_as(&redis.url_as("frameloop"), &["ann"], &[]);
    let mut a1 = login(&a, "guest");
    let (mut b1, mut b2) = (login(&b, "guest"), login(&b, "ann"));
    // A join's 200 comes once its server has subscribed: from then on the
    // member hears the room, whichever server speaks.
    ok(&mut a1, "join", json!({"room": "lobby"}), b"");
    ok(&mut b1, "join", json!({"room": "lobby"}), b"");
    assert_eq!(push(&mut a1, "joined").str("user"), Some("guest"));
    ok(&mut b2, "join", json!({"room": "lobby"}), b"");
    for c in [&mut a1, &mut b1] {
        assert_eq!(push(c, "joined").str("user"), Some("ann"));
    }
    let body: Vec<u8> = (0..=255).chain(b"\r\n$3\r\n".iter().copied()).collect();
    ok(&mut a1, "say", json!({"room": "lobby"}), &body);
    for c in [&mut b1, &mut b2] {
        let msg = push(c, "msg");
        assert_eq!(
            (msg.str("room"), msg.str("from")),
            (Some("lobby"), Some("guest"))
        );
        assert_eq!(msg.body, body, "binary-safe");
    }
    quiet(&mut a1); // its own message does not come back
    // dm to a user only on the other server: Redis's count says 200.
    ok(&mut a1, "dm", json!({"to": "ann"}), b"psst");
    let dm = push(&mut b2, "msg");
    assert_eq!(
        (dm.str("from"), dm.body.as_slice()),
        (Some("guest"), &b"psst"[..])
    );
    // dm to nobody anywhere: 404.
    let nobody = a1.request("dm", json!({"to": "nobody"}), b"x").unwrap();
    assert_eq!(nobody.status(), 404, "{nobody:?}");
    // dm to a user on both servers: every other connection of it.
    ok(&mut b2, "dm", json!({"to": "guest"}), b"both");
    for c in [&mut a1, &mut b1] {
        assert_eq!(push(c, "msg").body, b"both");
    }
    // A member closes on one server: the others hear `left`, on both.
    drop(b1);
    for c in [&mut a1, &mut b2] {
        let left = push(c, "left");
        assert_eq!(
            (left.str("room"), left.str("user")),
            (Some("lobby"), Some("guest"))
        );
    }
    // The last member on B leaves: A's members no longer reach B, and B's
    // `leave` reached A.
    ok(&mut b2, "leave", json!({"room": "lobby"}), b"");
    assert_eq!(push(&mut a1, "left").str("user"), Some("ann"));
    quiet(&mut b2);
    // Idle on the bus, the loop sleeps (it once spun on a drained connection).
    let before = a.cpu_ticks();
    std::thread::sleep(Duration::from_millis(500));
    let spent = a.cpu_ticks() - before;
    assert!(spent <= 10, "{spent} ticks of CPU in 500 ms idle");
}

#[test]
fn workers_on_the_bus_deliver_once() {
    let Some(redis) = Redis::start() else { return };
    let users: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let a = on_bus(&redis, &names, &["--workers", "2"]);
    let b = on_bus(&redis, &names, &[]);
    // Enough connections that both workers have some (the kernel spreads them).
    let mut members: Vec<Client> = names[..6].iter().map(|u| login(&a, u)).collect();
    members.push(login(&b, names[6]));
    for c in members.iter_mut() {
        ok(c, "join", json!({"room": "r"}), b"");
    }
    // Each hears of every later joiner once, and of no earlier one (what was
    // said before a join is not heard after it).
    for (i, c) in members.iter_mut().enumerate() {
        let mut heard: Vec<String> = (i + 1..names.len())
            .map(|_| {
                push(c, "joined")
                    .str("user")
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        heard.sort();
        assert_eq!(heard, names[i + 1..], "member {i}");
        quiet(c);
    }
    ok(&mut members[6], "say", json!({"room": "r"}), b"hi");
    for c in &mut members[..6] {
        assert_eq!(push(c, "msg").body, b"hi");
        quiet(c); // once, not once per path
    }
}

/// Waits until `op` stops answering `status` (or panics after 15 s).
fn until_not(c: &mut Client, status: u64, op: &str, fields: Value) -> Frame {
    let start = Instant::now();
    loop {
        let reply = c.request(op, fields.clone(), b"").expect("reply");
        if reply.status() != status {
            return reply;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{op} still {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_lost_bus_answers_503_until_it_is_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (on_bus(&redis, &[], &[]), on_bus(&redis, &[], &[]));
    let (mut a1, mut b1) = (login(&a, "guest"), login(&b, "guest"));
    ok(&mut a1, "join", json!({"room": "lobby"}), b"");
    ok(&mut b1, "join", json!({"room": "lobby"}), b"");
    push(&mut a1, "joined");
    redis.stop();
    // Chat is refused while the bus is lost; everything else works.
    let refused = until_not(&mut a1, 200, "join", json!({"room": "other"}));
    assert_eq!(refused.status(), 503, "{refused:?}");
    assert_eq!(refused.str("error"), Some("bus unavailable"), "{refused:?}");
    for (op, fields) in [
        ("say", json!({"room": "lobby"})),
        ("dm", json!({"to": "guest"})),
        ("leave", json!({"room": "lobby"})),
    ] {
        let r = a1.request(op, fields, b"x").unwrap();
        assert_eq!(r.status(), 503, "{op}: {r:?}");
    }
    ok(&mut a1, "ping", json!({}), b"");
    a.wait_for("the loss logged", |s| s.log().contains("bus lost"));
    // Back: each server subscribes again to its rooms, and chat spans them.
    redis.restart();
    until_not(&mut b1, 503, "join", json!({"room": "lobby"}));
    until_not(&mut a1, 503, "join", json!({"room": "lobby"}));
    ok(&mut a1, "say", json!({"room": "lobby"}), b"again");
    assert_eq!(push(&mut b1, "msg").body, b"again");
    a.wait_for("the return logged", |s| {
        s.log().matches("bus up").count() >= 2
    });
    // A Redis that stops answering (paused: the connections stay open) is lost
    // too: the join waiting for it is answered 503 within a few seconds.
    redis.pause(true);
    let start = Instant::now();
    let stuck = a1.request("join", json!({"room": "third"}), b"").unwrap();
    redis.pause(false);
    assert_eq!(stuck.status(), 503, "{stuck:?}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    a.wait_for("the silence logged", |s| {
        s.log().contains("no answer from Redis")
    });
}

#[test]
fn an_unreachable_bus_stops_the_start() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("redis://127.0.0.1:{}", common::free_port());
    let wrong = format!("redis://:Wr0ngPassw0rd@127.0.0.1:{}", redis.port);
    for (url, says) in [(closed.as_str(), "refused"), (wrong.as_str(), "WRONGPASS")] {
        let out = common::serve_command(dir.path())
            .args(["--bus", url])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().last().unwrap_or_default();
        assert!(
            line.contains("cannot reach the bus at redis://127.0.0.1:") && line.contains(says),
            "{err}"
        );
        assert!(
            !err.contains("Wr0ngPassw0rd"),
            "the password is not shown: {err}"
        );
    }
}

#[test]
fn rediss_verifies_redis_and_carries_the_bus() {
    let Some(redis) = Redis::start_tls() else {
        return;
    };
    let ca = redis.cert.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let (a, b) = (
        on_bus(&redis, &[], &["--bus-ca", ca]),
        on_bus(&redis, &[], &["--bus-ca", ca]),
    );
    let (mut a1, mut b1) = (login(&a, "guest"), login(&b, "guest"));
    ok(&mut a1, "join", json!({"room": "tls"}), b"");
    ok(&mut b1, "join", json!({"room": "tls"}), b"");
    push(&mut a1, "joined");
    let big = vec![7u8; 300_000]; // many TLS records
    ok(&mut b1, "say", json!({"room": "tls"}), &big);
    assert_eq!(push(&mut a1, "msg").body, big);
    // Without the certificate to verify it with, the server does not start.
    let dir = tempfile::tempdir().unwrap();
    let out = common::serve_command(dir.path())
        .args(["--bus", &redis.url(), "--bus-ca", "/etc/hostname"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the bus at rediss://localhost:"),
        "{err}"
    );
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let out = common::serve_command(dir.path())
        .args(["--bus", &redis.url(), "--bus-ca"])
        .arg(&other_ca)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not verify"), "{err}");
}
