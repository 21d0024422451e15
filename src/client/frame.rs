//! Frames as the client receives them, read from any blocking `Read` through the
//! crate's one frame decoder (`proto::Decoder`: length bounds, header validation).

use crate::proto::{Decoder, Event, FrameError, Header, Limits};
use serde_json::{Map, Value};
use std::io::{self, Read, Write};

/// What the client accepts from a server. The header bound is a sanity bound,
/// not a protocol limit; bodies of any size are streamed or read as they arrive.
const LIMITS: Limits = Limits {
    max_header: 1 << 24,
    max_body: u64::MAX,
    body_allowed: true,
};

/// Header bytes reserved up front; a longer header grows as its bytes arrive.
const HEADER_RESERVE: usize = 64 * 1024;

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

    /// Whether this reply answers request `id`: it carries that id, or it is an
    /// error without one (a framing error such as 431 answers whatever was in flight).
    pub fn answers(&self, id: u64) -> bool {
        match self.id() {
            Some(got) => got == id,
            None => self.status() >= 400,
        }
    }
}

/// Reads one frame (blocking).
pub fn read_frame<R: Read>(r: &mut R) -> io::Result<Frame> {
    let (header, size) = read_head(r)?;
    read_body(r, header, size, None)
}

fn invalid(e: FrameError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.message())
}

/// Reads a frame's length prefix and header; returns the header and the body size.
/// Reads exactly the frame's bytes, never past them: `r` need not buffer.
pub fn read_head<R: Read>(r: &mut R) -> io::Result<(Map<String, Value>, u64)> {
    let mut decoder = Decoder::new(LIMITS);
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    // The decoder refuses a zero or over-limit length before anything is allocated for it.
    decoder
        .decode(&prefix, &mut Header::default())
        .map_err(invalid)?;
    let len = u32::from_be_bytes(prefix);
    // Within the bound, the header still grows only with bytes that arrive.
    let mut head = Vec::with_capacity((len as usize).min(HEADER_RESERVE));
    r.by_ref().take(u64::from(len)).read_to_end(&mut head)?;
    if head.len() as u64 != u64::from(len) {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut parsed = Header::default();
    let size = match decoder.decode(&head, &mut parsed).map_err(invalid)? {
        (_, Some(Event::Head { .. })) => parsed.size,
        // Unreachable: the decoder was given exactly the header it asked for.
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "short header")),
    };
    // The decoder validated the header (a JSON object, `size` a u64); the frame keeps it as a map.
    let header =
        serde_json::from_slice(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
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
    // `take` reads as bytes arrive, so a claimed size allocates nothing by itself.
    let mut rest = r.by_ref().take(size);
    let got = match sink {
        Some(sink) if ok_reply => {
            sink.begin(size);
            io::copy(&mut rest, sink)?
        }
        _ => rest.read_to_end(&mut body)? as u64,
    };
    if got != size {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Frame { header, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::encode_frame;

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

    #[test]
    fn hostile_lengths_are_refused_or_cost_what_arrived() {
        // Over the bound: refused from the prefix alone.
        let err = read_frame(&mut &[2u8, 0, 0, 0, b'{'][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Within the bound but cut short: the end of input, not a 16 MiB buffer.
        let err = read_frame(&mut &[0u8, 255, 255, 255, b'{'][..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        for bad in [&b"[1]"[..], b"{\"size\":-1}", b"{", b"{\"a\":\"\xff\"}"] {
            let bytes = encode_frame(bad, b"");
            assert!(read_frame(&mut &bytes[..]).is_err());
        }
    }

    #[test]
    fn reads_stop_at_the_frame_end() {
        let mut bytes = encode_frame(br#"{"op":"a"}"#, b"");
        bytes.extend(encode_frame(br#"{"op":"b","size":1}"#, b"x"));
        let mut input = &bytes[..];
        assert_eq!(read_frame(&mut input).unwrap().op(), Some("a"));
        let b = read_frame(&mut input).unwrap();
        assert_eq!((b.op(), b.body.as_slice()), (Some("b"), &b"x"[..]));
        assert!(input.is_empty());
    }

    #[test]
    fn answers_matches_the_id_or_an_id_less_error() {
        let frame = |h: &[u8]| read_frame(&mut &encode_frame(h, b"")[..]).unwrap();
        assert!(frame(br#"{"status":200,"id":4}"#).answers(4));
        assert!(!frame(br#"{"status":200,"id":3}"#).answers(4));
        assert!(frame(br#"{"status":431}"#).answers(4));
        assert!(!frame(br#"{"status":200}"#).answers(4));
    }
}
