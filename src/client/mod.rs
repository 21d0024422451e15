//! The blocking client (shared by the CLI, the tools and the tests): connect over
//! TCP or a Unix socket, the mutual handshake, then requests with ids and their replies.

pub mod cli;
mod frame;
mod requester;
mod stream;
pub mod text;
pub mod tls;
pub mod transfer;
pub mod udp;

pub use frame::{BodySink, Frame, read_body, read_frame, read_head};
pub use requester::{Requester, request_header};
pub use stream::Stream;

use crate::auth::{self, Key};
use requester::write_frame;
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Who the client is: a user and key, or nobody (for `--no-auth` servers).
#[derive(Debug, Clone)]
pub enum Credentials {
    Key { user: String, key: Key },
    Anonymous,
}

/// The environment variable that holds the client's key (64 hex digits) when
/// `--key` is not given; it comes before the users file.
pub const KEY_ENV: &str = "FRAMELOOP_KEY";

impl Credentials {
    /// From the command line's flags: nobody with `--no-auth` (an explicit choice,
    /// which no key may accompany), else `user` with the key [`Credentials::for_user`] finds.
    pub fn from_flags(
        no_auth: bool,
        user: &str,
        key: Option<&str>,
        users: &Path,
    ) -> Result<Credentials, String> {
        match (no_auth, key) {
            (true, Some(_)) => Err("give --key or --no-auth, not both".into()),
            (true, None) => Ok(Credentials::Anonymous),
            (false, _) => Credentials::for_user(user, key, users),
        }
    }

    /// Where the client finds its key (contract section 3): `--key HEX` when given,
    /// else the environment variable `FRAMELOOP_KEY` (unless empty), else the
    /// user's line in the users file.
    pub fn for_user(user: &str, key: Option<&str>, users: &Path) -> Result<Credentials, String> {
        let from_env = std::env::var_os(KEY_ENV).filter(|v| !v.is_empty());
        let key = match (key, from_env) {
            (Some(hex), _) => auth::hex32(hex).ok_or("--key must be 64 hex digits")?,
            (None, Some(hex)) => hex
                .to_str()
                .and_then(auth::hex32)
                .ok_or_else(|| format!("{KEY_ENV} must be 64 hex digits"))?,
            (None, None) => *auth::Users::load(users)
                .map_err(|e| format!("cannot read the key: {e}"))?
                .key(user)
                .ok_or_else(|| format!("no user {user} in {}", users.display()))?,
        };
        Ok(Credentials::Key {
            user: user.to_string(),
            key,
        })
    }
}

/// Connects to the first address that answers, each try bounded in time.
fn connect_any<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address to connect to");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn auth_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg.into())
}

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A hello's `auth` as an error message shows it: quoted, one line, not too long.
fn shown(scheme: Option<&str>) -> String {
    match scheme {
        Some(s) => format!(
            "\"{}\"",
            text::one_line(&s.chars().take(40).collect::<String>())
        ),
        None => "missing".into(),
    }
}

/// How long connecting may take before the client gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An authenticated connection: requests go out through its `Requester`,
/// replies come back in order, pushes that arrive meanwhile are queued.
pub struct Client {
    reader: BufReader<Stream>,
    requester: Requester,
    /// Pushes that arrived while waiting for a reply.
    pushes: VecDeque<Frame>,
    /// The hello push the server greeted us with.
    pub hello: Frame,
    /// The user the server accepted.
    pub user: String,
}

impl Client {
    /// Connects and authenticates. Fails when the server is unreachable, rejects
    /// us, or cannot prove it knows our key (mutual authentication).
    pub fn connect<A: ToSocketAddrs>(addr: A, creds: &Credentials) -> io::Result<Client> {
        let stream = connect_any(addr)?;
        stream.set_nodelay(true)?;
        Client::over(Stream::Tcp(stream), creds)
    }

    /// Like [`Client::connect`], inside TLS (contract section 11): the server's
    /// certificate must verify, and the login is bound to it.
    pub fn connect_tls(
        addr: SocketAddr,
        creds: &Credentials,
        tls: &tls::TlsOptions,
    ) -> io::Result<Client> {
        let stream = connect_any(addr)?;
        stream.set_nodelay(true)?;
        // The handshake is bounded like the rest of the greeting.
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Client::over(Stream::Tls(tls.connect(stream, addr)?), creds)
    }

    /// Like [`Client::connect`], over the Unix socket at `path`.
    pub fn connect_unix(path: &Path, creds: &Credentials) -> io::Result<Client> {
        Client::over(Stream::Unix(UnixStream::connect(path)?), creds)
    }

    /// Reads the hello and authenticates on a connected stream.
    fn over(stream: Stream, creds: &Credentials) -> io::Result<Client> {
        let writer = stream.try_clone()?;
        let mut client = Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
            requester: Requester::new(writer),
            pushes: VecDeque::new(),
            hello: Frame {
                header: Map::new(),
                body: Vec::new(),
            },
            user: String::new(),
        };
        client.set_timeout(Some(Duration::from_secs(30)))?;
        client.hello = read_frame(&mut client.reader)?;
        if client.hello.op() != Some("hello") {
            return Err(protocol_error("no hello from server"));
        }
        client.handshake(creds)?;
        Ok(client)
    }

    /// Authenticates as the hello asks, or refuses the server (contract section 3):
    /// a client holding a key accepts nothing but `hmac-sha256` and a reply that
    /// proves the server knows the key; anonymous is for `--no-auth` only. A
    /// refusal sends nothing more: the connection is dropped with the error.
    fn handshake(&mut self, creds: &Credentials) -> io::Result<()> {
        let scheme = self.hello.str("auth");
        match (creds, scheme) {
            (Credentials::Key { user, key }, Some("hmac-sha256")) => {
                self.prove(user, key)?;
                self.user = user.clone();
                Ok(())
            }
            // Anything else could come from anyone: no silent downgrade.
            (Credentials::Key { .. }, _) => Err(auth_error(format!(
                "refusing the server: its hello offers auth {}, not hmac-sha256, so it \
                 cannot prove it knows our key (to talk to an anonymous server, use --no-auth)",
                shown(scheme)
            ))),
            (Credentials::Anonymous, Some("none")) => {
                self.user = "anonymous".into();
                Ok(())
            }
            (Credentials::Anonymous, Some("hmac-sha256")) => Err(auth_error(
                "the server requires authentication: drop --no-auth and give a key",
            )),
            (Credentials::Anonymous, _) => Err(protocol_error(format!(
                "unknown auth scheme {}",
                shown(scheme)
            ))),
        }
    }

    /// The hmac-sha256 exchange: our proof out, the server's checked.
    fn prove(&mut self, user: &str, key: &Key) -> io::Result<()> {
        let nonce = self
            .hello
            .str("nonce")
            .and_then(auth::hex32)
            .ok_or_else(|| protocol_error("hello has no valid nonce"))?;
        // Over TLS the MACs take in the server's certificate, and the hello must
        // say it does the same (else a relay could pass the login on).
        let cb = self.reader.get_ref().binding();
        if cb.is_some() && self.hello.str("cb") != Some("tls-server-end-point") {
            return Err(auth_error(
                "refusing the server: over TLS its hello must bind the login to the \
                 certificate (cb tls-server-end-point)",
            ));
        }
        let cnonce = auth::random32()?;
        let login = auth::Login {
            nonce: &nonce,
            cnonce: &cnonce,
            user,
            cb: cb.as_ref(),
        };
        let mac = login.client_mac(key);
        let header = json!({"op": "auth", "user": user, "cnonce": hex::encode(cnonce), "mac": hex::encode(mac)});
        write_frame(&mut self.requester.stream, &header, &[])?;
        let reply = self.read_reply()?;
        if reply.status() != 200 {
            return Err(auth_error(format!(
                "server refused authentication: {} {}",
                reply.status(),
                text::one_line(reply.error().unwrap_or(""))
            )));
        }
        // A success without a correct proof is a server that does not know our key.
        let proved = reply
            .str("mac")
            .and_then(auth::hex32)
            .is_some_and(|proof| login.verify_server(key, &proof));
        if !proved {
            return Err(auth_error(
                "server failed mutual authentication (it does not know our key)",
            ));
        }
        Ok(())
    }

    /// Sets the read timeout (None blocks forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }

    /// Sends a request without waiting; returns the id it was given.
    /// `fields` is a JSON object of the op's fields (or `null`).
    pub fn send(&mut self, op: &str, fields: Value, body: &[u8]) -> io::Result<u64> {
        self.requester.send(op, fields, body)
    }

    /// Reads the next reply, keeping pushes that come first for [`Client::next_push`].
    pub fn read_reply(&mut self) -> io::Result<Frame> {
        self.read_reply_into(None)
    }

    /// Like [`Client::read_reply`], but a successful reply's body goes to `sink`.
    pub fn read_reply_into(&mut self, mut sink: Option<&mut dyn BodySink>) -> io::Result<Frame> {
        loop {
            let (header, size) = read_head(&mut self.reader)?;
            if header.contains_key("status") {
                return read_body(&mut self.reader, header, size, sink.take());
            }
            let frame = read_body(&mut self.reader, header, size, None)?;
            if frame.op() == Some("bye") {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("server closed: {}", frame.str("reason").unwrap_or("")),
                ));
            }
            self.pushes.push_back(frame);
        }
    }

    /// Sends a request and waits for its reply.
    pub fn request(&mut self, op: &str, fields: Value, body: &[u8]) -> io::Result<Frame> {
        let id = self.send(op, fields, body)?;
        let reply = self.read_reply()?;
        if !reply.answers(id) {
            return Err(protocol_error(format!(
                "reply id {:?}, expected {id}",
                reply.id()
            )));
        }
        Ok(reply)
    }

    /// How many pushes arrived while waiting for replies and were not taken yet.
    pub fn queued_pushes(&self) -> usize {
        self.pushes.len()
    }

    /// A push received earlier, or the next frame if it is one.
    pub fn next_push(&mut self) -> io::Result<Frame> {
        match self.pushes.pop_front() {
            Some(p) => Ok(p),
            None => read_frame(&mut self.reader),
        }
    }

    /// The socket, for callers that take over the connection after the handshake
    /// (the load generator). Fails if the server already sent more than was read.
    pub fn into_stream(self) -> io::Result<TcpStream> {
        if !self.reader.buffer().is_empty() || !self.pushes.is_empty() {
            return Err(protocol_error("unread frames after the handshake"));
        }
        match self.reader.into_inner() {
            Stream::Tcp(s) => Ok(s),
            Stream::Unix(_) => Err(protocol_error("not a TCP connection")),
            Stream::Tls(_) => Err(protocol_error("a TLS connection cannot be taken over")),
        }
    }

    /// Like [`Client::into_stream`], for a TLS connection: its socket and session.
    pub fn into_tls(self) -> io::Result<(TcpStream, rustls::ClientConnection)> {
        if !self.reader.buffer().is_empty() || !self.pushes.is_empty() {
            return Err(protocol_error("unread frames after the handshake"));
        }
        drop(self.requester); // the other handle on the session
        match self.reader.into_inner() {
            Stream::Tls(tls) => tls.into_parts(),
            Stream::Tcp(_) | Stream::Unix(_) => Err(protocol_error("not a TLS connection")),
        }
    }

    /// The sending half, for streamed uploads.
    pub fn requester(&mut self) -> &mut Requester {
        &mut self.requester
    }

    /// Splits into a sending half and a receiving half, for a reader thread that
    /// prints pushes as they arrive (the interactive shell).
    pub fn split(self) -> (Requester, BufReader<Stream>, VecDeque<Frame>) {
        (self.requester, self.reader, self.pushes)
    }

    /// The raw socket, for tests that misbehave on purpose.
    pub fn stream(&self) -> &Stream {
        &self.requester.stream
    }
}
