//! The fast path of header parsing: a scanner for the flat headers clients send
//! almost always, and readers of a raw field's integer or string value; anything
//! else is left to serde_json (`header.rs`), which the tests here hold them to.

use super::header::{Header, Raw};
use std::borrow::Cow;

/// The scanner's fast path: a flat object whose keys are printable ASCII without
/// escapes and whose values are such strings, unsigned integers, `true`, `false` or
/// `null`, with JSON whitespace between tokens (what clients send almost always).
/// Anything else returns `None` for serde_json to decide, so the scanner never
/// has to be right about the rare cases: what it accepts, serde_json reads the
/// same way (tests and the `header` fuzz target compare the two).
/// Fills `header` (a default one) and says whether it read the whole object;
/// when not, what it filled is to be thrown away.
pub(super) fn scan<'a>(bytes: &'a [u8], header: &mut Header<'a>) -> bool {
    scan_object(bytes, header).is_some()
}

fn scan_object<'a>(bytes: &'a [u8], header: &mut Header<'a>) -> Option<()> {
    // One UTF-8 check for the whole header; the tokens are then sliced out of it.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut s = Scanner {
        text,
        bytes,
        pos: 0,
    };
    s.skip_space();
    s.expect(b'{')?;
    s.skip_space();
    if s.peek() == Some(b'}') {
        s.pos += 1;
    } else {
        loop {
            let key = s.plain_string()?;
            s.skip_space();
            s.expect(b':')?;
            s.skip_space();
            let value = s.value()?;
            // The key without its quotes.
            header.set(key.get(1..key.len() - 1)?, Raw(value));
            s.skip_space();
            match s.next()? {
                b',' => s.skip_space(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.skip_space();
    (s.pos == bytes.len()).then_some(())
}

struct Scanner<'a> {
    text: &'a str,
    /// `text` as bytes.
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// The text from `from` to here.
    fn text(&self, from: usize) -> Option<&'a str> {
        self.text.get(from..self.pos)
    }

    /// A string of printable ASCII without escapes, quotes included.
    fn plain_string(&mut self) -> Option<&'a str> {
        let from = self.pos;
        self.expect(b'"')?;
        let rest = self.bytes.get(self.pos..)?;
        // One pass to the first byte that is not plain: it must be the closing quote.
        let len = rest
            .iter()
            .position(|&b| !(b' '..=b'~').contains(&b) || b == b'"' || b == b'\\')?;
        if rest.get(len) != Some(&b'"') {
            return None;
        }
        self.pos += len + 1;
        self.text(from)
    }

    /// A plain string, an unsigned integer without a fraction or exponent,
    /// `true`, `false` or `null`: its text.
    fn value(&mut self) -> Option<&'a str> {
        let from = self.pos;
        match self.peek()? {
            b'"' => return self.plain_string(),
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
            _ => {
                for word in [&b"true"[..], b"false", b"null"] {
                    if self.bytes.get(from..)?.starts_with(word) {
                        self.pos += word.len();
                        return self.text(from);
                    }
                }
                return None;
            }
        }
        // A number ends here or it is one the scanner leaves to serde_json.
        match self.peek()? {
            b'.' | b'e' | b'E' | b'0'..=b'9' => None,
            _ => self.text(from),
        }
    }
}

/// A u64 from a JSON value: digits without a leading zero, checked for
/// overflow, else (a sign, a fraction, an exponent, not a number) serde_json's answer.
pub(super) fn u64_of(raw: Raw<'_>) -> Option<u64> {
    let digits = raw.get().as_bytes();
    let plain = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits.first() != Some(&b'0'));
    if !plain {
        return serde_json::from_str::<u64>(raw.get()).ok();
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// A JSON string, borrowed when it has no escapes.
pub(super) fn string_of(raw: Raw<'_>) -> Option<Cow<'_, str>> {
    let text = raw.get();
    // The raw text is valid JSON: a value in quotes is one whole string, and
    // without a backslash its content is what it says.
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::header::read_size;

    /// Headers the scanner must take itself (else it is never used), each read
    /// exactly as serde_json reads it.
    #[test]
    fn the_scanner_reads_common_headers_as_serde_does() {
        for text in [
            r#"{"op":"echo","size":64,"id":1}"#,
            r#"{"op": "echo", "id": 18446744073709551615, "size": 0}"#,
            "\t{ \"op\" :\"ping\" ,\r\n\"id\":0 } \n",
            r#"{}"#,
            r#"{"op":"put","path":"a b/c.txt","overwrite":true,"parents":false,"x":null}"#,
            r#"{"op":"a","op":"b","size":1,"size":2}"#,
            r#"{"op":"say","room":"r","unknown":"{[x]}"}"#,
            r#"{"id":null,"size":"3"}"#,
        ] {
            let mut fast = Header::default();
            assert!(
                scan(text.as_bytes(), &mut fast),
                "{text}: the scanner declined"
            );
            let sized = read_size(fast.size_raw).map(|size| Header { size, ..fast });
            assert_eq!(sized, Header::parse_json(text.as_bytes()), "{text}");
        }
    }

    /// What the scanner leaves to serde_json: escapes, non-ASCII, nesting,
    /// numbers it does not read, anything that is not JSON.
    #[test]
    fn the_scanner_declines_the_rest() {
        for text in [
            r#"{"op":"p\u0069ng"}"#,
            r#"{"\u006fp":"b"}"#,
            "{\"path\":\"caf\u{e9}\"}",
            r#"{"args":["a"]}"#,
            r#"{"x":{"op":"c"}}"#,
            r#"{"id":-1}"#,
            r#"{"id":1.5}"#,
            r#"{"id":1e3}"#,
            r#"{"id":01}"#,
            r#"{"op":"echo",}"#,
            r#"{"op":"echo"} x"#,
            r#"{"op" "echo"}"#,
            r#"{"op":tru}"#,
            "{\"op\":\"a\u{1}\"}",
            r#"["op"]"#,
            "",
        ] {
            assert!(!scan(text.as_bytes(), &mut Header::default()), "{text}");
        }
    }

    #[test]
    fn integers_are_read_as_serde_reads_them() {
        for text in [
            "0",
            "7",
            "18446744073709551615",
            "18446744073709551616",
            "01",
            "-0",
            "1e2",
            "\"5\"",
        ] {
            assert_eq!(
                u64_of(Raw(text)),
                serde_json::from_str::<u64>(text).ok(),
                "{text}"
            );
        }
    }

    proptest::proptest! {
        /// Headers built from pieces that sit on both sides of the scanner's
        /// line: whatever it accepts, serde_json parses to the same header.
        #[test]
        fn the_scanner_never_disagrees_with_serde(
            pieces in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["op", "id", "size", "path", "room", "x", "\\u0069d", "caf\u{e9}"]),
                    proptest::sample::select(vec![
                        "\"echo\"", "0", "12", "007", "-1", "1.5", "2e3", "true", "false", "null",
                        "\"a\\\"b\"", "[1]", "{}", "\"\u{e9}\"", "\"\t\"", "18446744073709551616", "nul",
                    ]),
                    proptest::sample::select(vec!["", " ", "\n", "\t ", "\u{a0}"]),
                ),
                0..5,
            ),
            close in proptest::sample::select(vec!["}", "} ", "", "},", "}}"]),
        ) {
            let mut text = String::from("{");
            for (i, (key, value, space)) in pieces.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&format!("{space}\"{key}\"{space}:{space}{value}{space}"));
            }
            text.push_str(close);
            let mut fast = Header::default();
            if scan(text.as_bytes(), &mut fast) {
                let sized = read_size(fast.size_raw).map(|size| Header { size, ..fast });
                proptest::prop_assert_eq!(sized, Header::parse_json(text.as_bytes()), "{}", text);
            }
            proptest::prop_assert_eq!(Header::parse(text.as_bytes()), Header::parse_json(text.as_bytes()));
        }
    }
}
