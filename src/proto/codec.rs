//! The frame decoder: a sans-IO state machine over `length -> header -> body`.
//! It takes bytes, never sockets, so it is tested by feeding any split of a stream.

use super::header::{Header, HeaderError};
use byteorder::{BigEndian, ByteOrder};

/// Size limits the decoder enforces. Tighter before authentication (contract section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest header accepted (H); more is a 431 framing error.
    pub max_header: u32,
    /// Largest body an op may buffer; larger bodies are flagged, not refused, here.
    pub max_body: u64,
    /// Whether a frame may carry a body at all (false before authentication).
    pub body_allowed: bool,
}

impl Limits {
    /// The limits before authentication: small headers, no bodies.
    pub const PRE_AUTH: Limits = Limits {
        max_header: 4096,
        max_body: 0,
        body_allowed: false,
    };
}

/// A framing error: the stream can no longer be trusted, so the connection ends.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// H = 0.
    EmptyHeader,
    /// H above the limit (also what an HTTP request's `GET ` reads as).
    HeaderTooLarge(u32),
    /// Header bytes are not a JSON object with a valid `size`.
    BadHeader(HeaderError),
    /// A body before authentication.
    BodyNotAllowed,
}

impl FrameError {
    /// The reply status the contract names for this error.
    pub fn status(&self) -> u16 {
        match self {
            FrameError::HeaderTooLarge(_) => 431,
            _ => 400,
        }
    }

    pub fn message(&self) -> String {
        match self {
            FrameError::EmptyHeader => "header length is 0".into(),
            FrameError::HeaderTooLarge(n) => format!("header length {n} is over the limit"),
            FrameError::BadHeader(e) => e.to_string(),
            FrameError::BodyNotAllowed => "no body is allowed before authentication".into(),
        }
    }
}

/// What one `decode` call found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete, valid header, parsed into the caller's `header`. `size` body
    /// bytes follow; `oversized` says `size` is above `max_body` (an op that
    /// buffers its body must refuse it).
    Head { oversized: bool },
    /// The next piece of the current body, borrowed from the input.
    Body(&'a [u8]),
    /// The current frame is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the 4-byte length prefix.
    Length,
    /// Collecting a header of this many bytes.
    Header(u32),
    /// The header was handed out; `remaining` body bytes follow.
    Body { remaining: u64 },
}

/// Incremental frame decoder. Holds only the bytes of a partial length or
/// header, growing with bytes that actually arrived: a peer that claims a
/// huge length costs what it sent, not what it claimed (contract section 9).
#[derive(Debug)]
pub struct Decoder {
    state: State,
    limits: Limits,
    /// Partial length prefix or header, kept across calls.
    partial: Vec<u8>,
    /// Whether the last `Head` was parsed out of `partial` (to clear it after).
    head_from_partial: bool,
}

/// Headers kept in `partial` beyond this capacity are freed once used, so one
/// big header does not pin memory for the life of the connection.
const PARTIAL_KEEP: usize = 4096;

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            state: State::Length,
            limits,
            partial: Vec::new(),
            head_from_partial: false,
        }
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// True between frames with no partial bytes held: a clean place for the stream to end.
    pub fn is_idle(&self) -> bool {
        self.state == State::Length && self.partial.is_empty()
    }

    /// True between frames (possibly holding part of the next length prefix).
    pub fn at_boundary(&self) -> bool {
        self.state == State::Length
    }

    /// Decodes from `input`, returning the bytes consumed and at most one event.
    /// `Ok((n, None))` means all `n` (= `input.len()`) bytes were absorbed and more are
    /// needed. After an `Err` the stream is dead: do not call again.
    ///
    /// A header is parsed into `header`, the caller's slot (a fresh
    /// `Header::default()`), not returned: a header holds a slice per known
    /// field, and moving it out through the results cost more than parsing it.
    pub fn decode<'a>(
        &'a mut self,
        input: &'a [u8],
        header: &mut Header<'a>,
    ) -> Result<(usize, Option<Event<'a>>), FrameError> {
        if self.head_from_partial {
            // The previous call handed out a header borrowed from `partial`: release it now.
            self.head_from_partial = false;
            self.partial.clear();
            if self.partial.capacity() > PARTIAL_KEEP {
                self.partial = Vec::new();
            }
        }
        let mut used = 0;
        loop {
            match self.state {
                State::Length => {
                    let rest = &input[used..];
                    let len = if self.partial.is_empty() && rest.len() >= 4 {
                        used += 4;
                        BigEndian::read_u32(rest)
                    } else {
                        let take = (4 - self.partial.len()).min(rest.len());
                        self.partial.extend_from_slice(&rest[..take]);
                        used += take;
                        if self.partial.len() < 4 {
                            return Ok((used, None));
                        }
                        let len = BigEndian::read_u32(&self.partial);
                        self.partial.clear();
                        len
                    };
                    if len == 0 {
                        return Err(FrameError::EmptyHeader);
                    }
                    if len > self.limits.max_header {
                        return Err(FrameError::HeaderTooLarge(len));
                    }
                    self.state = State::Header(len);
                }
                State::Header(len) => {
                    let want = len as usize;
                    let rest = &input[used..];
                    let bytes: &[u8] = if self.partial.is_empty() && rest.len() >= want {
                        // Common case: the whole header is in this input; no copy.
                        used += want;
                        &rest[..want]
                    } else {
                        let take = (want - self.partial.len()).min(rest.len());
                        self.partial.extend_from_slice(&rest[..take]);
                        used += take;
                        if self.partial.len() < want {
                            return Ok((used, None));
                        }
                        self.head_from_partial = true;
                        &self.partial
                    };
                    header.fill(bytes).map_err(FrameError::BadHeader)?;
                    if header.size > 0 && !self.limits.body_allowed {
                        return Err(FrameError::BodyNotAllowed);
                    }
                    let oversized = header.size > self.limits.max_body;
                    self.state = State::Body {
                        remaining: header.size,
                    };
                    return Ok((used, Some(Event::Head { oversized })));
                }
                State::Body { remaining: 0 } => {
                    self.state = State::Length;
                    return Ok((used, Some(Event::End)));
                }
                State::Body { remaining } => {
                    let rest = &input[used..];
                    if rest.is_empty() {
                        return Ok((used, None));
                    }
                    // `remaining` may exceed usize on 32-bit targets; min() in u64 first.
                    let take = remaining.min(rest.len() as u64) as usize;
                    self.state = State::Body {
                        remaining: remaining - take as u64,
                    };
                    return Ok((used + take, Some(Event::Body(&rest[..take]))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reply::encode_frame;
    use proptest::prelude::*;

    const OPEN: Limits = Limits {
        max_header: 65536,
        max_body: 1 << 24,
        body_allowed: true,
    };

    /// A frame as the decoder reports it: (op, id, body).
    type Seen = (Option<String>, Option<u64>, Vec<u8>);

    /// Feeds `chunks` one after the other, collecting whole frames.
    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<Seen>, FrameError> {
        let mut d = Decoder::new(OPEN);
        let mut out = Vec::new();
        let mut cur: Option<Seen> = None;
        for chunk in chunks {
            let mut pos = 0;
            loop {
                let mut header = Header::default();
                let (n, ev) = d.decode(&chunk[pos..], &mut header)?;
                pos += n;
                match ev {
                    None => break,
                    Some(Event::Head { .. }) => {
                        let op = header.op.map(|o| o.get().to_string());
                        let id = header.id.and_then(|i| i.get().parse().ok());
                        cur = Some((op, id, Vec::new()));
                    }
                    Some(Event::Body(b)) => cur.as_mut().unwrap().2.extend_from_slice(b),
                    Some(Event::End) => out.push(cur.take().unwrap()),
                }
            }
        }
        Ok(out)
    }

    fn frame(id: u64, body: &[u8]) -> Vec<u8> {
        let header = format!(r#"{{"op":"echo","id":{id},"size":{}}}"#, body.len());
        encode_frame(header.as_bytes(), body)
    }

    fn stream(n: u64) -> (Vec<u8>, Vec<Seen>) {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for i in 0..n {
            let body: Vec<u8> = (0..(i * 7 % 23)).map(|b| b as u8).collect();
            bytes.extend(frame(i, &body));
            want.push((Some("\"echo\"".to_string()), Some(i), body));
        }
        (bytes, want)
    }

    #[test]
    fn every_two_way_split_gives_the_same_frames() {
        let (bytes, want) = stream(5);
        for cut in 0..=bytes.len() {
            let got = decode_all(&[&bytes[..cut], &bytes[cut..]]).unwrap();
            assert_eq!(got, want, "split at {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let (bytes, want) = stream(8);
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&chunks).unwrap(), want);
    }

    #[test]
    fn many_frames_in_one_buffer() {
        let (bytes, want) = stream(100);
        assert_eq!(decode_all(&[&bytes]).unwrap(), want);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_frames(n in 1u64..20, cuts in proptest::collection::vec(any::<usize>(), 0..30)) {
            let (bytes, want) = stream(n);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for c in cuts {
                chunks.push(&bytes[last..c]);
                last = c;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(decode_all(&chunks).unwrap(), want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in any::<usize>()) {
            let cut = cut % (bytes.len() + 1);
            let _ = decode_all(&[&bytes[..cut], &bytes[cut..]]);
        }
    }

    #[test]
    fn framing_errors() {
        let err = |bytes: &[u8]| decode_all(&[bytes]).unwrap_err();
        assert_eq!(err(&[0, 0, 0, 0]), FrameError::EmptyHeader);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n"),
            FrameError::HeaderTooLarge(1_195_725_856)
        );
        assert_eq!(err(&encode_frame(b"[1,2]", b"")).status(), 400);
        assert_eq!(err(&encode_frame(b"{\"size\":-1}", b"")).status(), 400);
        assert_eq!(err(&encode_frame(b"{\"size\":1.5}", b"")).status(), 400);
        assert_eq!(err(&encode_frame(b"{\"a\":\"\xff\"}", b"")).status(), 400);
        assert_eq!(err(&encode_frame(b"{", b"")).status(), 400);
    }

    #[test]
    fn pre_auth_limits() {
        let mut d = Decoder::new(Limits::PRE_AUTH);
        let big = vec![b' '; 4097];
        let bytes = encode_frame(&big, b"");
        assert_eq!(
            d.decode(&bytes, &mut Header::default()).unwrap_err(),
            FrameError::HeaderTooLarge(4097)
        );
        let mut d = Decoder::new(Limits::PRE_AUTH);
        let bytes = encode_frame(br#"{"op":"auth","size":1}"#, b"x");
        assert_eq!(
            d.decode(&bytes, &mut Header::default()).unwrap_err(),
            FrameError::BodyNotAllowed
        );
    }

    #[test]
    fn claimed_length_reserves_nothing() {
        // A header claiming 16 MiB of body, then one byte of it.
        let mut d = Decoder::new(OPEN);
        let mut bytes = encode_frame(br#"{"op":"echo","size":16777216}"#, b"");
        bytes.push(b'x');
        let (n, ev) = d.decode(&bytes, &mut Header::default()).unwrap();
        assert!(matches!(
            ev,
            Some(Event::Head {
                oversized: false,
                ..
            })
        ));
        let (_, ev) = d.decode(&bytes[n..], &mut Header::default()).unwrap();
        assert!(matches!(ev, Some(Event::Body(b"x"))));
        assert!(d.partial.capacity() < 64);
        // A claimed header length reserves nothing either.
        let mut d = Decoder::new(OPEN);
        d.decode(&[0, 0, 255, 255, b'{'], &mut Header::default())
            .unwrap();
        assert!(d.partial.capacity() < 64);
    }

    #[test]
    fn oversized_is_flagged_and_body_still_flows() {
        let limits = Limits {
            max_body: 3,
            ..OPEN
        };
        let mut d = Decoder::new(limits);
        let bytes = frame(1, b"abcdef");
        let (n, ev) = d.decode(&bytes, &mut Header::default()).unwrap();
        assert!(matches!(
            ev,
            Some(Event::Head {
                oversized: true,
                ..
            })
        ));
        let (_, ev) = d.decode(&bytes[n..], &mut Header::default()).unwrap();
        assert!(matches!(ev, Some(Event::Body(b"abcdef"))));
    }
}
