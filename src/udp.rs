//! The UDP transport (contract section 8): one frame per datagram, the stateless
//! ops of section 4 except `stats`, replies capped at 3 times the request.

use crate::bufpool;
use crate::config::tuning;
use crate::net::{self, IoClass, ReadEnd, Step, classify};
use crate::proto::{Decoder, Event, HeadWriter, Header, Limits};
use crate::reactor::TRACE;
use crate::service::requests::{Wording, open_request, unknown_op};
use crate::service::stats::Stats;
use crate::service::{Op, ops};
use mio::net::UdpSocket;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest datagram payload (IPv6 without jumbograms): a receive buffer this
/// big never truncates one, so a datagram's length is always its true length.
const MAX_DATAGRAM: usize = 65_535;
/// A reply may be at most this many times as large as its request: a spoofed
/// source address must not turn the server into an amplifier.
const REPLY_FACTOR: usize = 3;

/// The UDP socket and the two buffers it reuses for every datagram: serving one
/// allocates nothing once the buffer pool is warm.
pub struct Udp {
    pub socket: UdpSocket,
    /// Decoder limits (`--max-header`, `--max-body`); no handshake over UDP.
    limits: Limits,
    recv: Vec<u8>,
    reply: Vec<u8>,
}

/// What became of one datagram.
enum Outcome {
    /// Not one well-formed frame: no reply.
    Malformed,
    /// The reply is in `Udp::reply`.
    Reply,
}

impl Udp {
    pub fn bind(addr: SocketAddr, limits: Limits) -> io::Result<Udp> {
        Ok(Udp::new(UdpSocket::bind(addr)?, limits))
    }

    /// Serves on a socket already bound (one of several workers' on one address).
    pub fn new(socket: UdpSocket, limits: Limits) -> Udp {
        Udp {
            socket,
            limits,
            recv: vec![0; MAX_DATAGRAM],
            reply: Vec::new(),
        }
    }

    /// Serves datagrams within the per-turn budget. True when the budget ran
    /// out and the socket must be revisited next turn.
    pub fn serve(&mut self, stats: &Arc<Stats>) -> bool {
        let end = net::read_within(tuning::DATAGRAMS_PER_TURN, || {
            match self.socket.recv_from(&mut self.recv) {
                Ok((n, peer)) => self.answer_one(n, peer, stats),
                // Errors queued on the socket (an ICMP report about an earlier
                // reply): nothing to do for them; the budget bounds the loop.
                Err(e) if classify(&e) == IoClass::Fatal => {
                    log::debug!("udp recv: {e}");
                    Ok(Step::Got)
                }
                Err(e) => Err(e),
            }
        });
        matches!(end, ReadEnd::Budget)
    }

    fn answer_one(&mut self, n: usize, peer: SocketAddr, stats: &Arc<Stats>) -> io::Result<Step> {
        stats.datagram_in();
        stats.read(n);
        let datagram = self.recv.get(..n).unwrap_or_default();
        self.reply.clear();
        let outcome = answer(datagram, self.limits, &mut self.reply, stats);
        if let Outcome::Malformed = outcome {
            stats.datagram_dropped();
            log::trace!(target: TRACE, "  udp {peer}: dropped a malformed {n} B datagram");
            return Ok(Step::Got);
        }
        if self.reply.len() > REPLY_FACTOR * n {
            // Even the 413 would be too large for a tiny request: send nothing.
            stats.datagram_dropped();
            return Ok(Step::Got);
        }
        match self.socket.send_to(&self.reply, peer) {
            Ok(sent) => {
                stats.frames_out(1);
                stats.wrote(sent);
            }
            // A full send buffer or an unreachable peer loses the reply, as
            // UDP may; the client retries.
            Err(e) => log::debug!("udp send to {peer}: {e}"),
        }
        Ok(Step::Got)
    }
}

/// Decodes one datagram with the stream codec and writes its reply to `out`.
fn answer(datagram: &[u8], limits: Limits, out: &mut Vec<u8>, stats: &Arc<Stats>) -> Outcome {
    // The whole frame is in hand, so the decoder parses the header straight out
    // of `datagram` and allocates nothing.
    let mut decoder = Decoder::new(limits);
    let mut header = Header::default();
    let Ok((used, Some(Event::Head { oversized }))) = decoder.decode(datagram, &mut header) else {
        return Outcome::Malformed;
    };
    let body = datagram.get(used..).unwrap_or_default();
    // The length prefix must match the datagram: no bytes short, none extra.
    if header.size != body.len() as u64 {
        return Outcome::Malformed;
    }
    // Short error texts: an error reply must fit 3 times a small request too.
    let (op, id) = match open_request(stats, &header, Wording::Short) {
        Ok(request) => request,
        Err(message) => {
            error(out, 400, None, &message);
            return Outcome::Reply;
        }
    };
    let Some(op) = op else {
        error(out, 400, id, &unknown_op(&header, Wording::Short));
        return Outcome::Reply;
    };
    if !op.is_stateless() || op == Op::Stats {
        error(out, 400, id, "not a udp op");
        return Outcome::Reply;
    }
    if oversized {
        error(out, 413, id, "body is over the limit");
        return Outcome::Reply;
    }
    let result = if op.buffers_body() {
        let mut owned = bufpool::take();
        owned.extend_from_slice(body);
        ops::run_with_body(op, owned)
    } else {
        ops::run(op, &header, std::slice::from_ref(stats))
    };
    match result {
        Ok(reply) => {
            reply.write(out, id);
            if out.len() > REPLY_FACTOR * datagram.len() {
                out.clear();
                error(out, 413, id, "reply too large");
            }
        }
        Err(e) => error(out, e.status, id, &e.message),
    }
    Outcome::Reply
}

fn error(out: &mut Vec<u8>, status: u16, id: Option<u64>, message: &str) {
    HeadWriter::error(out, status, id, message).finish(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::read_frame;
    use crate::proto::encode_frame;
    use std::time::Instant;

    fn limits() -> Limits {
        Limits {
            max_header: 65_536,
            max_body: 1 << 20,
            body_allowed: true,
        }
    }

    fn run(datagram: &[u8]) -> Option<crate::client::Frame> {
        let stats = Arc::new(Stats::new(Instant::now()));
        let mut out = Vec::new();
        match answer(datagram, limits(), &mut out, &stats) {
            Outcome::Malformed => None,
            Outcome::Reply => {
                let mut slice = out.as_slice();
                let frame = read_frame(&mut slice).expect("a reply frame");
                assert!(slice.is_empty(), "one frame, nothing after it");
                Some(frame)
            }
        }
    }

    #[test]
    fn echo_and_ids() {
        let f = run(&encode_frame(br#"{"op":"echo","id":9,"size":2}"#, b"hi")).unwrap();
        assert_eq!(
            (f.status(), f.id(), f.body.as_slice()),
            (200, Some(9), &b"hi"[..])
        );
    }

    #[test]
    fn malformed_is_dropped() {
        assert!(run(b"").is_none());
        assert!(run(b"\0\0").is_none());
        assert!(run(&encode_frame(b"", b"")).is_none());
        assert!(run(&encode_frame(b"[1]", b"")).is_none());
        assert!(run(&encode_frame(br#"{"op":"echo","size":3}"#, b"hi")).is_none());
        assert!(run(&encode_frame(br#"{"op":"echo","size":1}"#, b"hi")).is_none());
        let mut cut = encode_frame(br#"{"op":"ping"}"#, b"");
        cut.pop();
        assert!(run(&cut).is_none());
        cut.extend_from_slice(b"}x");
        assert!(run(&cut).is_none());
    }

    #[test]
    fn refusals_fit_the_cap() {
        for (req, status) in [
            (&br#"{"op":"x"}"#[..], 400),
            (br#"{"op":"stats"}"#, 400),
            (br#"{"op":"ls"}"#, 400),
            (br#"{"op":"ping","id":-1}"#, 400),
        ] {
            let datagram = encode_frame(req, b"");
            let stats = Arc::new(Stats::new(Instant::now()));
            let mut out = Vec::new();
            answer(&datagram, limits(), &mut out, &stats);
            assert!(out.len() <= 3 * datagram.len(), "{out:?}");
            let f = read_frame(&mut out.as_slice()).unwrap();
            assert_eq!(f.status(), status);
        }
    }

    #[test]
    fn large_replies_are_413() {
        let format = "%c".repeat(100);
        let header = format!(r#"{{"op":"time","id":4,"format":"{format}"}}"#);
        let f = run(&encode_frame(header.as_bytes(), b"")).unwrap();
        assert_eq!((f.status(), f.id()), (413, Some(4)));
    }
}
