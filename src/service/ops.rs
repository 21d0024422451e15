//! The stateless ops of contract section 4 (ping, echo, upper, stamp, time, stats),
//! and `OpError`, the refusal every service replies with.
//! The ops keep no state and do no I/O, so any transport can serve them; `time` and
//! `stamp` read the local clock, once per request in `run` and `run_with_body`.

use super::Op;
use super::files::path::PathError;
use super::stats::{self, Stats};
use crate::outbuf::FrameOut;
use crate::proto::header::{FieldError, opt_str};
use crate::proto::{HeadWriter, Header};
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Local};
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;

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

    /// Writes the reply frame (header with status 200, then the body) to a
    /// connection's queue or to a datagram being built.
    pub fn write(self, out: &mut impl FrameOut, id: Option<u64>) {
        let size = self.body_len();
        out.append(|buf| HeadWriter::reply(buf, 200, id).finish(size));
        match self {
            Reply::Empty => {}
            Reply::Bytes(body) => out.push_body(body),
            Reply::Prefixed(prefix, body) => {
                out.push_body(prefix.into_bytes());
                out.push_body(body);
            }
        }
    }
}

/// A request the op refuses: status and message for the error reply.
///
/// One way to make one from each kind of cause: `OpError::new` for a refusal the
/// service decides, `OpError::bad` for a 400 it words itself, and `?` (the `From`
/// impls below) for a bad header field, a bad path and a failed file system call.
#[derive(Debug, PartialEq, Eq)]
pub struct OpError {
    pub status: u16,
    pub message: String,
}

impl OpError {
    pub fn new(status: u16, message: impl Into<String>) -> OpError {
        OpError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad(message: impl Into<String>) -> OpError {
        OpError::new(400, message)
    }
}

/// A missing or mistyped header field: 400.
impl From<FieldError> for OpError {
    fn from(e: FieldError) -> OpError {
        OpError::bad(e.to_string())
    }
}

/// A path the resolver refuses, with its status (400 or 403, contract section 5).
impl From<PathError> for OpError {
    fn from(e: PathError) -> OpError {
        OpError::new(e.status, e.message)
    }
}

/// A failed file system call, as the contract's status for it (section 5).
impl From<io::Error> for OpError {
    fn from(e: io::Error) -> OpError {
        let (status, message) = match e.raw_os_error().unwrap_or(0) {
            libc::ENOENT => (404, "no such file or directory"),
            // ELOOP: RESOLVE_NO_SYMLINKS met a symlink; EXDEV: RESOLVE_BENEATH met an escape.
            libc::ELOOP | libc::EXDEV => (403, "a path component is a symbolic link"),
            libc::ENOTDIR => (409, "not a directory"),
            libc::EISDIR => (409, "is a directory"),
            libc::EEXIST => (409, "already exists"),
            libc::ENOTEMPTY => (409, "directory not empty"),
            libc::EACCES | libc::EPERM => (403, "permission denied"),
            libc::ENAMETOOLONG => (400, "name too long"),
            libc::ENOSPC | libc::EDQUOT => (500, "the server's disk is full"),
            _ => {
                log::warn!("file service: {e}");
                return OpError::new(500, format!("server file error: {e}"));
            }
        };
        OpError::new(status, message)
    }
}

/// Longest `format` accepted by `time`.
pub const MAX_FORMAT: usize = 256;
pub const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%d %X";
const STAMP_FORMAT: &str = "%a %b %e %H:%M:%S %Y";

/// Runs an op that takes no body (any body sent is dropped by the caller).
/// `stats` reports every worker's counters (`all`).
pub fn run(op: Op, header: &Header, all: &[Arc<Stats>]) -> Result<Reply, OpError> {
    match op {
        Op::Ping => Ok(Reply::Empty),
        Op::Time => {
            let format = opt_str(header.format, "format")?;
            let format = format.as_deref().unwrap_or(DEFAULT_TIME_FORMAT);
            time(format, Local::now()).map(|t| Reply::Bytes(t.into_bytes()))
        }
        Op::Stats => Ok(Reply::Bytes(stats::report(all))),
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
        Op::Stamp => Ok(Reply::Prefixed(stamp_prefix(Local::now()), body)),
        _ => Err(OpError::bad("op takes no body")),
    }
}

/// strftime of `now`. The format is checked first: chrono panics when a format
/// with an error item is displayed, and a client's format must never do that.
pub fn time(format: &str, now: DateTime<Local>) -> Result<String, OpError> {
    if format.len() > MAX_FORMAT {
        return Err(OpError::bad(format!("format is over {MAX_FORMAT} bytes")));
    }
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(OpError::bad("bad strftime format"));
    }
    let mut text = String::new();
    write!(text, "{}", now.format_with_items(items.into_iter()))
        .map_err(|_| OpError::bad("bad strftime format"))?;
    Ok(text)
}

/// `[` + ctime-style `now` + `] `.
fn stamp_prefix(now: DateTime<Local>) -> String {
    format!("[{}] ", now.format(STAMP_FORMAT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Sun Nov 22 03:58:07 2026, local time.
    fn at() -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2026, 11, 22, 3, 58, 7)
            .earliest()
            .unwrap()
    }

    #[test]
    fn time_formats() {
        assert_eq!(time("%Y", at()).unwrap(), "2026");
        assert_eq!(time("plain", at()).unwrap(), "plain");
        assert_eq!(time("", at()).unwrap(), "");
        assert_eq!(
            time(DEFAULT_TIME_FORMAT, at()).unwrap(),
            "2026-11-22 03:58:07"
        );
    }

    #[test]
    fn bad_formats_are_400_not_panics() {
        for f in ["%", "%Q", "%-", "abc %E", "%:"] {
            assert_eq!(time(f, at()).unwrap_err().status, 400, "{f}");
        }
        assert_eq!(time(&"a".repeat(257), at()).unwrap_err().status, 400);
        assert!(time(&"a".repeat(256), at()).is_ok());
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
    fn stamp_prefix_is_ctime() {
        assert_eq!(stamp_prefix(at()), "[Sun Nov 22 03:58:07 2026] ");
    }

    #[test]
    fn io_errors_map_to_contract_statuses() {
        let status = |errno| OpError::from(io::Error::from_raw_os_error(errno)).status;
        assert_eq!(status(libc::ENOENT), 404);
        assert_eq!(status(libc::ELOOP), 403);
        assert_eq!(status(libc::EXDEV), 403);
        assert_eq!(status(libc::ENOTEMPTY), 409);
        assert_eq!(status(libc::ENAMETOOLONG), 400);
        assert_eq!(status(libc::EIO), 500);
    }
}
