//! The sending half of a connection: numbers requests and writes their frames,
//! with the body whole or streamed from a reader (a file upload).

use super::Stream;
use crate::proto::encode_frame;
use serde_json::{Map, Value};
use std::io::{self, Read, Write};

/// A request's header: `fields` (a JSON object, or `null`) with `op`, `id` and,
/// for a body, `size`.
pub fn request_header(op: &str, id: u64, fields: Value, body: &[u8]) -> Value {
    let size = (!body.is_empty()).then_some(body.len() as u64);
    numbered(op, id, fields, size)
}

/// `fields` (a JSON object, or `null`) with `op`, `id` and, when given, `size`.
fn numbered(op: &str, id: u64, fields: Value, size: Option<u64>) -> Value {
    let mut header = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    header.insert("op".into(), op.into());
    header.insert("id".into(), id.into());
    if let Some(size) = size {
        header.insert("size".into(), size.into());
    }
    Value::Object(header)
}

/// The sending half of a connection: numbers requests and writes them.
pub struct Requester {
    pub(super) stream: Stream,
    next_id: u64,
}

impl Requester {
    pub(super) fn new(stream: Stream) -> Requester {
        Requester { stream, next_id: 1 }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends a request without waiting; returns the id it was given.
    /// `fields` is a JSON object of the op's fields (or `null`).
    pub fn send(&mut self, op: &str, fields: Value, body: &[u8]) -> io::Result<u64> {
        let id = self.take_id();
        write_frame(
            &mut self.stream,
            &request_header(op, id, fields, body),
            body,
        )?;
        Ok(id)
    }

    /// Sends a request whose `size`-byte body is copied from `body` as it is
    /// read (a file upload), never held whole in memory.
    pub fn send_stream(
        &mut self,
        op: &str,
        fields: Value,
        size: u64,
        body: &mut dyn Read,
    ) -> io::Result<u64> {
        let id = self.take_id();
        // `size` goes in even when 0: the header announces what the stream holds.
        write_frame(&mut self.stream, &numbered(op, id, fields, Some(size)), b"")?;
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

/// Writes one frame: `header` serialized, then `body`.
pub(super) fn write_frame(w: &mut impl Write, header: &Value, body: &[u8]) -> io::Result<()> {
    let head = serde_json::to_vec(header)?;
    w.write_all(&encode_frame(&head, body))
}
