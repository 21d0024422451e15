//! Server counters, reported by the `stats` op (contract section 4). Each
//! counter is private and bumped by exactly one method below, named for the
//! event it counts; callers report events where they happen. Each worker
//! (contract section 12) writes only its own `Stats`; the report sums them all.

use super::Op;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// A counter one thread writes and any may read. With a single writer a
/// relaxed load and store is an exact increment, and costs what a plain `u64`
/// does (no locked instruction); readers see a recent value.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    fn sub(&self, n: u64) {
        self.0
            .store(self.0.load(Relaxed).saturating_sub(n), Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The counters, named once: the worker's `Counters` and the report's `Totals`.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        struct Counters { $($(#[$doc])* $name: Counter,)* }

        #[derive(Debug, Default, Serialize)]
        struct Totals { $($name: u64,)* }

        impl Totals {
            fn add(&mut self, c: &Counters) {
                $(self.$name = self.$name.saturating_add(c.$name.get());)*
            }
        }
    };
}

counters! {
    conns_open,
    conns_total,
    /// Connections refused with 503 over `--max-conns`.
    conns_refused,
    frames_in,
    frames_out,
    bytes_in,
    bytes_out,
    auth_failures,
    /// TLS connections ended by a TLS error: a failed handshake (plain frames or
    /// garbage on the TLS port), a bad record.
    tls_failures,
    protocol_errors,
    udp_in,
    udp_dropped,
    /// Chat members disconnected for not reading their pushes (`--max-outbuf`).
    slow_consumers,
}

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    c: Counters,
    ops: [Counter; Op::ALL.len()],
}

impl Stats {
    pub fn new(started: Instant) -> Stats {
        Stats {
            started,
            c: Counters::default(),
            ops: Default::default(),
        }
    }

    /// Connections this worker serves now (not counting ones refused with 503).
    pub fn conns_open(&self) -> u64 {
        self.c.conns_open.get()
    }

    /// A connection was accepted and will be served.
    pub fn opened(&self) {
        self.c.conns_open.add(1);
        self.c.conns_total.add(1);
    }

    /// A served connection was freed.
    pub fn closed(&self) {
        self.c.conns_open.sub(1);
    }

    /// A connection was refused over a connection limit.
    pub fn refused(&self) {
        self.c.conns_refused.add(1);
    }

    /// A request frame's header was decoded (`op` when it names a known op).
    pub fn frame_in(&self, op: Option<Op>) {
        self.c.frames_in.add(1);
        if let Some(count) = op
            .and_then(|op| Op::ALL.iter().position(|o| *o == op))
            .and_then(|i| self.ops.get(i))
        {
            count.add(1);
        }
    }

    /// Frames were handed to a socket's output (replies and pushes).
    pub fn frames_out(&self, n: u64) {
        self.c.frames_out.add(n);
    }

    /// Bytes read from a socket (stream or datagram).
    pub fn read(&self, n: usize) {
        self.c.bytes_in.add(n as u64);
    }

    /// Bytes written to a socket (stream or datagram).
    pub fn wrote(&self, n: usize) {
        self.c.bytes_out.add(n as u64);
    }

    pub fn auth_failed(&self) {
        self.c.auth_failures.add(1);
    }

    pub fn tls_failed(&self) {
        self.c.tls_failures.add(1);
    }

    /// A stream broke the framing rules (contract section 1).
    pub fn protocol_error(&self) {
        self.c.protocol_errors.add(1);
    }

    pub fn datagram_in(&self) {
        self.c.udp_in.add(1);
    }

    /// A datagram got no reply: malformed, or its reply would break the 3x cap.
    pub fn datagram_dropped(&self) {
        self.c.udp_dropped.add(1);
    }

    pub fn slow_consumer(&self) {
        self.c.slow_consumers.add(1);
    }
}

/// The `stats` reply body: every worker's counters summed, with `"workers"`.
pub fn report(all: &[Arc<Stats>]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Snapshot {
        uptime_s: u64,
        workers: usize,
        #[serde(flatten)]
        totals: Totals,
        ops: BTreeMap<&'static str, u64>,
    }
    let mut totals = Totals::default();
    let mut ops = [0u64; Op::ALL.len()];
    for stats in all {
        totals.add(&stats.c);
        for (sum, count) in ops.iter_mut().zip(&stats.ops) {
            *sum = sum.saturating_add(count.get());
        }
    }
    let started = all.iter().map(|s| s.started).min();
    let snapshot = Snapshot {
        uptime_s: started.map_or(0, |s| s.elapsed().as_secs()),
        workers: all.len(),
        totals,
        ops: Op::ALL
            .iter()
            .zip(ops)
            .map(|(op, n)| (op.name(), n))
            .collect(),
    };
    serde_json::to_vec(&snapshot).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_sums_every_worker() {
        let now = Instant::now();
        let (a, b) = (Arc::new(Stats::new(now)), Arc::new(Stats::new(now)));
        a.opened();
        b.opened();
        b.opened();
        b.closed();
        a.frame_in(Some(Op::Ping));
        b.frame_in(Some(Op::Ping));
        b.frame_in(None);
        let v: serde_json::Value = serde_json::from_slice(&report(&[a, b])).unwrap();
        assert_eq!(v["workers"], 2);
        assert_eq!(v["conns_open"], 2);
        assert_eq!(v["conns_total"], 3);
        assert_eq!(v["frames_in"], 3);
        assert_eq!(v["ops"]["ping"], 2);
    }
}
