//! The limits of contract section 9 that span connections: `--max-unauth` (the
//! oldest waiting connection gives way), `--max-conns-per-ip`, and
//! `--max-memory` (a running sum of what connections hold; over it the biggest
//! holders are evicted, as Redis's `maxmemory-clients` does).

use super::{Server, Slot};
use crate::config::tuning;
use crate::conn::State;
use crate::net::Peer;
use crate::reactor::Reactor;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

/// What the server counts across connections.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Served connections per peer address.
    per_ip: HashMap<IpAddr, usize>,
    /// Unauthenticated connections in the order they came, as (slot, serial,
    /// opened). Entries for ones that logged in or closed are skipped lazily.
    unauth: VecDeque<(usize, u64, Instant)>,
    /// Connections still greeting (the slots with `unauth` set).
    unauth_open: usize,
    /// Bytes all connections held when last settled.
    held: u64,
    /// Numbers each accepted connection, so a reused slot is not mistaken for
    /// the connection an old entry names.
    serials: u64,
}

/// Why a new connection is not served.
pub(super) enum Refusal {
    TooMany,
    FromThisAddress,
    Unauthenticated,
}

impl Server {
    /// Whether a new connection from `peer` may be served (making room by
    /// evicting the oldest waiting unauthenticated connection if it must).
    pub(super) fn admit(&mut self, r: &mut Reactor, peer: &Peer) -> Result<(), Refusal> {
        if self.services.stats.conns_open() as usize >= self.config.max_conns {
            return Err(Refusal::TooMany);
        }
        let max_ip = self.config.max_conns_per_ip;
        if let Some(ip) = peer.ip
            && max_ip > 0
            && self.tally.per_ip.get(&ip).is_some_and(|n| *n >= max_ip)
        {
            return Err(Refusal::FromThisAddress);
        }
        if self.config.no_auth || self.tally.unauth_open < self.config.max_unauth {
            return Ok(());
        }
        // Over --max-unauth: the oldest that has waited long enough gives way;
        // logged-in connections are never touched.
        let now = r.now();
        while let Some(&(key, serial, opened)) = self.tally.unauth.front() {
            // Still greeting now: a login served earlier in this turn is not
            // settled yet, and a logged-in connection is never touched.
            let live = self.conns.get(key).is_some_and(|s| {
                s.serial == serial && s.unauth && s.conn.state() == State::Greeting
            });
            if !live {
                self.tally.unauth.pop_front();
                continue;
            }
            if now.duration_since(opened) < tuning::UNAUTH_GRACE {
                break;
            }
            self.tally.unauth.pop_front();
            if let Some(slot) = self.conns.get_mut(key) {
                let why = "too many unauthenticated connections";
                slot.conn
                    .close_politely(&mut self.services, why, Some(why), now);
                slot.unauth = false;
                self.tally.unauth_open = self.tally.unauth_open.saturating_sub(1);
            }
            self.touch(key);
            return Ok(());
        }
        Err(Refusal::Unauthenticated)
    }

    /// Counts a new slot: its address, and its wait for login.
    pub(super) fn count_in(&mut self, key: usize, now: Instant) {
        self.tally.serials += 1;
        let serial = self.tally.serials;
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        slot.serial = serial;
        if !slot.counted {
            return;
        }
        if let Some(ip) = slot.ip {
            *self.tally.per_ip.entry(ip).or_default() += 1;
        }
        if slot.conn.state() == State::Greeting {
            slot.unauth = true;
            self.tally.unauth_open += 1;
            self.tally.unauth.push_back((key, serial, now));
            // Entries of connections that logged in pile up behind a long
            // waiter: sweep them when they outnumber the live ones.
            if self.tally.unauth.len() > 2 * self.tally.unauth_open + 1024 {
                let conns = &self.conns;
                self.tally.unauth.retain(|(k, serial, _)| {
                    conns
                        .get(*k)
                        .is_some_and(|s| s.serial == *serial && s.unauth)
                });
            }
        }
    }

    /// Brings the tally up to date for a settled slot: logged in since, and
    /// the bytes it holds now.
    pub(super) fn recount(tally: &mut Tally, slot: &mut Slot) {
        if slot.unauth && slot.conn.state() != State::Greeting {
            slot.unauth = false;
            tally.unauth_open = tally.unauth_open.saturating_sub(1);
        }
        let tls = slot.stream.tls().map_or(0, crate::tls::TlsStream::held);
        let held = slot.conn.held().saturating_add(tls);
        tally.held = tally
            .held
            .saturating_sub(slot.held as u64)
            .saturating_add(held as u64);
        slot.held = held;
    }

    /// Takes a freed slot out of the tally.
    pub(super) fn count_out(&mut self, slot: &Slot) {
        if slot.unauth {
            self.tally.unauth_open = self.tally.unauth_open.saturating_sub(1);
        }
        self.tally.held = self.tally.held.saturating_sub(slot.held as u64);
        if let (true, Some(ip)) = (slot.counted, slot.ip)
            && let Some(n) = self.tally.per_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tally.per_ip.remove(&ip);
            }
        }
    }

    /// Over `--max-memory`: evicts the connections holding the most, biggest
    /// first, until the rest fit. A scan, but only when over the limit; the
    /// total itself is a running sum. Returns whether any was evicted.
    pub(super) fn evict_over_memory(&mut self, r: &mut Reactor) -> bool {
        let max = self.config.max_memory;
        if self.tally.held <= max {
            return false;
        }
        let mut holders: Vec<(usize, usize)> = self
            .conns
            .iter()
            // Those already closing were evicted, or are on their way out.
            .filter(|(_, s)| s.held > 0 && s.conn.is_open())
            .map(|(key, s)| (s.held, key))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let mut total = self.tally.held;
        let mut evicted = false;
        for (held, key) in holders {
            if total <= max {
                break;
            }
            if let Some(slot) = self.conns.get_mut(key) {
                log::warn!("{}: memory limit ({held} B held), disconnecting", slot.peer);
                slot.conn.evict(&mut self.services, r.now());
                total = total.saturating_sub(held as u64);
                evicted = true;
            }
            self.touch(key);
        }
        evicted
    }
}
