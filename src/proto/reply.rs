//! Frame encoding: writes a header (length prefix + JSON object) straight into an
//! output buffer; nothing is allocated. Keys and integers are written directly
//! (every reply has them), other values by serde_json.

use byteorder::{BigEndian, ByteOrder};
use serde::Serialize;

/// Builds one frame header in place at the end of `buf`; the body is queued by the caller.
pub struct HeadWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
}

impl<'b> HeadWriter<'b> {
    fn open(buf: &'b mut Vec<u8>) -> HeadWriter<'b> {
        let start = buf.len();
        buf.extend_from_slice(&[0, 0, 0, 0, b'{']);
        HeadWriter { buf, start }
    }

    /// A reply: `{"status":S,"id":N` (id only when the request had one).
    pub fn reply(buf: &'b mut Vec<u8>, status: u16, id: Option<u64>) -> HeadWriter<'b> {
        let mut w = HeadWriter::open(buf);
        w.key("status").number(u64::from(status));
        if let Some(id) = id {
            w.number_field("id", id);
        }
        w
    }

    /// An error reply: status, id and `error`.
    pub fn error(
        buf: &'b mut Vec<u8>,
        status: u16,
        id: Option<u64>,
        message: &str,
    ) -> HeadWriter<'b> {
        let mut w = HeadWriter::reply(buf, status, id);
        w.field("error", message);
        w
    }

    /// A push: `{"op":"NAME"`.
    pub fn push(buf: &'b mut Vec<u8>, op: &str) -> HeadWriter<'b> {
        let mut w = HeadWriter::open(buf);
        w.key("op").value(op);
        w
    }

    /// Adds `"key":value`.
    pub fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> &mut Self {
        self.buf.push(b',');
        self.key(key).value(value)
    }

    /// `"key":`. Keys are the contract's field names, literals in our code:
    /// nothing in them needs escaping.
    fn key(&mut self, key: &str) -> &mut Self {
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
        self
    }

    /// Adds `"key":n`, written without serde.
    fn number_field(&mut self, key: &str, n: u64) {
        self.buf.push(b',');
        self.key(key).number(n);
    }

    fn number(&mut self, n: u64) -> &mut Self {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> &mut Self {
        // Writing a str, integer or bool into a Vec cannot fail.
        let res = serde_json::to_writer(&mut *self.buf, value);
        debug_assert!(res.is_ok());
        self
    }

    /// Closes the header (with `size` when a body follows) and fills in the length prefix.
    pub fn finish(&mut self, body_len: u64) {
        if body_len > 0 {
            self.number_field("size", body_len);
        }
        self.buf.push(b'}');
        let len = self.buf.len() - self.start - 4;
        // Our own headers are small; the u32 cast cannot truncate.
        BigEndian::write_u32(&mut self.buf[self.start..self.start + 4], len as u32);
    }
}

/// One whole frame from header bytes and body (for clients and tests).
pub fn encode_frame(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + header.len() + body.len());
    let mut len = [0u8; 4];
    BigEndian::write_u32(&mut len, header.len() as u32);
    out.extend_from_slice(&len);
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_headers() {
        let mut buf = b"xx".to_vec();
        HeadWriter::error(&mut buf, 400, Some(9), "bad \"op\"").finish(0);
        let json = br#"{"status":400,"id":9,"error":"bad \"op\""}"#;
        assert_eq!(&buf[..2], b"xx");
        assert_eq!(BigEndian::read_u32(&buf[2..6]) as usize, json.len());
        assert_eq!(&buf[6..], json);

        let mut buf = Vec::new();
        HeadWriter::push(&mut buf, "bye")
            .field("reason", "idle")
            .finish(3);
        assert_eq!(&buf[4..], br#"{"op":"bye","reason":"idle","size":3}"#);
    }
}
