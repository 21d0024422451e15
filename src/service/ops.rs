//! The stateless ops of contract section 4: ping, echo, upper, stamp, time, stats.
//! Pure functions from a request to a reply, so any transport can serve them.

use super::Op;
use super::stats::Stats;
use crate::outbuf::OutBuf;
use crate::proto::header::opt_str;
use crate::proto::{HeadWriter, Header};
use chrono::format::{Item, StrftimeItems};
use std::fmt::Write as _;

/// A successful reply's body.
#[derive(Debug)]
pub enum Reply {
    Empty,
    /// Bytes sent as they are (moved into the output queue, not copied when large).
    Bytes(Vec<u8>),
    /// A short prefix followed by the request's own body (`stamp`).
    Prefixed(String, Vec<u8>),
}

impl Reply {
    pub fn body_len(&self) -> u64 {
        match self {
            Reply::Empty => 0,
            Reply::Bytes(b) => b.len() as u64,
            Reply::Prefixed(p, b) => (p.len() + b.len()) as u64,
        }
    }

    /// Queues the reply frame: header with status 200, then the body.
    pub fn write(self, out: &mut OutBuf, id: Option<u64>) {
        let size = self.body_len();
        out.append(|buf| HeadWriter::reply(buf, 200, id).finish(size));
        match self {
            Reply::Empty => {}
            Reply::Bytes(body) => out.push_body(body),
            Reply::Prefixed(prefix, body) => {
                out.append(|buf| buf.extend_from_slice(prefix.as_bytes()));
                out.push_body(body);
            }
        }
    }
}

/// A request the op refuses: status and message for the error reply.
#[derive(Debug, PartialEq, Eq)]
pub struct OpError {
    pub status: u16,
    pub message: String,
}

impl OpError {
    pub fn bad(message: impl Into<String>) -> OpError {
        OpError {
            status: 400,
            message: message.into(),
        }
    }
}

/// Longest `format` accepted by `time`.
pub const MAX_FORMAT: usize = 256;
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %X";
const STAMP_FORMAT: &str = "%a %b %e %H:%M:%S %Y";

/// Runs an op that takes no body (any body sent is dropped by the caller).
pub fn run(op: Op, header: &Header, stats: &Stats) -> Result<Reply, OpError> {
    match op {
        Op::Ping => Ok(Reply::Empty),
        Op::Time => {
            let format =
                opt_str(header.format, "format").map_err(|e| OpError::bad(e.to_string()))?;
            time(format.as_deref().unwrap_or(DEFAULT_TIME_FORMAT))
                .map(|t| Reply::Bytes(t.into_bytes()))
        }
        Op::Stats => Ok(Reply::Bytes(stats.to_json())),
        // Only stateless ops without a body come here; answer sanely if another does.
        _ => Err(OpError::bad("op not valid here")),
    }
}

/// Runs an op on its complete body.
pub fn run_with_body(op: Op, mut body: Vec<u8>) -> Result<Reply, OpError> {
    match op {
        Op::Echo => Ok(Reply::Bytes(body)),
        Op::Upper => {
            body.make_ascii_uppercase();
            Ok(Reply::Bytes(body))
        }
        Op::Stamp => Ok(Reply::Prefixed(stamp_prefix(), body)),
        _ => Err(OpError::bad("op takes no body")),
    }
}

/// strftime of the local time. The format is checked first: chrono panics when a
/// format with an error item is displayed, and a client's format must never do that.
pub fn time(format: &str) -> Result<String, OpError> {
    if format.len() > MAX_FORMAT {
        return Err(OpError::bad(format!("format is over {MAX_FORMAT} bytes")));
    }
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(OpError::bad("bad strftime format"));
    }
    let mut text = String::new();
    write!(
        text,
        "{}",
        chrono::Local::now().format_with_items(items.into_iter())
    )
    .map_err(|_| OpError::bad("bad strftime format"))?;
    Ok(text)
}

/// `[` + ctime-style local time + `] `.
fn stamp_prefix() -> String {
    format!("[{}] ", chrono::Local::now().format(STAMP_FORMAT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        assert_eq!(time("%Y").unwrap().len(), 4);
        assert_eq!(time("plain").unwrap(), "plain");
        assert_eq!(time("").unwrap(), "");
        let t = time(DEFAULT_TIME_FORMAT).unwrap();
        assert_eq!(t.len(), "2026-11-22 03:58:07".len(), "{t}");
    }

    #[test]
    fn bad_formats_are_400_not_panics() {
        for f in ["%", "%Q", "%-", "abc %E", "%:"] {
            assert_eq!(time(f).unwrap_err().status, 400, "{f}");
        }
        assert_eq!(time(&"a".repeat(257)).unwrap_err().status, 400);
        assert!(time(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn upper_changes_only_ascii_letters() {
        let body = "aZ9 é\u{0}ß".as_bytes().to_vec();
        let Ok(Reply::Bytes(got)) = run_with_body(Op::Upper, body) else {
            panic!()
        };
        assert_eq!(got, "AZ9 é\u{0}ß".as_bytes());
    }

    #[test]
    fn stamp_prefix_shape() {
        let p = stamp_prefix();
        // "[Sun Nov 22 03:58:07 2026] "
        assert_eq!(p.len(), 27, "{p}");
        assert!(p.starts_with('[') && p.ends_with("] "));
    }
}
