//! The client's side of authentication (contract section 3), driven from outside:
//! a client holding a key refuses a server that skips or fakes the handshake
//! (`frameloop client`, `frameloop load`, `scripts/client.py`), sending it nothing;
//! `--no-auth` talks to an anonymous server; the key may come from `FRAMELOOP_KEY`.

mod common;

use common::Server;
use frameloop::client::read_frame;
use frameloop::proto::encode_frame;
use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::Duration;

const PYTHON_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/client.py");

/// A key no server in these tests knows.
fn some_key() -> String {
    "11".repeat(32)
}

/// How a fake server greets and answers the login.
#[derive(Clone, Copy, Debug)]
enum Fake {
    /// A hello with this `auth` (`None`: no `auth` field at all), then it answers
    /// any request with 200, as a server that skips authentication would.
    Hello(Option<&'static str>),
    /// An hmac-sha256 hello; the auth is answered with this reply header (a
    /// server that does not know the key), and later requests with 200.
    AuthReply(&'static str),
}

/// What a fake server read after its hello.
#[derive(Debug)]
struct Heard {
    /// The headers of the frames it read, in order.
    frames: Vec<Value>,
    /// Bytes it read past the last whole frame.
    loose: usize,
}

impl Heard {
    fn ops(&self) -> Vec<&str> {
        self.frames
            .iter()
            .map(|f| f["op"].as_str().unwrap_or("?"))
            .collect()
    }
}

/// A reader that keeps a count of what passed through it.
struct Tap<'a> {
    inner: &'a TcpStream,
    read: usize,
}

impl Read for Tap<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

/// A fake server for one connection on 127.0.0.1: it greets as `fake` says,
/// answers what it is sent, and reports what it read when the client is gone.
fn fake_server(fake: Fake) -> (SocketAddr, JoinHandle<Heard>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hello = json!({"op":"hello","proto":1,"server":"frameloop/fake",
            "max_header":65536,"max_body":16777216});
        match fake {
            Fake::Hello(Some(auth)) => hello["auth"] = json!(auth),
            Fake::Hello(None) => {}
            Fake::AuthReply(_) => {
                hello["auth"] = json!("hmac-sha256");
                hello["nonce"] = json!("ab".repeat(32));
            }
        }
        s.write_all(&encode_frame(hello.to_string().as_bytes(), b""))
            .unwrap();
        let mut tap = Tap { inner: &s, read: 0 };
        let mut frames = Vec::new();
        let mut framed = 0;
        while let Ok(frame) = read_frame(&mut tap) {
            framed = tap.read;
            let header = Value::Object(frame.header);
            let reply = match (fake, header["op"].as_str()) {
                (Fake::AuthReply(reply), Some("auth")) => reply.to_string(),
                // Whatever it was asked, it claims success (a put's digest included).
                _ => json!({"status":200,"id":header["id"],"sha256":header["sha256"],
                    "path":header["path"]})
                .to_string(),
            };
            frames.push(header);
            if (&s)
                .write_all(&encode_frame(reply.as_bytes(), b""))
                .is_err()
            {
                break;
            }
        }
        Heard {
            frames,
            loose: tap.read - framed,
        }
    });
    (addr, handle)
}

fn frameloop(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(args)
        .env_remove("FRAMELOOP_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run frameloop")
}

fn python(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("python3")
        .arg(PYTHON_CLIENT)
        .args(args)
        .env_remove("FRAMELOOP_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("run python3")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit 2, nothing on stdout, one line on stderr holding `says`.
fn assert_refused(out: &Output, says: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(says), "{err:?} should say {says:?}");
    assert!(
        !err.contains("Traceback") && !err.contains("panicked"),
        "{err}"
    );
}

/// The hellos a client holding a key must refuse.
const NO_AUTH_HELLOS: [Fake; 3] = [
    Fake::Hello(Some("none")),
    Fake::Hello(Some("plaintext")),
    Fake::Hello(None),
];

#[test]
fn a_key_holder_refuses_a_server_that_skips_authentication() {
    for fake in NO_AUTH_HELLOS {
        let (addr, heard) = fake_server(fake);
        let out = frameloop(
            &[
                "client",
                "--addr",
                &addr.to_string(),
                "--key",
                &some_key(),
                "ping",
            ],
            &[],
        );
        assert_refused(&out, "refusing");
        let heard = heard.join().unwrap();
        assert!(heard.frames.is_empty(), "{fake:?}: {heard:?}");
        assert_eq!(heard.loose, 0, "{fake:?}");
    }
    // The key from the environment is held just the same.
    let (addr, heard) = fake_server(Fake::Hello(Some("none")));
    let out = frameloop(
        &["client", "--addr", &addr.to_string(), "echo", "secret"],
        &[("FRAMELOOP_KEY", &some_key())],
    );
    assert_refused(&out, "refusing");
    assert!(heard.join().unwrap().frames.is_empty());
}

#[test]
fn put_uploads_nothing_to_a_server_that_skips_authentication() {
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("secret.txt");
    std::fs::write(&local, "the secret file\n".repeat(1000)).unwrap();
    let (addr, heard) = fake_server(Fake::Hello(Some("none")));
    let out = frameloop(
        &[
            "client",
            "--addr",
            &addr.to_string(),
            "--key",
            &some_key(),
            "put",
            &local.display().to_string(),
        ],
        &[],
    );
    assert_refused(&out, "refusing");
    let heard = heard.join().unwrap();
    assert!(heard.frames.is_empty(), "{heard:?}");
    assert_eq!(heard.loose, 0, "no upload bytes");
}

/// Auth replies from a server that does not know the key, or that refuses with
/// an error text made to look like more lines.
const BAD_AUTH_REPLIES: [&str; 4] = [
    r#"{"status":200,"user":"guest","mac":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"}"#,
    r#"{"status":200,"user":"guest"}"#,
    r#"{"status":200,"user":"guest","mac":12345}"#,
    r#"{"status":401,"error":"authentication failed\nframeloop: all is well"}"#,
];

#[test]
fn a_bad_auth_reply_ends_it_after_the_auth_frame() {
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("secret.txt");
    std::fs::write(&local, "the secret file\n").unwrap();
    let local = local.display().to_string();
    for reply in BAD_AUTH_REPLIES {
        for command in [&["ping"][..], &["put", &local]] {
            let (addr, heard) = fake_server(Fake::AuthReply(reply));
            let (addr, key) = (addr.to_string(), some_key());
            let mut args = vec!["client", "--addr", &addr, "--key", &key];
            args.extend(command.iter().copied());
            let out = frameloop(&args, &[]);
            assert_refused(&out, "authentication");
            let heard = heard.join().unwrap();
            assert_eq!(heard.ops(), ["auth"], "{reply} {command:?}");
            assert_eq!(heard.loose, 0, "{reply} {command:?}");
        }
    }
}

#[test]
fn load_refuses_a_server_that_skips_authentication() {
    let (addr, heard) = fake_server(Fake::Hello(Some("none")));
    let out = frameloop(
        &[
            "load",
            "--addr",
            &addr.to_string(),
            "--key",
            &some_key(),
            "--conns",
            "1",
            "--op",
            "ping",
            "--duration",
            "0.3",
            "--warmup",
            "0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refusing"), "{err}");
    let heard = heard.join().unwrap();
    assert!(heard.frames.is_empty(), "{heard:?}");
}

#[test]
fn no_auth_is_an_explicit_choice() {
    let anonymous = Server::start(&["--no-auth"]);
    let nowhere = anonymous.dir.path().join("no-users-file");
    let nowhere = nowhere.display().to_string();
    let addr = anonymous.addr.to_string();
    // With --no-auth no key is needed, and the anonymous server is served.
    let out = frameloop(
        &[
            "client",
            "--addr",
            &addr,
            "--users",
            &nowhere,
            "--no-auth",
            "echo",
            "hi",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hi\n");
    let out = frameloop(
        &["client", "--addr", &addr, "--no-auth", "ping"],
        &[("FRAMELOOP_KEY", &some_key())],
    );
    assert!(text(&out.stdout).starts_with("pong in "), "{out:?}");
    // A key and --no-auth contradict each other.
    let out = frameloop(
        &[
            "client",
            "--addr",
            &addr,
            "--no-auth",
            "--key",
            &some_key(),
            "ping",
        ],
        &[],
    );
    assert_refused(&out, "--no-auth");
    // A server that asks for a key gets no anonymous login: one line, exit 2.
    let authed = Server::start(&[]);
    let out = frameloop(
        &[
            "client",
            "--addr",
            &authed.addr.to_string(),
            "--no-auth",
            "ping",
        ],
        &[],
    );
    assert_refused(&out, "requires authentication");
}

#[test]
fn the_key_may_come_from_the_environment() {
    let server = Server::start(&[]);
    let addr = server.addr.to_string();
    let key = hex::encode(server.key());
    let nowhere = server.dir.path().join("no-users-file");
    let nowhere = nowhere.display().to_string();
    let base = ["client", "--addr", &addr, "--users", &nowhere];
    let with = |extra: &[&str], env: &[(&str, &str)]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        frameloop(&args, env)
    };
    let out = with(&["echo", "from env"], &[("FRAMELOOP_KEY", &key)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "from env\n");
    // --key comes first.
    let wrong = some_key();
    let out = with(&["--key", &key, "ping"], &[("FRAMELOOP_KEY", &wrong)]);
    assert!(out.status.success(), "{out:?}");
    let out = with(&["--key", &wrong, "ping"], &[("FRAMELOOP_KEY", &key)]);
    assert_refused(&out, "authentication failed");
    // A malformed variable is a usage error, not a silent fallback.
    let out = with(&["ping"], &[("FRAMELOOP_KEY", "xyz")]);
    assert_refused(&out, "FRAMELOOP_KEY");
    // The environment comes before the users file.
    let users = server.dir.path().join("users").display().to_string();
    let out = frameloop(
        &["client", "--addr", &addr, "--users", &users, "ping"],
        &[("FRAMELOOP_KEY", &wrong)],
    );
    assert_refused(&out, "authentication failed");
    // The load tool finds its key the same way.
    let out = frameloop(
        &[
            "load",
            "--addr",
            &addr,
            "--users",
            &nowhere,
            "--conns",
            "1",
            "--op",
            "ping",
            "--duration",
            "0.2",
            "--warmup",
            "0",
            "--json",
        ],
        &[("FRAMELOOP_KEY", &key)],
    );
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn python_client_refuses_what_the_rust_client_refuses() {
    for fake in NO_AUTH_HELLOS {
        let (addr, heard) = fake_server(fake);
        let out = python(
            &["--addr", &addr.to_string(), "--key", &some_key(), "ping"],
            &[],
        );
        assert_refused(&out, "refusing");
        let heard = heard.join().unwrap();
        assert!(heard.frames.is_empty(), "{fake:?}: {heard:?}");
        assert_eq!(heard.loose, 0, "{fake:?}");
    }
    let (addr, heard) = fake_server(Fake::Hello(Some("none")));
    let out = python(
        &["--addr", &addr.to_string(), "echo", "secret"],
        &[("FRAMELOOP_KEY", &some_key())],
    );
    assert_refused(&out, "refusing");
    assert!(heard.join().unwrap().frames.is_empty());
    for reply in BAD_AUTH_REPLIES {
        let (addr, heard) = fake_server(Fake::AuthReply(reply));
        let out = python(
            &["--addr", &addr.to_string(), "--key", &some_key(), "ping"],
            &[],
        );
        assert_refused(&out, "authentication");
        assert_eq!(heard.join().unwrap().ops(), ["auth"], "{reply}");
    }
}

#[test]
fn python_client_no_auth_flag_and_environment_key() {
    let anonymous = Server::start(&["--no-auth"]);
    let out = python(
        &[
            "--addr",
            &anonymous.addr.to_string(),
            "--no-auth",
            "echo",
            "hi",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hi\n");
    let authed = Server::start(&[]);
    let addr = authed.addr.to_string();
    let out = python(&["--addr", &addr, "--no-auth", "ping"], &[]);
    assert_refused(&out, "requires authentication");
    let key = hex::encode(authed.key());
    let out = python(
        &["--addr", &addr, "--users", "/nonexistent", "echo", "env"],
        &[("FRAMELOOP_KEY", &key)],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "env\n");
    let out = python(&["--addr", &addr, "ping"], &[("FRAMELOOP_KEY", "xyz")]);
    assert_refused(&out, "FRAMELOOP_KEY");
}
