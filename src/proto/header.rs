//! Request headers: the JSON object of a frame, parsed without copying: by a
//! scanner for the flat headers clients send, by serde_json for anything else.
//! Each known field stays a raw JSON slice until an op asks for it with a type.

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Why a header is not a valid frame header (a framing error: 400 and close).
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    NotUtf8,
    NotObject,
    Json(String),
    BadSize,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NotUtf8 => f.write_str("header is not valid UTF-8"),
            HeaderError::NotObject => f.write_str("header is not a JSON object"),
            HeaderError::Json(e) => write!(f, "header is not valid JSON: {e}"),
            HeaderError::BadSize => f.write_str("size must be a non-negative integer"),
        }
    }
}

/// Declares the known header fields once: the struct, and a map visitor that
/// keeps each known key as raw JSON (last one wins if a key repeats; a present
/// `null` is kept, so it can be told apart from an absent field) and skips
/// unknown keys without allocating. Adding a field for a new op is one line.
macro_rules! header_fields {
    ($($field:ident => $name:literal),* $(,)?) => {
        /// A frame header. Known fields stay raw JSON until an op asks for them
        /// with a type; `size` is validated when the header is parsed.
        #[derive(Debug, Default, PartialEq, Eq)]
        pub struct Header<'a> {
            $(pub $field: Option<Raw<'a>>,)*
            /// Body length, validated.
            pub size: u64,
        }

        const KNOWN: &[&str] = &[$($name),*];

        impl<'a> Header<'a> {
            /// Keeps `value` as the field `key` names, if it names one.
            fn set(&mut self, key: &str, value: Raw<'a>) {
                match key {
                    $($name => self.$field = Some(value),)*
                    _ => {}
                }
            }
        }

        impl<'de> Deserialize<'de> for Header<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Fields;
                impl<'de> Visitor<'de> for Fields {
                    type Value = Header<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a JSON object")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header<'de>, A::Error> {
                        let mut header = Header::default();
                        while let Some(Key(key)) = map.next_key()? {
                            match key {
                                $(Some($name) => {
                                    header.$field = Some(Raw(map.next_value::<&RawValue>()?.get()))
                                })*
                                _ => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(header)
                    }
                }
                d.deserialize_map(Fields)
            }
        }
    };
}

header_fields! {
    op => "op",
    id => "id",
    size_raw => "size",
    status => "status",
    format => "format",
    user => "user",
    cnonce => "cnonce",
    mac => "mac",
    path => "path",
    sha256 => "sha256",
    overwrite => "overwrite",
    parents => "parents",
    offset => "offset",
    cmd => "cmd",
    args => "args",
    room => "room",
    to => "to",
}

/// A header key: which known field it names, if any (matched without allocating,
/// escaped keys included).
struct Key(Option<&'static str>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(KNOWN.iter().find(|k| **k == key).copied()))
            }
        }
        d.deserialize_str(Name)
    }
}

/// A field's value as it stands in the header: JSON text, already validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    pub fn get(self) -> &'a str {
        self.0
    }
}

impl<'a> Header<'a> {
    /// Parses header bytes: a JSON object whose `size`, if present, is a u64.
    pub fn parse(bytes: &'a [u8]) -> Result<Header<'a>, HeaderError> {
        let mut header = Header::default();
        header.fill(bytes)?;
        Ok(header)
    }

    /// Parses header bytes in place (what the decoder does: see `Decoder::decode`).
    /// Whatever the slot held before is replaced.
    pub fn fill(&mut self, bytes: &'a [u8]) -> Result<(), HeaderError> {
        *self = Header::default();
        if !scan(bytes, self) {
            *self = Header::parse_json(bytes)?;
        }
        self.size = read_size(self.size_raw)?;
        Ok(())
    }

    /// The general path: serde_json decides what is JSON (and words the error).
    /// Public for the tests and the fuzz target that hold the scanner to it.
    #[doc(hidden)]
    pub fn parse_json(bytes: &'a [u8]) -> Result<Header<'a>, HeaderError> {
        let text = std::str::from_utf8(bytes).map_err(|_| HeaderError::NotUtf8)?;
        if !text.trim_start().starts_with('{') {
            return Err(HeaderError::NotObject);
        }
        let mut header: Header =
            serde_json::from_str(text).map_err(|e| HeaderError::Json(e.to_string()))?;
        header.size = read_size(header.size_raw)?;
        Ok(header)
    }

    /// The request id: `Ok(None)` when absent, `Err` when present but not a u64.
    pub fn id(&self) -> Result<Option<u64>, FieldError> {
        match self.id {
            None => Ok(None),
            Some(raw) => u64_of(raw)
                .map(Some)
                .ok_or(FieldError::Type("id", "an unsigned integer")),
        }
    }

    /// A reply's status, when it is an integer (for clients decoding replies).
    pub fn status(&self) -> Option<u64> {
        self.status.and_then(u64_of)
    }

    /// The op name, when it is a string.
    pub fn op(&self) -> Option<Cow<'a, str>> {
        self.op.and_then(string_of)
    }
}

/// A request-level field problem (400, connection stays open).
#[derive(Debug, PartialEq, Eq)]
pub enum FieldError {
    Missing(&'static str),
    Type(&'static str, &'static str),
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldError::Missing(name) => write!(f, "missing field {name}"),
            FieldError::Type(name, want) => write!(f, "field {name} must be {want}"),
        }
    }
}

/// A body length: absent is 0.
fn read_size(raw: Option<Raw<'_>>) -> Result<u64, HeaderError> {
    match raw {
        None => Ok(0),
        Some(raw) => u64_of(raw).ok_or(HeaderError::BadSize),
    }
}

/// The scanner's fast path: a flat object whose keys are printable ASCII without
/// escapes and whose values are such strings, unsigned integers, `true`, `false` or
/// `null`, with JSON whitespace between tokens (what clients send almost always).
/// Anything else returns `None` for serde_json to decide, so the scanner never
/// has to be right about the rare cases: what it accepts, serde_json reads the
/// same way (tests and the `header` fuzz target compare the two).
/// Fills `header` (a default one) and says whether it read the whole object;
/// when not, what it filled is to be thrown away.
fn scan<'a>(bytes: &'a [u8], header: &mut Header<'a>) -> bool {
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
fn u64_of(raw: Raw<'_>) -> Option<u64> {
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
fn string_of(raw: Raw<'_>) -> Option<Cow<'_, str>> {
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

/// An optional string field of a request.
pub fn opt_str<'a>(
    raw: Option<Raw<'a>>,
    name: &'static str,
) -> Result<Option<Cow<'a, str>>, FieldError> {
    match raw {
        None => Ok(None),
        Some(raw) => string_of(raw)
            .map(Some)
            .ok_or(FieldError::Type(name, "a string")),
    }
}

/// An optional boolean field of a request (absent: `default`).
pub fn opt_bool(
    raw: Option<Raw<'_>>,
    name: &'static str,
    default: bool,
) -> Result<bool, FieldError> {
    match raw {
        None => Ok(default),
        Some(raw) => serde_json::from_str::<bool>(raw.get())
            .map_err(|_| FieldError::Type(name, "true or false")),
    }
}

/// An optional unsigned integer field of a request.
pub fn opt_u64(raw: Option<Raw<'_>>, name: &'static str) -> Result<Option<u64>, FieldError> {
    match raw {
        None => Ok(None),
        Some(raw) => u64_of(raw)
            .map(Some)
            .ok_or(FieldError::Type(name, "an unsigned integer")),
    }
}

/// An optional array-of-strings field of a request (absent: empty).
pub fn opt_strings(raw: Option<Raw<'_>>, name: &'static str) -> Result<Vec<String>, FieldError> {
    match raw {
        None => Ok(Vec::new()),
        Some(raw) => serde_json::from_str::<Vec<String>>(raw.get())
            .map_err(|_| FieldError::Type(name, "an array of strings")),
    }
}

/// A required string field of a request.
pub fn req_str<'a>(raw: Option<Raw<'a>>, name: &'static str) -> Result<Cow<'a, str>, FieldError> {
    opt_str(raw, name)?.ok_or(FieldError::Missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: JSON numbers have no range limit, so a header with
    /// `1.4e716` is valid (not a framing error); as an `id` it is a 400 field error.
    #[test]
    fn huge_numbers_are_json() {
        let h = Header::parse(br#"{"op":"echo","id":1.44643e0716,"x":-1e999}"#).unwrap();
        assert_eq!(h.op().as_deref(), Some("echo"));
        assert!(h.id().is_err());
        assert!(Header::parse(br#"{"size":1e999}"#).is_err());
    }

    #[test]
    fn fields_are_typed_lazily() {
        let h =
            Header::parse(br#" {"op":"time","id":7,"size":0,"format":"%H","extra":[1,{"x":2}]}"#)
                .unwrap();
        assert_eq!(h.op().as_deref(), Some("time"));
        assert_eq!(h.id(), Ok(Some(7)));
        assert_eq!(opt_str(h.format, "format").unwrap().as_deref(), Some("%H"));
        assert_eq!(opt_str(h.user, "user"), Ok(None));
    }

    #[test]
    fn bad_ids_are_request_errors() {
        for id in ["-1", "1.5", "\"5\"", "null", "18446744073709551616"] {
            let text = format!(r#"{{"op":"ping","id":{id}}}"#);
            let h = Header::parse(text.as_bytes()).unwrap();
            assert!(h.id().is_err(), "{id}");
        }
    }

    #[test]
    fn repeated_keys_keep_the_last_and_escaped_keys_match() {
        let h =
            Header::parse(br#"{"op":"a","\u006fp":"b","size":1,"size":2,"x":{"op":"c"}}"#).unwrap();
        assert_eq!(h.op().as_deref(), Some("b"));
        assert_eq!(h.size, 2);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let h = Header::parse(br#"{"op":"p\u0069ng"}"#).unwrap();
        assert_eq!(h.op().as_deref(), Some("ping"));
    }

    #[test]
    fn framing_errors() {
        assert_eq!(Header::parse(b"[]").unwrap_err(), HeaderError::NotObject);
        assert_eq!(Header::parse(b"5").unwrap_err(), HeaderError::NotObject);
        assert_eq!(
            Header::parse(b"{\"size\":\"3\"}").unwrap_err(),
            HeaderError::BadSize
        );
        assert_eq!(
            Header::parse(b"{\"size\":null}").unwrap_err(),
            HeaderError::BadSize
        );
        assert_eq!(
            Header::parse(b"\xc3\x28").unwrap_err(),
            HeaderError::NotUtf8
        );
        assert!(matches!(
            Header::parse(b"{} x").unwrap_err(),
            HeaderError::Json(_)
        ));
        assert_eq!(
            Header::parse(b"{\"size\":18446744073709551615}")
                .unwrap()
                .size,
            u64::MAX
        );
    }

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
