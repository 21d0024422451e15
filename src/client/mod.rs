//! A blocking client: connect over TCP or a Unix socket, do the handshake
//! (checking the server's proof too), then requests with ids, pipelined or one
//! at a time ([`udp`]: the UDP client). Shared by the tests, the CLI client
//! (`cli`) and the tools.

pub mod cli;
pub mod transfer;
pub mod udp;

use crate::auth::{self, Key};
use crate::proto::encode_frame;
use byteorder::{BigEndian, ByteOrder};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The client's connection: TCP or a Unix socket, same protocol.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    /// Our TCP address (an error for a Unix socket, which has none worth naming).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr(),
            Stream::Unix(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Largest header the client accepts from a server (a sanity bound, not a protocol limit).
const MAX_HEADER: usize = 1 << 24;

/// One frame as received: its JSON header and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub header: Map<String, Value>,
    pub body: Vec<u8>,
}

impl Frame {
    /// The reply status, or 0 for a push.
    pub fn status(&self) -> u64 {
        self.header
            .get("status")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    pub fn id(&self) -> Option<u64> {
        self.header.get("id").and_then(Value::as_u64)
    }

    /// The push name (`op`), for frames without a status.
    pub fn op(&self) -> Option<&str> {
        self.header.get("op").and_then(Value::as_str)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.header.get(key).and_then(Value::as_str)
    }

    /// The error message of a reply with status >= 400.
    pub fn error(&self) -> Option<&str> {
        self.str("error")
    }

    pub fn is_push(&self) -> bool {
        !self.header.contains_key("status")
    }
}

/// Reads one frame (blocking).
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Frame> {
    let (header, size) = read_head(r)?;
    read_body(r, header, size, None)
}

/// Reads a frame's length prefix and header; returns the header and the body size.
pub fn read_head<R: Read>(r: &mut R) -> io::Result<(Map<String, Value>, u64)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = BigEndian::read_u32(&len) as usize;
    if len == 0 || len > MAX_HEADER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad header length {len}"),
        ));
    }
    let mut head = vec![0u8; len];
    r.read_exact(&mut head)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let size = match header.get("size") {
        None => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad size"))?,
    };
    Ok((header, size))
}

/// Where a streamed reply body goes; told the size before the first byte.
pub trait BodySink: Write {
    fn begin(&mut self, _size: u64) {}
}

/// Reads the `size` body bytes after `header`: into the frame, or, for a
/// successful reply when `sink` is given, straight into `sink` (a download is
/// never held in memory; the frame's body stays empty).
pub fn read_body<R: Read>(
    r: &mut R,
    header: Map<String, Value>,
    size: u64,
    sink: Option<&mut dyn BodySink>,
) -> io::Result<Frame> {
    let ok_reply = header.get("status").and_then(Value::as_u64) == Some(200);
    let mut body = Vec::new();
    let got = match sink {
        Some(sink) if ok_reply => {
            sink.begin(size);
            io::copy(&mut r.take(size), sink)?
        }
        _ => r.take(size).read_to_end(&mut body)? as u64,
    };
    if got != size {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Frame { header, body })
}

/// Who the client is: a user and key, or nobody (for `--no-auth` servers).
#[derive(Debug, Clone)]
pub enum Credentials {
    Key { user: String, key: Key },
    Anonymous,
}

impl Credentials {
    /// The command-line way: `--key HEX` when given, else the user's line in the users file.
    pub fn for_user(
        user: &str,
        key: Option<&str>,
        users: &std::path::Path,
    ) -> Result<Credentials, String> {
        let key = match key {
            Some(hex) => auth::hex32(hex).ok_or("--key must be 64 hex digits")?,
            None => *auth::Users::load(users)
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

/// A request's header: `fields` (a JSON object, or `null`) with `op`, `id` and,
/// for a body, `size`.
pub fn request_header(op: &str, id: u64, fields: Value, body: &[u8]) -> Value {
    let mut header = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    header.insert("op".into(), op.into());
    header.insert("id".into(), id.into());
    if !body.is_empty() {
        header.insert("size".into(), body.len().into());
    }
    Value::Object(header)
}

/// The sending half of a connection: numbers requests and writes them.
pub struct Requester {
    stream: Stream,
    next_id: u64,
}

impl Requester {
    /// Sends a request without waiting; returns the id it was given.
    /// `fields` is a JSON object of the op's fields (or `null`).
    pub fn send(&mut self, op: &str, fields: Value, body: &[u8]) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(
            &mut self.stream,
            &request_header(op, id, fields, body),
            body,
        )?;
        Ok(id)
    }
}

impl Requester {
    /// Sends a request whose `size`-byte body is copied from `body` as it is
    /// read (a file upload), never held whole in memory.
    pub fn send_stream(
        &mut self,
        op: &str,
        fields: Value,
        size: u64,
        body: &mut dyn Read,
    ) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let mut header = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        header.insert("op".into(), op.into());
        header.insert("id".into(), id.into());
        header.insert("size".into(), size.into());
        let head = serde_json::to_vec(&Value::Object(header))?;
        self.stream.write_all(&encode_frame(&head, b""))?;
        let sent = io::copy(&mut body.take(size), &mut self.stream)?;
        if sent != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the body ended after {sent} of {size} bytes"),
            ));
        }
        Ok(id)
    }
}

fn write_frame(w: &mut impl Write, header: &Value, body: &[u8]) -> io::Result<()> {
    let head = serde_json::to_vec(header)?;
    w.write_all(&encode_frame(&head, body))
}

/// How long connecting may take before the client gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Like [`Client::connect`], over the Unix socket at `path`.
    pub fn connect_unix(path: &Path, creds: &Credentials) -> io::Result<Client> {
        Client::over(Stream::Unix(UnixStream::connect(path)?), creds)
    }

    /// Reads the hello and authenticates on a connected stream.
    fn over(stream: Stream, creds: &Credentials) -> io::Result<Client> {
        let writer = stream.try_clone()?;
        let mut client = Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
            requester: Requester {
                stream: writer,
                next_id: 1,
            },
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

    fn handshake(&mut self, creds: &Credentials) -> io::Result<()> {
        match (self.hello.str("auth"), creds) {
            (Some("none"), _) => {
                self.user = "anonymous".into();
                Ok(())
            }
            (Some("hmac-sha256"), Credentials::Key { user, key }) => {
                let nonce = self
                    .hello
                    .str("nonce")
                    .and_then(auth::hex32)
                    .ok_or_else(|| protocol_error("hello has no valid nonce"))?;
                let cnonce = auth::random32()?;
                let mac = auth::client_mac(key, &nonce, &cnonce, user);
                let header = json!({"op": "auth", "user": user, "cnonce": hex::encode(cnonce), "mac": hex::encode(mac)});
                write_frame(&mut self.requester.stream, &header, &[])?;
                let reply = self.read_reply()?;
                if reply.status() != 200 {
                    return Err(auth_error(format!(
                        "server refused authentication: {} {}",
                        reply.status(),
                        reply.error().unwrap_or("")
                    )));
                }
                let proof = reply.str("mac").and_then(auth::hex32).unwrap_or_default();
                if !auth::verify_server(key, &nonce, &cnonce, user, &proof) {
                    return Err(auth_error(
                        "server failed mutual authentication (it does not know our key)",
                    ));
                }
                self.user = user.clone();
                Ok(())
            }
            (Some("hmac-sha256"), Credentials::Anonymous) => {
                Err(auth_error("server requires a key"))
            }
            (other, _) => Err(protocol_error(format!("unknown auth scheme {other:?}"))),
        }
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
        // An error without id (a framing error such as 431) answers this request too.
        if reply.id() != Some(id) && !(reply.id().is_none() && reply.status() >= 400) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_frame_parses_and_bounds() {
        let bytes = encode_frame(br#"{"status":200,"id":3,"size":2}"#, b"hi");
        let f = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(
            (f.status(), f.id(), f.body.as_slice()),
            (200, Some(3), &b"hi"[..])
        );
        let short = encode_frame(br#"{"size":5}"#, b"hi");
        assert!(read_frame(&mut &short[..]).is_err());
        assert!(read_frame(&mut &[0u8, 0, 0, 0][..]).is_err());
    }
}
