//! Request headers: the JSON object of a frame, parsed without copying: by the
//! scanner (`scan.rs`) for the flat headers clients send, by serde_json for
//! anything else. Each known field stays a raw JSON slice until an op asks for
//! it with a type.

use super::scan::{scan, string_of, u64_of};
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
            pub(super) fn set(&mut self, key: &str, value: Raw<'a>) {
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
pub struct Raw<'a>(pub(super) &'a str);

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
pub(super) fn read_size(raw: Option<Raw<'_>>) -> Result<u64, HeaderError> {
    match raw {
        None => Ok(0),
        Some(raw) => u64_of(raw).ok_or(HeaderError::BadSize),
    }
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
}
