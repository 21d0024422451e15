//! The chat bus between servers (contract section 12) as pure code over
//! bytes: the two Redis connections a worker keeps (one subscribed, one
//! publishing), the commands written to each, and what their replies mean.
//! The server does the I/O (src/server/bus.rs); `probe` checks Redis at start.

mod probe;
mod url;

pub use probe::{Target, greet, probe};
pub use url::Url;

use crate::proto::resp::{self, Bounds, Malformed, Value};
use std::collections::VecDeque;

/// Bytes of the origin id that starts every message on the bus: whose
/// message it is, so a worker skips its own when Redis sends it back.
pub const ORIGIN_LEN: usize = 16;

/// Names what a worker waits for an answer to: a `join`'s subscription, or
/// a `dm`'s count of receivers.
pub type Ticket = u64;

/// A worker's two connections to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Subscribed to the channels of this worker's rooms and users: it
    /// receives messages (in RESP2 it can send nothing else).
    Sub = 0,
    /// Sends `PUBLISH`, whose reply counts the subscribers it reached.
    Pub = 1,
}

pub const LINES: [Line; 2] = [Line::Sub, Line::Pub];

/// A channel: a room's or a user's (`dm`). Names are valid names (section 7),
/// so the channel name needs no escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel<'a> {
    Room(&'a str),
    User(&'a str),
}

const ROOM_PREFIX: &[u8] = b"frameloop:room:";
const USER_PREFIX: &[u8] = b"frameloop:user:";

impl<'a> Channel<'a> {
    fn parse(name: &'a [u8]) -> Option<Channel<'a>> {
        let text = |rest: &'a [u8]| std::str::from_utf8(rest).ok();
        if let Some(rest) = name.strip_prefix(ROOM_PREFIX) {
            text(rest).map(Channel::Room)
        } else {
            name.strip_prefix(USER_PREFIX)
                .and_then(text)
                .map(Channel::User)
        }
    }

    /// Appends the channel's name as a bulk string.
    fn write(self, out: &mut Vec<u8>) {
        let (prefix, name) = match self {
            Channel::Room(name) => (ROOM_PREFIX, name),
            Channel::User(name) => (USER_PREFIX, name),
        };
        resp::bulk_parts(out, &[prefix, name.as_bytes()]);
    }
}

/// What the bus tells the worker.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Both connections are in (authenticated): subscribe to what is needed.
    Up,
    /// A push from another worker or server, for the members here.
    Message {
        room: bool,
        name: String,
        /// Copied once out of what was read, then shared by every member here.
        frame: std::rc::Rc<[u8]>,
    },
    /// An answer someone waits for: 1 for a subscription made, the number of
    /// subscribers reached for a `PUBLISH`.
    Answer { ticket: Ticket, count: i64 },
}

/// One connection's protocol state.
#[derive(Debug, Default)]
struct Conn {
    /// Commands not yet written (the server writes from the front).
    out: Vec<u8>,
    /// Bytes read; those before `decoded` are used (dropped all at once when
    /// nothing whole is left, not per value: a read may hold thousands).
    input: Vec<u8>,
    decoded: usize,
    /// Its first reply (to `AUTH`, or `PING` without a password) came.
    ready: bool,
    /// What each reply still to come answers, in order.
    awaiting: VecDeque<Option<Ticket>>,
}

/// The bus as one worker sees it.
#[derive(Debug)]
pub struct Node {
    origin: [u8; ORIGIN_LEN],
    /// What each connection says first: `AUTH`, or a `PING` without a password.
    hello: Vec<u8>,
    conns: [Conn; 2],
    bounds: Bounds,
    /// What Redis last answered with an error.
    error: Option<String>,
}

impl Node {
    /// The node of the worker named `origin`, whose messages are at most
    /// `max_frame` bytes.
    pub fn new(url: &Url, origin: [u8; ORIGIN_LEN], max_frame: usize) -> Node {
        let mut hello = Vec::new();
        match (&url.user, &url.password) {
            (Some(user), Some(pass)) => {
                resp::command(&mut hello, &[b"AUTH", user.as_bytes(), pass.as_bytes()])
            }
            (None, Some(pass)) => resp::command(&mut hello, &[b"AUTH", pass.as_bytes()]),
            _ => resp::command(&mut hello, &[b"PING"]),
        }
        let max_bulk = max_frame.saturating_add(ORIGIN_LEN + 1024);
        Node {
            origin,
            hello,
            conns: Default::default(),
            error: None,
            bounds: Bounds {
                max_bulk,
                max_items: 8,
                max_depth: 2,
                max_value: max_bulk.saturating_add(1024),
            },
        }
    }

    fn conn(&mut self, line: Line) -> &mut Conn {
        &mut self.conns[line as usize]
    }

    /// Starts again on new connections: each first says who it is. Returns
    /// the tickets that will never be answered now (their waiters fail).
    pub fn restart(&mut self) -> Vec<Ticket> {
        let mut lost = Vec::new();
        for conn in &mut self.conns {
            lost.extend(conn.awaiting.drain(..).flatten());
            *conn = Conn::default();
            conn.out.extend_from_slice(&self.hello);
        }
        lost
    }

    /// `line` was greeted before it reached the loop ([`greet`]): its hello
    /// is not to be sent again. `Up` once both are.
    pub fn greeted(&mut self, line: Line) -> Option<Event> {
        let conn = self.conn(line);
        conn.out.clear();
        conn.ready = true;
        self.is_up().then_some(Event::Up)
    }

    /// Both connections are in.
    pub fn is_up(&self) -> bool {
        self.conns.iter().all(|c| c.ready)
    }

    /// Bytes to write on `line` (the server drains what it wrote).
    pub fn output(&mut self, line: Line) -> &mut Vec<u8> {
        &mut self.conn(line).out
    }

    /// Bytes read from `line`.
    pub fn received(&mut self, line: Line, bytes: &[u8]) {
        self.conn(line).input.extend_from_slice(bytes);
    }

    pub fn subscribe(&mut self, channel: Channel, ticket: Option<Ticket>) {
        self.on_sub(b"SUBSCRIBE", channel, ticket);
    }

    pub fn unsubscribe(&mut self, channel: Channel) {
        self.on_sub(b"UNSUBSCRIBE", channel, None);
    }

    fn on_sub(&mut self, verb: &[u8], channel: Channel, ticket: Option<Ticket>) {
        let conn = self.conn(Line::Sub);
        conn.out.extend_from_slice(b"*2\r\n");
        resp::bulk(&mut conn.out, verb);
        channel.write(&mut conn.out);
        conn.awaiting.push_back(ticket);
    }

    /// Publishes `frame` (a whole push frame) to `channel`, with this node's
    /// origin in front; `ticket`: someone waits for the count of receivers.
    pub fn publish(&mut self, channel: Channel, frame: &[u8], ticket: Option<Ticket>) {
        let origin = self.origin;
        let conn = self.conn(Line::Pub);
        conn.out.extend_from_slice(b"*3\r\n");
        resp::bulk(&mut conn.out, b"PUBLISH");
        channel.write(&mut conn.out);
        resp::bulk_parts(&mut conn.out, &[&origin, frame]);
        conn.awaiting.push_back(ticket);
    }

    /// The next thing the bytes read on `line` say, if they hold one whole.
    /// An error: the connection is to be dropped (Redis refused us, or sent
    /// what is not RESP or not expected).
    pub fn next_event(&mut self, line: Line) -> Result<Option<Event>, Malformed> {
        loop {
            let bounds = self.bounds;
            let conn = self.conn(line);
            let rest = conn.input.get(conn.decoded..).unwrap_or_default();
            let Some((value, used)) = resp::decode(rest, bounds)? else {
                conn.input.drain(..conn.decoded);
                conn.decoded = 0;
                return Ok(None);
            };
            conn.decoded += used;
            if let Some(event) = self.understand(line, value)? {
                return Ok(Some(event));
            }
        }
    }

    fn understand(&mut self, line: Line, value: Value) -> Result<Option<Event>, Malformed> {
        let origin = self.origin;
        let conn = self.conn(line);
        if !conn.ready {
            return match value {
                Value::Simple(_) => {
                    conn.ready = true;
                    Ok(self.is_up().then_some(Event::Up))
                }
                Value::Error(e) => {
                    self.error = Some(e);
                    Err(Malformed("Redis refused the AUTH or PING"))
                }
                _ => Err(Malformed("Redis refused the AUTH or PING")),
            };
        }
        let answer = |conn: &mut Conn, count| match conn.awaiting.pop_front() {
            Some(Some(ticket)) => Ok(Some(Event::Answer { ticket, count })),
            Some(None) => Ok(None),
            None => Err(Malformed("a reply nothing asked for")),
        };
        match (line, value) {
            (Line::Pub, Value::Int(count)) => answer(conn, count),
            // A barrier's PING: `+PONG` while nothing is subscribed, else a push.
            (Line::Sub, Value::Simple(_)) => answer(conn, 1),
            (Line::Sub, Value::Array(Some(items))) => match &items[..] {
                [Value::Bulk(Some(kind)), _, Value::Int(_)]
                    if kind == b"subscribe" || kind == b"unsubscribe" =>
                {
                    answer(conn, 1)
                }
                [Value::Bulk(Some(kind)), Value::Bulk(_)] if kind == b"pong" => answer(conn, 1),
                [
                    Value::Bulk(Some(kind)),
                    Value::Bulk(Some(channel)),
                    Value::Bulk(Some(payload)),
                ] if kind == b"message" => Ok(message(&origin, channel, payload)),
                _ => Err(Malformed("an unexpected push")),
            },
            (_, Value::Error(e)) => {
                self.error = Some(e);
                Err(Malformed("Redis answered an error"))
            }
            _ => Err(Malformed("an unexpected reply")),
        }
    }

    /// What Redis last answered with an error (it explains the loss), once.
    pub fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    /// Asks Redis, on the subscribed connection, for an answer that comes after
    /// everything it sends there before (`ticket`: who waits for it).
    pub fn barrier(&mut self, ticket: Ticket) {
        let conn = self.conn(Line::Sub);
        resp::command(&mut conn.out, &[b"PING"]);
        conn.awaiting.push_back(Some(ticket));
    }

    /// Whether `line` owes answers (a Redis that stops answering is lost).
    pub fn owes(&self, line: Line) -> bool {
        !self.conns[line as usize].awaiting.is_empty()
    }
}

/// A message from another worker or server, for the members here. `None`:
/// ours come back, or not on a channel of ours, or not a push frame that
/// members could read (dropped, not passed on to break their framing).
fn message(origin: &[u8], channel: &[u8], payload: &[u8]) -> Option<Event> {
    let (from, frame) = payload.split_at_checked(ORIGIN_LEN)?;
    if from == origin || !is_push(frame) {
        return None;
    }
    let (room, name) = match Channel::parse(channel)? {
        Channel::Room(name) => (true, name),
        Channel::User(name) => (false, name),
    };
    Some(Event::Message {
        room,
        name: name.to_string(),
        frame: frame.into(),
    })
}

/// Whether `frame` is one whole chat push: a length, a JSON header whose op
/// is a push chat makes, and exactly the body its `size` says.
fn is_push(frame: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        op: std::borrow::Cow<'a, str>,
        #[serde(default)]
        size: u64,
    }
    let Some((len, rest)) = frame.split_first_chunk::<4>() else {
        return false;
    };
    let Some((head, body)) = rest.split_at_checked(u32::from_be_bytes(*len) as usize) else {
        return false;
    };
    if head.first() != Some(&b'{') {
        return false; // an object, not the array serde would also read
    }
    match serde_json::from_slice::<Head>(head) {
        Ok(h) => matches!(&*h.op, "msg" | "joined" | "left") && body.len() as u64 == h.size,
        Err(_) => false,
    }
}

/// The origin id of worker `worker` of the server whose random id is `server`
/// (hex): unique across the servers sharing a Redis.
pub fn origin(server: &str, worker: usize) -> [u8; ORIGIN_LEN] {
    let mut id = [b'0'; ORIGIN_LEN];
    let worker = format!("{worker:02x}");
    for (to, from) in id
        .iter_mut()
        .zip(server.bytes().take(ORIGIN_LEN - 2).chain(worker.bytes()))
    {
        *to = from;
    }
    id
}

#[cfg(test)]
mod tests;
