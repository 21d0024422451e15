//! Server counters, reported by the `stats` op (contract section 4). Each
//! counter is private and bumped by exactly one method below, named for the
//! event it counts; callers report events where they happen.

use super::Op;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct Stats {
    #[serde(skip)]
    started: Instant,
    conns_open: u64,
    conns_total: u64,
    /// Connections refused with 503 over `--max-conns`.
    conns_refused: u64,
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    auth_failures: u64,
    /// TLS connections ended by a TLS error: a failed handshake (plain frames or
    /// garbage on the TLS port), a bad record.
    tls_failures: u64,
    protocol_errors: u64,
    udp_in: u64,
    udp_dropped: u64,
    /// Chat members disconnected for not reading their pushes (`--max-outbuf`).
    slow_consumers: u64,
    #[serde(skip)]
    ops: [u64; Op::ALL.len()],
}

impl Stats {
    pub fn new(started: Instant) -> Stats {
        Stats {
            started,
            conns_open: 0,
            conns_total: 0,
            conns_refused: 0,
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            auth_failures: 0,
            tls_failures: 0,
            protocol_errors: 0,
            udp_in: 0,
            udp_dropped: 0,
            slow_consumers: 0,
            ops: [0; Op::ALL.len()],
        }
    }

    /// Connections being served now (not counting ones refused over `--max-conns`).
    pub fn conns_open(&self) -> u64 {
        self.conns_open
    }

    /// A connection was accepted and will be served.
    pub fn opened(&mut self) {
        self.conns_open += 1;
        self.conns_total += 1;
    }

    /// A served connection was freed.
    pub fn closed(&mut self) {
        self.conns_open = self.conns_open.saturating_sub(1);
    }

    /// A connection was refused over `--max-conns`.
    pub fn refused(&mut self) {
        self.conns_refused += 1;
    }

    /// A request frame's header was decoded (`op` when it names a known op).
    pub fn frame_in(&mut self, op: Option<Op>) {
        self.frames_in += 1;
        if let Some(count) = op
            .and_then(|op| Op::ALL.iter().position(|o| *o == op))
            .and_then(|i| self.ops.get_mut(i))
        {
            *count += 1;
        }
    }

    /// Frames were handed to a socket's output (replies and pushes).
    pub fn frames_out(&mut self, n: u64) {
        self.frames_out += n;
    }

    /// Bytes read from a socket (stream or datagram).
    pub fn read(&mut self, n: usize) {
        self.bytes_in += n as u64;
    }

    /// Bytes written to a socket (stream or datagram).
    pub fn wrote(&mut self, n: usize) {
        self.bytes_out += n as u64;
    }

    pub fn auth_failed(&mut self) {
        self.auth_failures += 1;
    }

    pub fn tls_failed(&mut self) {
        self.tls_failures += 1;
    }

    /// A stream broke the framing rules (contract section 1).
    pub fn protocol_error(&mut self) {
        self.protocol_errors += 1;
    }

    pub fn datagram_in(&mut self) {
        self.udp_in += 1;
    }

    /// A datagram got no reply: malformed, or its reply would break the 3x cap.
    pub fn datagram_dropped(&mut self) {
        self.udp_dropped += 1;
    }

    pub fn slow_consumer(&mut self) {
        self.slow_consumers += 1;
    }

    /// The counters as the `stats` reply body.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Snapshot<'a> {
            uptime_s: u64,
            #[serde(flatten)]
            counters: &'a Stats,
            ops: BTreeMap<&'static str, u64>,
        }
        let snapshot = Snapshot {
            uptime_s: self.started.elapsed().as_secs(),
            counters: self,
            ops: Op::ALL
                .iter()
                .zip(self.ops)
                .map(|(op, n)| (op.name(), n))
                .collect(),
        };
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }
}
