//! The PROXY protocol header (v1 text, v2 binary) that a proxy such as HAProxy
//! sends before a connection's own bytes (contract section 12): parsed with
//! `ppp`, cut down to what the server needs. Pure code over bytes.

use ppp::v1::Addresses as V1;
use ppp::v2::{Addresses as V2, Command};
use ppp::{HeaderResult, PartialResult};
use std::net::SocketAddr;

/// The longest header taken: a v1 line is at most 107 bytes and a v2 header
/// with addresses 16 + 216; the rest of this room is for v2's TLVs (HAProxy
/// sends none unless told to). Longer, or still unfinished at this length: bad.
pub const MAX_LEN: usize = 4096;

/// How a v1 line starts, and its longest length (the protocol's 107 bytes).
const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
/// How a v2 header starts.
const V2_SIGNATURE: &[u8] = ppp::v2::PROTOCOL_PREFIX;

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid start; more bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes (the connection's own bytes follow).
    /// `source` is the client's address; `None` for a v2 LOCAL header (a
    /// proxy's health check), v1 `UNKNOWN` or an address family without an
    /// IP: the connection's own peer is used, as the protocol says.
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
    /// Not a PROXY header (or over [`MAX_LEN`]): the connection is closed.
    Invalid,
}

/// Reads the header at the start of `input` (which may hold more after it).
pub fn parse(input: &[u8]) -> Parsed {
    // A v1 line is judged once whole, at its newline: `ppp` takes some
    // unfinished lines for bad ones (cut after a space) and some bad whole
    // ones for unfinished (too few fields, or "P x" for the start of "PROXY").
    let start = input.get(..V1_PREFIX.len()).unwrap_or(input);
    let v1 = V1_PREFIX.starts_with(start);
    if v1 && !input.iter().take(V1_MAX).any(|b| *b == b'\n') {
        return if input.len() < V1_MAX {
            Parsed::Incomplete
        } else {
            Parsed::Invalid
        };
    }
    let signature = input.get(..V2_SIGNATURE.len()).unwrap_or(input);
    let v2 = V2_SIGNATURE.starts_with(signature);
    if !v1 && !v2 {
        return Parsed::Invalid;
    }
    let found = match HeaderResult::parse(input) {
        result if result.is_incomplete() && v2 => None,
        HeaderResult::V1(Ok(h)) => Some((h.header.len(), v1_source(h.addresses))),
        HeaderResult::V2(Ok(h)) => {
            let source = match h.command {
                Command::Local => None,
                Command::Proxy => v2_source(h.addresses),
            };
            Some((h.len(), source))
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => return Parsed::Invalid,
    };
    match found {
        Some((len, source)) if len <= MAX_LEN && len <= input.len() => {
            Parsed::Header { len, source }
        }
        Some(_) => Parsed::Invalid,
        None if input.len() >= MAX_LEN => Parsed::Invalid,
        None => Parsed::Incomplete,
    }
}

fn v1_source(addresses: V1) -> Option<SocketAddr> {
    match addresses {
        V1::Tcp4(a) => Some((a.source_address, a.source_port).into()),
        V1::Tcp6(a) => Some((a.source_address, a.source_port).into()),
        V1::Unknown => None,
    }
}

fn v2_source(addresses: V2) -> Option<SocketAddr> {
    match addresses {
        V2::IPv4(a) => Some((a.source_address, a.source_port).into()),
        V2::IPv6(a) => Some((a.source_address, a.source_port).into()),
        V2::Unspecified | V2::Unix(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A v2 header as HAProxy's `send-proxy-v2` writes it: signature, version 2
    /// with `command`, family and protocol, length, then the addresses.
    fn v2(command: u8, source: SocketAddr, dest: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        let mut body = Vec::new();
        match (source, dest) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                h.push(0x11);
                body.extend(s.ip().octets());
                body.extend(d.ip().octets());
                body.extend(s.port().to_be_bytes());
                body.extend(d.port().to_be_bytes());
            }
            (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                h.push(0x21);
                body.extend(s.ip().octets());
                body.extend(d.ip().octets());
                body.extend(s.port().to_be_bytes());
                body.extend(d.port().to_be_bytes());
            }
            _ => panic!("mixed families"),
        }
        body.extend_from_slice(tlvs);
        h.extend((body.len() as u16).to_be_bytes());
        h.extend(body);
        h
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_gives_the_source_and_its_length() {
        let line = b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 7878\r\n";
        let mut input = line.to_vec();
        input.extend_from_slice(b"\0\0\0\x10{\"op\":\"ping\"}");
        let want = Parsed::Header {
            len: line.len(),
            source: Some(addr("10.1.2.3:5555")),
        };
        assert_eq!(parse(&input), want);
        let v6 = b"PROXY TCP6 2001:db8::1 ::1 40000 7878\r\n";
        assert_eq!(
            parse(v6),
            Parsed::Header {
                len: v6.len(),
                source: Some(addr("[2001:db8::1]:40000"))
            }
        );
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(unknown),
            Parsed::Header {
                len: unknown.len(),
                source: None
            }
        );
    }

    #[test]
    fn v2_gives_the_source_and_local_gives_none() {
        let (s, d) = (addr("192.0.2.7:4242"), addr("127.0.0.1:7878"));
        let h = v2(1, s, d, &[]);
        assert_eq!(h.len(), 28);
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: 28,
                source: Some(s)
            }
        );
        // A health check: LOCAL, the connection's own address counts.
        let local = v2(0, s, d, &[]);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                len: 28,
                source: None
            }
        );
        // TLVs (a NOOP of 3 bytes) are part of the header.
        let with_tlv = v2(1, s, d, &[4, 0, 0]);
        assert_eq!(
            parse(&with_tlv),
            Parsed::Header {
                len: 31,
                source: Some(s)
            }
        );
        let s6 = addr("[2001:db8::9]:1");
        let h6 = v2(1, s6, addr("[::1]:7878"), &[]);
        assert_eq!(
            parse(&h6),
            Parsed::Header {
                len: 52,
                source: Some(s6)
            }
        );
    }

    #[test]
    fn every_prefix_is_incomplete_and_other_bytes_invalid() {
        let v1 = b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 7878\r\n".to_vec();
        let v2 = v2(1, addr("192.0.2.7:4242"), addr("127.0.0.1:7878"), &[]);
        for h in [v1, v2] {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "{cut} of {h:?}");
            }
        }
        let frame = b"\0\0\0\x0f{\"op\":\"ping\"}";
        assert_eq!(parse(frame), Parsed::Invalid);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid);
        assert_eq!(parse(b"PROXY TCP4 nonsense\r\n"), Parsed::Invalid);
        // A TLS ClientHello where a header should be.
        assert_eq!(parse(&[0x16, 3, 1, 0, 0x2f, 1]), Parsed::Invalid);
        // Only the start of either signature waits for more (found by fuzzing).
        assert_eq!(parse(b"P qq`P"), Parsed::Invalid);
        assert_eq!(parse(b"\r\n\r\n\0\r\nQ"), Parsed::Incomplete);
        // A v1 line never ended.
        assert_eq!(parse(&[b'P'; 200]), Parsed::Invalid);
        let mut long = b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 7878".to_vec();
        long.resize(200, b' ');
        assert_eq!(parse(&long), Parsed::Invalid);
    }

    #[test]
    fn a_v2_header_over_the_limit_is_invalid_even_unfinished() {
        let s = addr("192.0.2.7:4242");
        let big = v2(1, s, addr("127.0.0.1:7878"), &vec![0; MAX_LEN]);
        assert_eq!(parse(&big), Parsed::Invalid);
        assert_eq!(parse(&big[..MAX_LEN]), Parsed::Invalid);
        assert_eq!(parse(&big[..MAX_LEN - 1]), Parsed::Incomplete);
    }

    proptest! {
        /// Any bytes: no panic, and a header is never longer than the input.
        #[test]
        fn any_input_is_classified(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Parsed::Header { len, .. } = parse(&input) {
                prop_assert!(len <= input.len());
            }
        }

        /// A valid v2 header followed by anything parses to the same header.
        #[test]
        fn what_follows_does_not_matter(
            a in any::<[u8; 4]>(), port in any::<u16>(), rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let s = SocketAddr::from((a, port));
            let mut h = v2(1, s, addr("127.0.0.1:7878"), &[]);
            let len = h.len();
            h.extend(rest);
            prop_assert_eq!(parse(&h), Parsed::Header { len, source: Some(s) });
        }
    }
}
