//! RESP2, the Redis protocol, as pure code over bytes: commands encoded as
//! arrays of bulk strings, replies and pushes decoded from a buffer that may
//! hold less than one value (the chat bus of contract section 12 speaks it).
//! A bulk string's bytes are skipped by their length, never scanned, so
//! looking again at a buffer that grew costs per value, not per byte.

/// One RESP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:3`
    Int(i64),
    /// `$N` and N bytes; `None`: the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*N` and N values; `None`: the null array (`*-1`).
    Array(Option<Vec<Value>>),
}

/// Why bytes are not RESP (the connection is then dropped and made again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Bounds on what a peer may announce: a bulk string's length, an array's
/// count, how deep arrays nest, and one whole value's bytes (what may be
/// buffered waiting for it).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_bulk: usize,
    pub max_items: usize,
    pub max_depth: usize,
    pub max_value: usize,
}

/// The longest line (a simple string, an error, a number): scanned byte by
/// byte on every look, unlike bulk strings, so kept short whatever the bounds.
const MAX_LINE: usize = 64 * 1024;

/// Appends a command: an array of bulk strings.
pub fn command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(parts.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for part in parts {
        bulk(out, part);
    }
}

/// Appends a bulk string: `$N`, then the N bytes as they are.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    bulk_parts(out, &[bytes]);
}

/// Appends one bulk string made of `parts`, without joining them first.
pub fn bulk_parts(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// The first value in `buf` and the bytes it takes, or `None` when `buf`
/// holds only part of it.
/// Each look starts again at the value's first byte: what it costs is bounded
/// by the value's lines (each at most `MAX_LINE`) and items, not its bulk bytes.
pub fn decode(buf: &[u8], bounds: Bounds) -> Result<Option<(Value, usize)>, Malformed> {
    // Find the end first (cheap), then build the value once.
    let end = match skip(buf, 0, bounds, 0)? {
        Some(end) if end <= bounds.max_value => end,
        None if buf.len() <= bounds.max_value => return Ok(None),
        _ => return Err(Malformed("a value over the bounds")),
    };
    let (value, _) = build(buf, 0, bounds)?;
    Ok(Some((value, end)))
}

/// The line at `at` (without its CRLF) and where the next one starts.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let rest = rest.get(..rest.len().min(MAX_LINE + 2)).unwrap_or(rest);
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((rest.get(..cr)?, at + cr + 2))
}

/// A length or integer line: `-1` and up.
fn number(text: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or(Malformed("not a number"))
}

/// A count that is `-1` (null) or within `max`.
fn count(text: &[u8], max: usize) -> Result<Option<usize>, Malformed> {
    match number(text)? {
        -1 => Ok(None),
        n => usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .map(Some)
            .ok_or(Malformed("a length over the bounds")),
    }
}

/// Where the value at `at` ends, or `None` if the buffer ends first.
fn skip(buf: &[u8], at: usize, bounds: Bounds, depth: usize) -> Result<Option<usize>, Malformed> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    // A line that never ends is a peer to drop, not one to wait for.
    let Some((text, next)) = line(buf, at + 1) else {
        return if buf.len().saturating_sub(at) > MAX_LINE {
            Err(Malformed("a line too long"))
        } else {
            Ok(None)
        };
    };
    match kind {
        b'+' | b'-' => Ok(Some(next)),
        b':' => number(text).map(|_| Some(next)),
        b'$' => match count(text, bounds.max_bulk)? {
            None => Ok(Some(next)),
            Some(n) => {
                let end = next.saturating_add(n).saturating_add(2);
                if buf.len() < end {
                    return Ok(None);
                }
                match buf.get(end - 2..end) {
                    Some(b"\r\n") => Ok(Some(end)),
                    _ => Err(Malformed("a bulk string not ended by CRLF")),
                }
            }
        },
        b'*' => {
            if depth >= bounds.max_depth {
                return Err(Malformed("arrays nested too deep"));
            }
            let Some(n) = count(text, bounds.max_items)? else {
                return Ok(Some(next));
            };
            let mut pos = next;
            for _ in 0..n {
                match skip(buf, pos, bounds, depth + 1)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        _ => Err(Malformed("an unknown type byte")),
    }
}

/// Builds the value at `at`, which [`skip`] found whole.
fn build(buf: &[u8], at: usize, bounds: Bounds) -> Result<(Value, usize), Malformed> {
    let incomplete = Malformed("a value cut short");
    let kind = *buf.get(at).ok_or(incomplete.clone())?;
    let (text, next) = line(buf, at + 1).ok_or(incomplete.clone())?;
    let string = || String::from_utf8_lossy(text).into_owned();
    Ok(match kind {
        b'+' => (Value::Simple(string()), next),
        b'-' => (Value::Error(string()), next),
        b':' => (Value::Int(number(text)?), next),
        b'$' => match count(text, bounds.max_bulk)? {
            None => (Value::Bulk(None), next),
            Some(n) => {
                let bytes = buf.get(next..next + n).ok_or(incomplete)?;
                (Value::Bulk(Some(bytes.to_vec())), next + n + 2)
            }
        },
        b'*' => match count(text, bounds.max_items)? {
            None => (Value::Array(None), next),
            Some(n) => {
                let mut items = Vec::with_capacity(n);
                let mut pos = next;
                for _ in 0..n {
                    let (item, end) = build(buf, pos, bounds)?;
                    items.push(item);
                    pos = end;
                }
                (Value::Array(Some(items)), pos)
            }
        },
        _ => return Err(Malformed("an unknown type byte")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: Bounds = Bounds {
        max_bulk: 1 << 20,
        max_items: 1024,
        max_depth: 4,
        max_value: 2 << 20,
    };

    fn whole(bytes: &[u8]) -> Value {
        let (value, used) = decode(bytes, BOUNDS).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        value
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"room", b"a\r\nb"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$4\r\na\r\nb\r\n"
        );
    }

    #[test]
    fn each_kind_decodes() {
        assert_eq!(whole(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(whole(b"-ERR no\r\n"), Value::Error("ERR no".into()));
        assert_eq!(whole(b":-7\r\n"), Value::Int(-7));
        assert_eq!(whole(b"$-1\r\n"), Value::Bulk(None));
        assert_eq!(whole(b"$0\r\n\r\n"), Value::Bulk(Some(Vec::new())));
        assert_eq!(whole(b"*-1\r\n"), Value::Array(None));
        let push = b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$5\r\n\0\r\n\xff!\r\n";
        assert_eq!(
            whole(push),
            Value::Array(Some(vec![
                Value::Bulk(Some(b"message".to_vec())),
                Value::Bulk(Some(b"room".to_vec())),
                Value::Bulk(Some(b"\0\r\n\xff!".to_vec())),
            ]))
        );
    }

    #[test]
    fn every_cut_waits_and_what_follows_is_left() {
        let push = b"*3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$5\r\nhello\r\n";
        for cut in 0..push.len() {
            assert_eq!(decode(&push[..cut], BOUNDS), Ok(None), "cut at {cut}");
        }
        let mut two = push.to_vec();
        two.extend_from_slice(b":1\r\n");
        let (_, used) = decode(&two, BOUNDS).unwrap().unwrap();
        assert_eq!(used, push.len());
    }

    #[test]
    fn bad_bytes_and_bounds_are_malformed() {
        assert!(decode(b"?x\r\n", BOUNDS).is_err());
        assert!(decode(b":x\r\n", BOUNDS).is_err());
        assert!(
            decode(b"$5\r\nhelloXY", BOUNDS).is_err(),
            "no CRLF after the bytes"
        );
        assert!(decode(b"$2000000\r\n", BOUNDS).is_err(), "over max_bulk");
        assert!(decode(b"$-2\r\n", BOUNDS).is_err());
        assert!(decode(b"*5000\r\n", BOUNDS).is_err(), "over max_items");
        assert!(
            decode(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", BOUNDS).is_err(),
            "too deep"
        );
        assert!(
            decode(&[b'+'; 200_000], BOUNDS).is_err(),
            "a line that never ends"
        );
    }

    proptest! {
        /// Any bytes: no panic, and a value never takes more than there is.
        #[test]
        fn any_input_is_judged(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some((_, used))) = decode(&input, BOUNDS) {
                prop_assert!(used <= input.len());
            }
        }

        /// A command, read back as an array of bulk strings, is the same parts.
        #[test]
        fn commands_read_back(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6)) {
            let mut out = Vec::new();
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            command(&mut out, &refs);
            let want = Value::Array(Some(parts.into_iter().map(|p| Value::Bulk(Some(p))).collect()));
            prop_assert_eq!(decode(&out, BOUNDS), Ok(Some((want, out.len()))));
        }
    }
}
