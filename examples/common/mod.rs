//! What the chat benchmark drivers share: member connections that logged in
//! and joined the room, handed to mio, and what each must receive next.

use frameloop::client::{Client, Credentials};
use mio::net::TcpStream;
use serde_json::json;
use std::error::Error;

pub struct Member {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// The next message number this member must receive.
    pub next: u64,
}

/// One connection, authenticated and in `room`, handed to mio. Members join
/// one after another, so nothing is sent to this one between its join reply
/// and the next join: the client library has read nothing ahead.
pub fn member(addr: &str, creds: &Credentials, room: &str) -> Result<TcpStream, Box<dyn Error>> {
    let mut c = Client::connect(addr, creds)?;
    let r = c.request("join", json!({ "room": room }), b"")?;
    if r.status() != 200 {
        return Err(format!("join: {r:?}").into());
    }
    let stream = c.into_stream()?;
    stream.set_nonblocking(true)?;
    Ok(TcpStream::from_std(stream))
}

/// The sender: a member too, registered for reading its replies and writing.
pub fn sender(
    poll: &mio::Poll,
    token: mio::Token,
    addr: &str,
    creds: &Credentials,
    room: &str,
) -> Result<TcpStream, Box<dyn Error>> {
    let mut sender = member(addr, creds, room)?;
    let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
    poll.registry().register(&mut sender, token, interest)?;
    Ok(sender)
}

/// The header a member's `msg` push has (the same bytes for every message,
/// so a driver compares instead of parsing), and the sender's `say` header.
pub fn heads(room: &str, size: u64) -> (String, String) {
    (
        format!(r#"{{"op":"msg","room":"{room}","from":"guest","size":{size}}}"#),
        format!(r#"{{"op":"say","room":"{room}","size":{size}}}"#),
    )
}
