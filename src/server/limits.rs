//! The limits of contract section 9 that span connections: `--max-conns`,
//! `--max-unauth` (the oldest waiting connection gives way),
//! `--max-conns-per-ip`, and `--max-memory` (a running sum of what connections
//! hold; over it the biggest holders are evicted, as Redis's
//! `maxmemory-clients` does). With several workers each limit is the whole
//! server's (section 12): the counts live in [`Counts`], which all share, and
//! a place is reserved in one step (an atomic add, or under a lock) so two
//! workers never both take the last.

use super::{Server, Slot};
use crate::config::tuning;
use crate::conn::State;
use crate::hub::Mail;
use crate::net::Peer;
use crate::reactor::Reactor;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Where an unauthenticated connection stands in line: when it came, its
/// worker and its number there. Ordered: the first is the oldest.
pub(super) type Place = (Instant, usize, u64);

/// What the workers count together.
#[derive(Debug, Default)]
pub struct Counts {
    /// Connections being served (`--max-conns`).
    open: AtomicUsize,
    /// Served connections per peer address (only with `--max-conns-per-ip`).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Connections still greeting, oldest first, each with its slot.
    unauth: Mutex<BTreeMap<Place, usize>>,
    /// Bytes all connections held when last settled (`--max-memory`).
    held: AtomicU64,
    /// The other workers were asked to evict (`Mail::OverMemory`), and the
    /// total has not been seen under the limit since: asked once, not per turn.
    asked: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a new connection is not served.
pub(super) enum Refusal {
    TooMany,
    FromThisAddress,
    Unauthenticated,
}

impl Server {
    /// Whether a new connection from `peer`, in slot `key` with number `serial`,
    /// is served: its places are then taken (counted open, under its address,
    /// in line for login), making room by evicting the oldest waiting
    /// unauthenticated connection if it must.
    pub(super) fn admit(
        &mut self,
        r: &mut Reactor,
        key: usize,
        serial: u64,
        peer: &Peer,
    ) -> Result<Option<Place>, Refusal> {
        let counts = &self.team.counts;
        if counts.open.fetch_add(1, Ordering::Relaxed) >= self.config.max_conns {
            counts.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::TooMany);
        }
        let ip = peer.ip.filter(|_| self.config.max_conns_per_ip > 0);
        if let Some(ip) = ip {
            let mut per_ip = lock(&counts.per_ip);
            let n = per_ip.entry(ip).or_default();
            if *n >= self.config.max_conns_per_ip {
                drop(per_ip);
                self.release(None); // its address was not counted

                return Err(Refusal::FromThisAddress);
            }
            *n += 1;
        }
        if self.config.no_auth {
            return Ok(None);
        }
        let now = r.now();
        let place = (now, self.me, serial);
        let mut line = lock(&counts.unauth);
        if line.len() >= self.config.max_unauth {
            // Over --max-unauth: the oldest that has waited long enough gives
            // way; logged-in connections are never in line.
            let oldest = line
                .first_key_value()
                .filter(|((opened, _, _), _)| now.duration_since(*opened) >= tuning::UNAUTH_GRACE)
                .map(|(place, key)| (*place, *key));
            let Some((old, old_key)) = oldest else {
                drop(line);
                self.release(ip);
                return Err(Refusal::Unauthenticated);
            };
            line.remove(&old);
            line.insert(place, key);
            drop(line);
            let (_, worker, old_serial) = old;
            if worker == self.me {
                self.give_way(r, old_key, old_serial);
            } else {
                let mail = Mail::GiveWay {
                    key: old_key,
                    serial: old_serial,
                };
                self.team.hub.post(worker, mail);
            }
            return Ok(Some(place));
        }
        line.insert(place, key);
        Ok(Some(place))
    }

    /// Gives back what a refused admission had taken.
    fn release(&self, ip: Option<IpAddr>) {
        let counts = &self.team.counts;
        counts.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = ip {
            let mut per_ip = lock(&counts.per_ip);
            if let Some(n) = per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }

    /// The unauthenticated connection in slot `key` gives way to a newer one,
    /// if it is still the one numbered `serial` and still greeting (one that
    /// logged in meanwhile stays).
    pub(super) fn give_way(&mut self, r: &mut Reactor, key: usize, serial: u64) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.serial != serial || slot.conn.state() != State::Greeting {
            return;
        }
        let why = "too many unauthenticated connections";
        slot.conn
            .close_politely(&mut self.services, why, Some(why), r.now());
        slot.unauth = None; // its place in line went to the newcomer
        self.touch(key);
    }

    /// Brings the counts up to date for a settled slot: logged in since (out
    /// of the line), and the bytes it holds now.
    pub(super) fn recount(counts: &Counts, slot: &mut Slot) {
        if let Some(place) = slot.unauth
            && slot.conn.state() != State::Greeting
        {
            slot.unauth = None;
            lock(&counts.unauth).remove(&place);
        }
        let tls = slot.stream.tls().map_or(0, crate::tls::TlsStream::held);
        let held = slot.conn.held().saturating_add(tls);
        if held != slot.held {
            let (was, now) = (slot.held as u64, held as u64);
            if now > was {
                counts.held.fetch_add(now - was, Ordering::Relaxed);
            } else {
                counts.held.fetch_sub(was - now, Ordering::Relaxed);
            }
            slot.held = held;
        }
    }

    /// Takes a freed slot out of the counts.
    pub(super) fn count_out(&mut self, slot: &Slot) {
        let counts = &self.team.counts;
        if let Some(place) = slot.unauth {
            lock(&counts.unauth).remove(&place);
        }
        counts.held.fetch_sub(slot.held as u64, Ordering::Relaxed);
        if slot.counted {
            let ip = slot.ip.filter(|_| self.config.max_conns_per_ip > 0);
            self.release(ip);
        }
    }

    /// Over `--max-memory` (all workers together): evicts this worker's
    /// connections holding the most, biggest first, until the total fits; if
    /// that is not enough, the other workers are asked to evict theirs (a
    /// worker with no events would not look). A scan, but only when over the
    /// limit; the total itself is a running sum. Returns whether any was evicted.
    pub(super) fn evict_over_memory(&mut self, r: &mut Reactor) -> bool {
        let max = self.config.max_memory;
        let counts = &self.team.counts;
        let mut total = counts.held.load(Ordering::Relaxed);
        if total <= max {
            // Read first: a store every turn would bounce the line between cores.
            if counts.asked.load(Ordering::Relaxed) {
                counts.asked.store(false, Ordering::Relaxed);
            }
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
        if total > max && !self.team.counts.asked.swap(true, Ordering::Relaxed) {
            self.team.hub.post_others(self.me, || Mail::OverMemory);
        }
        evicted
    }
}
