//! Server counters, reported by the `stats` op (contract section 4).

use super::Op;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub conns_open: u64,
    pub conns_total: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub auth_failures: u64,
    pub protocol_errors: u64,
    pub udp_in: u64,
    pub udp_dropped: u64,
    /// Connections refused with 503 over `--max-conns`.
    pub conns_refused: u64,
    /// Chat members disconnected for not reading their pushes (`--max-outbuf`).
    pub slow_consumers: u64,
    ops: [u64; Op::ALL.len()],
}

#[derive(Serialize)]
struct Snapshot<'a> {
    uptime_s: u64,
    conns_open: u64,
    conns_total: u64,
    conns_refused: u64,
    frames_in: u64,
    frames_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    auth_failures: u64,
    protocol_errors: u64,
    udp_in: u64,
    udp_dropped: u64,
    slow_consumers: u64,
    ops: BTreeMap<&'a str, u64>,
}

impl Stats {
    pub fn new(started: Instant) -> Stats {
        Stats {
            started,
            conns_open: 0,
            conns_total: 0,
            frames_in: 0,
            frames_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            auth_failures: 0,
            protocol_errors: 0,
            udp_in: 0,
            udp_dropped: 0,
            conns_refused: 0,
            slow_consumers: 0,
            ops: [0; Op::ALL.len()],
        }
    }

    pub fn count_op(&mut self, op: Op) {
        if let Some(i) = Op::ALL.iter().position(|o| *o == op) {
            self.ops[i] += 1;
        }
    }

    /// The counters as the `stats` reply body.
    pub fn to_json(&self) -> Vec<u8> {
        let snapshot = Snapshot {
            uptime_s: self.started.elapsed().as_secs(),
            conns_open: self.conns_open,
            conns_total: self.conns_total,
            conns_refused: self.conns_refused,
            frames_in: self.frames_in,
            frames_out: self.frames_out,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            auth_failures: self.auth_failures,
            protocol_errors: self.protocol_errors,
            udp_in: self.udp_in,
            udp_dropped: self.udp_dropped,
            slow_consumers: self.slow_consumers,
            ops: Op::ALL
                .iter()
                .zip(self.ops)
                .map(|(op, n)| (op.name(), n))
                .collect(),
        };
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }
}
