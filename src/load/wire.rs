//! What a load run puts on the wire and what it must get back: frameloop frames,
//! RESP to a Redis server (`--resp`), or raw echoes for the no-parse floor (`--raw`).

use crate::proto::resp;
use std::fmt;

/// The protocol a load run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// frameloop frames, after logging in.
    Frames,
    /// Redis's RESP: `ECHO` of `--size` bytes, or `PING`.
    Resp,
    /// An echo frame's bytes, to come back unchanged from a server that parses
    /// nothing (`examples/floor.rs`): the cost of the syscalls alone.
    Raw,
}

impl Wire {
    /// The ops this wire can carry and check.
    pub fn ops(self) -> &'static [&'static str] {
        match self {
            Wire::Frames => &["ping", "echo", "upper", "stamp", "time"],
            Wire::Resp => &["ping", "echo"],
            Wire::Raw => &["echo"],
        }
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wire::Frames => "frames",
            Wire::Resp => "resp",
            Wire::Raw => "raw",
        })
    }
}

/// Every request of a run, and how its reply is checked.
pub(super) enum Workload {
    Frames {
        request: RequestTemplate,
        expect: Expect,
    },
    /// The same request bytes every time, and one exact reply to each.
    Fixed { request: Vec<u8>, reply: Vec<u8> },
}

impl Workload {
    /// `op` with a body of `size` bytes where the op takes one.
    pub(super) fn new(wire: Wire, op: &str, size: usize) -> Workload {
        let body = vec![b'x'; if takes_body(op) { size } else { 0 }];
        match wire {
            Wire::Frames => Workload::Frames {
                expect: Expect::new(op, &body),
                request: RequestTemplate::new(op, body),
            },
            Wire::Resp if op == "ping" => {
                let mut request = Vec::new();
                resp::command(&mut request, &[b"PING"]);
                Workload::Fixed {
                    request,
                    reply: b"+PONG\r\n".to_vec(),
                }
            }
            Wire::Resp => {
                let (mut request, mut reply) = (Vec::new(), Vec::new());
                resp::command(&mut request, &[b"ECHO", &body]);
                resp::bulk(&mut reply, &body);
                Workload::Fixed { request, reply }
            }
            Wire::Raw => {
                // The bytes of the first echo frame a frameloop run sends.
                let mut request = Vec::new();
                RequestTemplate::new(op, body).push(&mut request, 1);
                Workload::Fixed {
                    reply: request.clone(),
                    request,
                }
            }
        }
    }

    /// Appends request number `id` to `out`.
    pub(super) fn push(&self, out: &mut Vec<u8>, id: u64) {
        match self {
            Workload::Frames { request, .. } => request.push(out, id),
            Workload::Fixed { request, .. } => out.extend_from_slice(request),
        }
    }
}

fn takes_body(op: &str) -> bool {
    matches!(op, "echo" | "upper" | "stamp")
}

/// What every frame reply must be: its status, and its body when it is known exactly.
pub(super) struct Expect {
    pub(super) body: Option<Vec<u8>>,
    /// For `stamp`: the length of `[date] ` + body.
    pub(super) body_len: Option<u64>,
}

impl Expect {
    /// The replies to `op` with request body `body`.
    fn new(op: &str, body: &[u8]) -> Expect {
        Expect {
            body: match op {
                "echo" => Some(body.to_vec()),
                "upper" => Some(body.to_ascii_uppercase()),
                "ping" => Some(Vec::new()),
                _ => None,
            },
            body_len: (op == "stamp").then_some(body.len() as u64 + 27),
        }
    }

    /// The exact body length a reply must have, when it is known.
    pub(super) fn len(&self) -> Option<u64> {
        self.body.as_ref().map(|b| b.len() as u64).or(self.body_len)
    }
}

/// The fixed parts of every request: `{"op":"echo","size":64,"id":` + id + `}` + body.
pub(super) struct RequestTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    body: Vec<u8>,
}

impl RequestTemplate {
    fn new(op: &str, body: Vec<u8>) -> RequestTemplate {
        let size = if body.is_empty() {
            String::new()
        } else {
            format!(r#","size":{}"#, body.len())
        };
        RequestTemplate {
            prefix: format!(r#"{{"op":"{op}"{size},"id":"#).into_bytes(),
            suffix: b"}".to_vec(),
            body,
        }
    }

    /// Appends one request frame: the header is `prefix` + id + `suffix`,
    /// precomputed, so no formatting machinery runs per request.
    fn push(&self, out: &mut Vec<u8>, id: u64) {
        let mut digits = itoa::Buffer::new();
        let id_text = digits.format(id).as_bytes();
        let header_len = self.prefix.len() + id_text.len() + self.suffix.len();
        out.extend_from_slice(&(header_len as u32).to_be_bytes());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(id_text);
        out.extend_from_slice(&self.suffix);
        out.extend_from_slice(&self.body);
    }
}

/// Checks a stream of replies that must each equal `reply`, however the
/// stream is cut: `matched` is how much of the current reply has arrived.
/// Returns the replies completed, or, on a mismatch, the input from where the
/// reply being read begins in it (what to show).
pub(super) fn match_fixed<'a>(
    reply: &[u8],
    matched: &mut usize,
    mut input: &'a [u8],
) -> Result<u64, &'a [u8]> {
    let mut done = 0;
    while !input.is_empty() {
        let want = reply.get(*matched..).unwrap_or_default();
        let take = want.len().min(input.len());
        let (got, rest) = input.split_at(take);
        if want.get(..take) != Some(got) {
            return Err(input);
        }
        *matched += take;
        input = rest;
        if *matched == reply.len() {
            *matched = 0;
            done += 1;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_echo_is_a_bulk_string_both_ways() {
        let Workload::Fixed { request, reply } = Workload::new(Wire::Resp, "echo", 3) else {
            panic!("RESP is a fixed exchange");
        };
        assert_eq!(request, b"*2\r\n$4\r\nECHO\r\n$3\r\nxxx\r\n");
        assert_eq!(reply, b"$3\r\nxxx\r\n");
    }

    #[test]
    fn raw_sends_an_echo_frame_and_expects_it_back() {
        let Workload::Fixed { request, reply } = Workload::new(Wire::Raw, "echo", 2) else {
            panic!("raw is a fixed exchange");
        };
        let header = br#"{"op":"echo","size":2,"id":1}"#;
        assert_eq!(&request[..4], &(header.len() as u32).to_be_bytes());
        assert_eq!(&request[4..4 + header.len()], header);
        assert_eq!(&request[4 + header.len()..], b"xx");
        assert_eq!(request, reply);
    }

    #[test]
    fn fixed_replies_match_however_the_stream_is_cut() {
        let reply = b"+PONG\r\n";
        let stream = reply.repeat(3);
        for cut in 0..=stream.len() {
            let mut matched = 0;
            let (a, b) = stream.split_at(cut);
            let done = match_fixed(reply, &mut matched, a).unwrap()
                + match_fixed(reply, &mut matched, b).unwrap();
            assert_eq!((done, matched), (3, 0), "cut at {cut}");
        }
    }

    #[test]
    fn a_wrong_reply_is_reported_from_the_reply_that_differs() {
        let mut matched = 0;
        let got = match_fixed(b"+PONG\r\n", &mut matched, b"+PONG\r\n-ERR no\r\n");
        assert_eq!(got, Err(&b"-ERR no\r\n"[..]));
        let mut matched = 3;
        assert_eq!(
            match_fixed(b"+PONG\r\n", &mut matched, b"NX"),
            Err(&b"NX"[..])
        );
    }
}
