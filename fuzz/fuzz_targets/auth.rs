//! The connection machine fed arbitrary input: the handshake (no input ever
//! logs in without the key), and, after a real login, every op (files in a
//! temp dir, chat with its pushes dropped). It drives `Conn` as the server
//! does, with no socket. Never a panic, and every reply is a well-formed frame
//! with a contract status.
#![no_main]

use frameloop::auth;
use frameloop::client::read_frame;
use frameloop::conn::{Conn, State};
use frameloop::proto::encode_frame;
use frameloop::service::Services;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::time::Instant;

mod common;
use common::KEY;

thread_local! {
    static SERVICES: RefCell<Option<Services>> = const { RefCell::new(None) };
}

fn services() -> Services {
    common::services("auth", Some(1 << 20)).0
}

/// Writes the connection's output to `mem` (standing in for the socket), as the
/// server's end of turn does.
fn write_out(s: &mut Services, conn: &mut Conn, mem: &mut Vec<u8>, now: Instant) {
    let done = conn
        .out
        .write_to(mem, usize::MAX)
        .expect("memory never fails");
    conn.written(s, done.bytes, false, now);
    let _ = conn.take_shutdown();
}

/// Feeds `input` as the server does: pushes carried out (dropped: there are no
/// other connections), jobs run to their end, output written between steps.
fn feed(s: &mut Services, conn: &mut Conn, mem: &mut Vec<u8>, input: &[u8], now: Instant) {
    let mut used = 0;
    for _ in 0..100_000 {
        used += conn.receive(s, input.get(used..), now);
        let mut pushes = s.take_pushes();
        pushes.clear();
        s.return_pushes(pushes);
        // A sum runs to its end (the files here are small); no exec is allowed.
        let mut steps = 0;
        while matches!(conn.state(), State::Working(_)) {
            conn.resume(s, now);
            steps += 1;
            assert!(steps < 10_000, "a job never ends");
        }
        write_out(s, conn, mem, now);
        while conn.has_stash() && conn.reading() != frameloop::conn::Reading::Not {
            conn.receive(s, None, now);
            write_out(s, conn, mem, now);
        }
        if used >= input.len() || !conn.is_open() {
            return;
        }
    }
    panic!("the machine stopped taking input");
}

fn run(s: &mut Services, data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    let mut conn = Conn::open(s, common::RULES, 0, 0, true, None, now);
    let mut mem = Vec::new();
    write_out(s, &mut conn, &mut mem, now);
    let hello = read_frame(&mut &mem[..]).expect("hello");
    mem.clear();
    let logged_in = mode & 1 == 1;
    if logged_in {
        // A real login first, so the rest of the input reaches the authenticated ops.
        let nonce = auth::hex32(hello.str("nonce").expect("nonce")).expect("nonce hex");
        let cnonce = [mode; 32];
        let mac = auth::client_mac(&KEY, &nonce, &cnonce, "guest");
        let head = format!(
            r#"{{"op":"auth","user":"guest","cnonce":"{}","mac":"{}"}}"#,
            hex::encode(cnonce),
            hex::encode(mac)
        );
        feed(
            s,
            &mut conn,
            &mut mem,
            &encode_frame(head.as_bytes(), b""),
            now,
        );
        let reply = read_frame(&mut &mem[..]).expect("auth reply");
        assert_eq!(reply.status(), 200);
        assert_eq!(conn.state(), State::Serving);
        mem.clear();
    }
    feed(s, &mut conn, &mut mem, input, now);
    let mut rest = &mem[..];
    while !rest.is_empty() {
        let frame = read_frame(&mut rest).expect("replies are well-formed frames");
        let status = frame.status();
        assert!(
            [200, 400, 401, 403, 404, 409, 413, 431, 500].contains(&status),
            "status {status}"
        );
        if !logged_in {
            assert_ne!(status, 200, "logged in without the key: {frame:?}");
        }
    }
    // As the server does on close: the machine leaves its chat rooms; freeing
    // drops an unfinished upload (its temp file goes).
    conn.close(s, "end of input");
    conn.release(s, |_| false);
    let mut pushes = s.take_pushes();
    pushes.clear();
    s.return_pushes(pushes);
}

fuzz_target!(|data: &[u8]| {
    SERVICES.with(|cell| {
        let mut cell = cell.borrow_mut();
        let s = cell.get_or_insert_with(services);
        run(s, data);
    });
});
