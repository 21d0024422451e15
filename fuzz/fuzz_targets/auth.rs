//! A connection's request handling fed arbitrary frames: the handshake (no input
//! ever logs in without the key), and, after a real login, every op (files in a
//! temp dir, chat with its pushes dropped). Never a
//! panic, and every reply is a well-formed frame with a contract status.
#![no_main]

use frameloop::auth::{self, Users};
use frameloop::client::read_frame;
use frameloop::config::Config;
use frameloop::outbuf::{OutBuf, Sink};
use frameloop::proto::{Decoder, Event, encode_frame};
use frameloop::service::exec::ChildIo;
use frameloop::service::{Next, Services, Session};
use libfuzzer_sys::fuzz_target;
use mio::{Poll, Token};
use std::cell::RefCell;
use std::io::Write;
use std::time::Instant;

const KEY: [u8; 32] = [7; 32];

/// Output written to memory (the default `send_file` reads the file).
struct Mem(Vec<u8>);

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink for Mem {}

fn take_output(out: &mut OutBuf) -> Vec<u8> {
    let mut mem = Mem(Vec::new());
    out.write_to(&mut mem, usize::MAX)
        .expect("memory never fails");
    mem.0
}

struct World {
    services: Services,
    poll: Poll,
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

fn world() -> World {
    let dir = std::env::temp_dir().join(format!("frameloop-fuzz-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let config = Config {
        data_dir: dir.clone(),
        users_file: dir.join("users"),
        quota: Some(1 << 20),
        ..Config::default()
    };
    let users = Users::parse(&format!("guest {}\n", hex::encode(KEY))).expect("users");
    World {
        services: Services::new(users, &config, Instant::now()).expect("services"),
        poll: Poll::new().expect("poll"),
    }
}

/// Runs `input` through a decoder and the services as the server does. Returns
/// false once the connection would be closed.
fn feed(
    w: &mut World,
    session: &mut Session,
    decoder: &mut Decoder,
    out: &mut OutBuf,
    input: &[u8],
) -> bool {
    let mut pos = 0;
    loop {
        let next = match decoder.decode(&input[pos..]) {
            Err(e) => {
                w.services.framing_error(&e, out);
                return false;
            }
            Ok((n, event)) => {
                pos += n;
                match event {
                    None => return true,
                    Some(Event::Head { header, oversized }) => {
                        let io = ChildIo {
                            registry: w.poll.registry(),
                            tokens: [Token(1), Token(2), Token(3)],
                        };
                        w.services.head(session, &header, oversized, out, &io)
                    }
                    Some(Event::Body(chunk)) => {
                        w.services.body(session, chunk);
                        Next::Continue
                    }
                    Some(Event::End) => w.services.end(session, out),
                }
            }
        };
        // Chat pushes would go to other connections; there are none here.
        let mut pushes = w.services.take_pushes();
        pushes.clear();
        w.services.return_pushes(pushes);
        match next {
            Next::Continue => {}
            Next::Authenticated => decoder.set_limits(w.services.limits(true)),
            Next::Busy => {
                // A sum: run it to the end (the files here are small).
                let mut steps = 0;
                while w.services.resume(session, out) == Next::Busy {
                    steps += 1;
                    assert!(steps < 10_000, "a job never ends");
                }
            }
            // No program is allowed, so no exec waits; a close ends the input.
            Next::Waiting | Next::Close(_) => return false,
        }
    }
}

fn run(w: &mut World, data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let mut session = Session::default();
    session.set_key(0);
    let mut out = OutBuf::default();
    w.services.greet(&mut session, &mut out).expect("greet");
    let hello = read_frame(&mut &take_output(&mut out)[..]).expect("hello");
    let mut decoder = Decoder::new(w.services.limits(false));
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
        assert!(feed(
            w,
            &mut session,
            &mut decoder,
            &mut out,
            &encode_frame(head.as_bytes(), b"")
        ));
        let reply = read_frame(&mut &take_output(&mut out)[..]).expect("auth reply");
        assert_eq!(reply.status(), 200);
    }
    feed(w, &mut session, &mut decoder, &mut out, input);
    let bytes = take_output(&mut out);
    let mut rest = &bytes[..];
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
    // As the server does on close: leave the chat rooms; dropping the session
    // drops an unfinished upload (its temp file goes).
    w.services.leave_chat(&mut session);
    let mut pushes = w.services.take_pushes();
    pushes.clear();
    w.services.return_pushes(pushes);
    drop(session);
}

fuzz_target!(|data: &[u8]| {
    WORLD.with(|cell| {
        let mut cell = cell.borrow_mut();
        let w = cell.get_or_insert_with(world);
        run(w, data);
    });
});
