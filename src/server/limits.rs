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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Where an unauthenticated connection stands in line: when it came, its
/// worker and its number there. Ordered: the first is the oldest.
pub(super) type Place = (Instant, usize, u64);

/// What the workers count together.
#[derive(Debug)]
pub struct Counts {
    /// Connections being served (`--max-conns`).
    open: AtomicUsize,
    /// Served connections per peer address (only with `--max-conns-per-ip`).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Connections still greeting, oldest first, each with its slot.
    unauth: Mutex<BTreeMap<Place, usize>>,
    /// Bytes all connections held when last settled (`--max-memory`).
    held: AtomicU64,
    /// Per worker: its biggest holder as last seen, raised as holders grow
    /// and set exactly by each eviction pass, so the worker holding the
    /// biggest connection evicts first, whichever worker saw the total over.
    biggest: Vec<AtomicU64>,
    /// Per worker: asked to evict (`Mail::OverMemory`) and not yet at it,
    /// so it is asked once, not every turn.
    asked: Vec<AtomicBool>,
}

impl Counts {
    pub fn new(workers: usize) -> Counts {
        Counts {
            open: AtomicUsize::new(0),
            per_ip: Mutex::default(),
            unauth: Mutex::default(),
            held: AtomicU64::new(0),
            biggest: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            asked: (0..workers).map(|_| AtomicBool::new(false)).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waiting for its login: greeting, or (behind a proxy) for its PROXY header first.
fn waits_for_login(state: State) -> bool {
    matches!(state, State::Proxy | State::Greeting)
}

/// Why a new connection is not served.
pub(super) enum Refusal {
    TooMany,
    FromThisAddress,
    Unauthenticated,
}

impl Refusal {
    /// As log lines say it.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Refusal::TooMany => "over max-conns",
            Refusal::FromThisAddress => "over max-conns-per-ip",
            Refusal::Unauthenticated => "over max-unauth",
        }
    }
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
        self.take_places(peer)?;
        self.take_line(r, key, serial)
            .inspect_err(|_| self.release(peer.ip))
    }

    /// Counts a connection from `peer` open and under its address, or refuses it.
    pub(super) fn take_places(&mut self, peer: &Peer) -> Result<(), Refusal> {
        let counts = &self.team.counts;
        if counts.open.fetch_add(1, Ordering::Relaxed) >= self.config.max_conns {
            counts.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::TooMany);
        }
        if let Some(ip) = self.counted_ip(peer.ip) {
            let mut per_ip = lock(&counts.per_ip);
            let n = per_ip.entry(ip).or_default();
            if *n >= self.config.max_conns_per_ip {
                drop(per_ip);
                counts.open.fetch_sub(1, Ordering::Relaxed);
                return Err(Refusal::FromThisAddress);
            }
            *n += 1;
        }
        Ok(())
    }

    /// The address a connection is counted under (with `--max-conns-per-ip`).
    fn counted_ip(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        ip.filter(|_| self.config.max_conns_per_ip > 0)
    }

    /// A place in line for login (`--max-unauth`) for the connection in slot
    /// `key` numbered `serial`, or a refusal; `None` with `--no-auth`.
    pub(super) fn take_line(
        &mut self,
        r: &mut Reactor,
        key: usize,
        serial: u64,
    ) -> Result<Option<Place>, Refusal> {
        if self.config.no_auth {
            return Ok(None);
        }
        let now = r.now();
        let place = (now, self.me, serial);
        let mut line = lock(&self.team.counts.unauth);
        if line.len() < self.config.max_unauth {
            line.insert(place, key);
            return Ok(Some(place));
        }
        // Over --max-unauth: the oldest that has waited long enough gives way;
        // logged-in connections are never in line.
        let oldest = line
            .first_key_value()
            .filter(|((opened, _, _), _)| now.duration_since(*opened) >= tuning::UNAUTH_GRACE)
            .map(|(place, key)| (*place, *key));
        let Some((old, old_key)) = oldest else {
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
        Ok(Some(place))
    }

    /// Leaves the line (logged in, closed, or never opened after all).
    pub(super) fn leave_line(&self, place: Place) {
        lock(&self.team.counts.unauth).remove(&place);
    }

    /// Gives back the places [`Server::take_places`] took for a peer at `ip`.
    pub(super) fn release(&self, ip: Option<IpAddr>) {
        let counts = &self.team.counts;
        counts.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.counted_ip(ip) {
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
        if slot.serial != serial || !waits_for_login(slot.conn.state()) {
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
    pub(super) fn recount(counts: &Counts, me: usize, slot: &mut Slot) {
        if let Some(place) = slot.unauth
            && !waits_for_login(slot.conn.state())
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
                if let Some(biggest) = counts.biggest.get(me)
                    && biggest.load(Ordering::Relaxed) < now
                {
                    biggest.store(now, Ordering::Relaxed);
                }
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
            self.release(slot.ip);
        }
    }

    /// Over `--max-memory` (all workers together): evicts the connections
    /// holding the most, biggest first, until the total fits. This worker
    /// evicts its own while they are at least as big as any other worker's
    /// biggest; when another's is bigger (or this one has none left), that
    /// worker is asked to go on (a worker with no events would not look). A
    /// scan, but only when over the limit; the total itself is a running sum.
    /// Returns whether any was evicted.
    pub(super) fn evict_over_memory(&mut self, r: &mut Reactor) -> bool {
        let (max, me) = (self.config.max_memory, self.me);
        // Every turn comes here: reads only, unless over the limit or asked.
        let counts = &self.team.counts;
        if let Some(asked) = counts.asked.get(me)
            && asked.load(Ordering::Relaxed)
        {
            asked.store(false, Ordering::Relaxed);
        }
        let mut total = counts.held.load(Ordering::Relaxed);
        if total <= max {
            return false;
        }
        let counts = Arc::clone(counts);
        let mut holders: Vec<(usize, usize)> = self
            .conns
            .iter()
            // Those already closing were evicted, or are on their way out.
            .filter(|(_, s)| s.held > 0 && s.conn.is_open())
            .map(|(key, s)| (s.held, key))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        // The biggest holder of another worker, as last seen.
        let other = (0..counts.biggest.len())
            .filter(|w| *w != me)
            .filter_map(|w| Some((counts.biggest.get(w)?.load(Ordering::Relaxed), w)))
            .max();
        let mut evicted = false;
        let mut left = holders.iter().peekable();
        while let Some(&&(held, key)) = left.peek() {
            if total <= max || other.is_some_and(|(big, _)| big > held as u64) {
                break;
            }
            left.next();
            if let Some(slot) = self.conns.get_mut(key) {
                log::warn!("{}: memory limit ({held} B held), disconnecting", slot.peer);
                slot.conn.evict(&mut self.services, r.now());
                // Off the shared total now, before another worker reads it.
                Self::recount(&counts, me, slot);
                total = counts.held.load(Ordering::Relaxed);
                evicted = true;
            }
            self.touch(key);
        }
        // What this worker holds at most now, exactly.
        let mine = left.peek().map_or(0, |(held, _)| *held as u64);
        if let Some(biggest) = counts.biggest.get(me) {
            biggest.store(mine, Ordering::Relaxed);
        }
        // Ask the worker with the biggest holder, if it has one at all: what
        // is left may be only closing connections, which no eviction frees.
        if total > max
            && let Some((big, w)) = other
            && big > 0
            && counts
                .asked
                .get(w)
                .is_some_and(|a| !a.swap(true, Ordering::Relaxed))
        {
            self.team.hub.post(w, Mail::OverMemory);
        }
        evicted
    }
}
