//! Unit tests of the connection machine, driven with no socket: bytes in (split
//! every way), `now` moved by hand, output taken as the server would write it.
//! This file is the harness; the tests are grouped by topic beside it.

mod chat;
mod closing;
mod flow;
mod login;
mod proxy;

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
    Conn::open(&mut w.services, rules(MAX_OUT), key, key, true, None, w.t0)
}

/// Writes all of the output as the server would, and tells the machine.
/// Returns the frames written and whether it asked for the write side to shut.
fn write_all(services: &mut Services, conn: &mut Conn, now: Instant) -> (Vec<Frame>, bool) {
    let mut mem = Vec::new();
    let done = conn.out.write_to(&mut mem, usize::MAX).unwrap();
    conn.written(services, done.bytes, false, now);
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
