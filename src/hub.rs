//! Where the workers of one server meet (contract section 12): each worker's
//! counters, which workers have members of each chat room and connections of
//! each user, and a mailbox per worker that the others post to, waking it
//! through its `mio::Waker`. A push crosses once per worker, as an `Arc<[u8]>`;
//! there every member shares one copy. One worker: nothing is ever posted.

use crate::service::stats::Stats;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// The most workers one server runs (a room's workers are bits of a `u64`).
pub const MAX_WORKERS: usize = 64;

/// What one worker posts to another.
#[derive(Debug)]
pub enum Mail {
    /// A chat push, for the chat service.
    Chat(Delivery),
    /// `--max-unauth`: the connection in slot `key`, if it is still the one
    /// numbered `serial` and still greeting, gives way to a newer one.
    GiveWay { key: usize, serial: u64 },
    /// `--max-memory`: all workers together hold too much, and this worker
    /// holds the biggest connection (as the sender last saw): evict here.
    OverMemory,
}

/// A chat push from another worker: its frame, and whom it is for there.
#[derive(Debug)]
pub struct Delivery {
    pub to: To,
    pub frame: Arc<[u8]>,
}

/// Whom a [`Delivery`] is for, on the worker it reaches.
#[derive(Debug, Clone)]
pub enum To {
    /// Every member of the room.
    Room(Arc<str>),
    /// Every connection of the user (a `dm`).
    User(Arc<str>),
}

#[derive(Debug, Default)]
struct Mailbox {
    mail: Mutex<Vec<Mail>>,
    waker: OnceLock<Arc<mio::Waker>>,
}

#[derive(Debug, Default)]
struct Tables {
    /// Room -> the workers with members in it (bit `i`: worker `i`).
    rooms: HashMap<Arc<str>, u64>,
    /// User -> its logged-in connections on each worker.
    users: HashMap<Arc<str>, Vec<usize>>,
}

#[derive(Debug)]
pub struct Hub {
    /// Every worker's counters, in worker order (`stats` sums them).
    pub stats: Arc<[Arc<Stats>]>,
    tables: Mutex<Tables>,
    boxes: Vec<Mailbox>,
}

/// A lock that a panicked holder does not poison for the others: every
/// update below leaves the tables whole at each step.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The workers whose bits are set.
fn each(mask: u64) -> impl Iterator<Item = usize> {
    (0..MAX_WORKERS).filter(move |w| mask & (1 << w) != 0)
}

fn bit(worker: usize) -> u64 {
    1u64.checked_shl(worker as u32).unwrap_or(0)
}

impl Hub {
    /// A hub for the workers whose counters are `stats`, one each.
    pub fn new(stats: Vec<Arc<Stats>>) -> Hub {
        Hub {
            boxes: stats.iter().map(|_| Mailbox::default()).collect(),
            stats: stats.into(),
            tables: Mutex::default(),
        }
    }

    pub fn workers(&self) -> usize {
        self.boxes.len()
    }

    /// Worker `me` runs its loop: mail wakes it from now on. Mail posted
    /// before is waiting, and wakes it now.
    pub fn set_waker(&self, me: usize, waker: Arc<mio::Waker>) {
        if let Some(b) = self.boxes.get(me) {
            let _ = b.waker.set(waker);
            if !lock(&b.mail).is_empty()
                && let Some(w) = b.waker.get()
            {
                let _ = w.wake();
            }
        }
    }

    /// Posts `mail` to worker `to`. Only the first mail into an empty box wakes
    /// it (an eventfd write): the worker takes every mail when it wakes.
    pub fn post(&self, to: usize, mail: Mail) {
        let Some(b) = self.boxes.get(to) else {
            return;
        };
        let was_empty = {
            let mut box_ = lock(&b.mail);
            let was_empty = box_.is_empty();
            box_.push(mail);
            was_empty
        };
        if was_empty && let Some(w) = b.waker.get() {
            let _ = w.wake();
        }
    }

    /// Takes worker `me`'s mail into `into` (empty, its allocation swapped in).
    pub fn take(&self, me: usize, into: &mut Vec<Mail>) {
        if let Some(b) = self.boxes.get(me) {
            std::mem::swap(&mut *lock(&b.mail), into);
        }
    }

    /// Worker `me` has members of `room` now (its first joined).
    pub fn subscribe(&self, me: usize, room: &str) {
        let mut t = lock(&self.tables);
        match t.rooms.get_mut(room) {
            Some(mask) => *mask |= bit(me),
            None => {
                t.rooms.insert(room.into(), bit(me));
            }
        }
    }

    /// Worker `me` has no members of `room` any more.
    pub fn unsubscribe(&self, me: usize, room: &str) {
        let mut t = lock(&self.tables);
        if let Some(mask) = t.rooms.get_mut(room) {
            *mask &= !bit(me);
            if *mask == 0 {
                t.rooms.remove(room);
            }
        }
    }

    /// Posts a push for `room` to every other worker with members in it; the
    /// frame is copied once, whatever their number.
    pub fn publish_room(&self, me: usize, room: &str, frame: &[u8]) {
        let mask = lock(&self.tables).rooms.get(room).copied().unwrap_or(0);
        self.publish(me, mask, || To::Room(room.into()), frame);
    }

    /// Posts `frame` for `to` to the workers of `mask` but `me`, sharing one copy.
    fn publish(&self, me: usize, mask: u64, to: impl FnOnce() -> To, frame: &[u8]) {
        let mask = mask & !bit(me);
        if mask == 0 {
            return;
        }
        let (to, frame): (To, Arc<[u8]>) = (to(), frame.into());
        for w in each(mask) {
            let (to, frame) = (to.clone(), Arc::clone(&frame));
            self.post(w, Mail::Chat(Delivery { to, frame }));
        }
    }

    /// A login of `user` on worker `me`, counted unless the user already has
    /// `max` connections logged in on all workers together (`max` 0: no limit).
    /// Checked and counted in one step, so two workers cannot both take the last.
    pub fn login(&self, me: usize, user: &str, max: usize) -> bool {
        let workers = self.workers();
        let mut t = lock(&self.tables);
        if let Some(counts) = t.users.get_mut(user) {
            if max > 0 && counts.iter().sum::<usize>() >= max {
                return false;
            }
            if let Some(n) = counts.get_mut(me) {
                *n += 1;
            }
            return true;
        }
        let mut counts = vec![0; workers];
        if let Some(n) = counts.get_mut(me) {
            *n = 1;
        }
        t.users.insert(user.into(), counts);
        true
    }

    /// A connection of `user` on worker `me` closed.
    pub fn logout(&self, me: usize, user: &str) {
        let mut t = lock(&self.tables);
        if let Some(counts) = t.users.get_mut(user) {
            if let Some(n) = counts.get_mut(me) {
                *n = n.saturating_sub(1);
            }
            if counts.iter().all(|n| *n == 0) {
                t.users.remove(user);
            }
        }
    }

    /// Whether `user` has a connection logged in on any worker.
    pub fn is_online(&self, user: &str) -> bool {
        lock(&self.tables).users.contains_key(user)
    }

    /// Posts a `dm` push to every other worker where `user` has connections.
    pub fn publish_user(&self, me: usize, user: &str, frame: &[u8]) {
        let mask = lock(&self.tables).users.get(user).map_or(0, |counts| {
            counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .fold(0, |mask, (w, _)| mask | bit(w))
        });
        self.publish(me, mask, || To::User(user.into()), frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn hub(n: usize) -> Hub {
        Hub::new(
            (0..n)
                .map(|_| Arc::new(Stats::new(Instant::now())))
                .collect(),
        )
    }

    fn taken(hub: &Hub, me: usize) -> Vec<Mail> {
        let mut mail = Vec::new();
        hub.take(me, &mut mail);
        mail
    }

    #[test]
    fn a_room_push_goes_to_the_other_workers_with_members_only() {
        let h = hub(3);
        h.subscribe(0, "r");
        h.subscribe(2, "r");
        h.publish_room(0, "r", b"frame");
        assert!(taken(&h, 0).is_empty(), "not to itself");
        assert!(taken(&h, 1).is_empty(), "no members there");
        let mail = taken(&h, 2);
        assert!(
            matches!(&mail[..], [Mail::Chat(Delivery { to: To::Room(room), frame })] if &**room == "r" && &**frame == b"frame")
        );
        h.unsubscribe(2, "r");
        h.publish_room(0, "r", b"frame");
        assert!(taken(&h, 2).is_empty());
        h.unsubscribe(0, "r");
        assert!(
            lock(&h.tables).rooms.is_empty(),
            "an empty room is forgotten"
        );
    }

    #[test]
    fn logins_count_across_workers_against_the_limit() {
        let h = hub(2);
        assert!(h.login(0, "ann", 2));
        assert!(h.login(1, "ann", 2));
        assert!(
            !h.login(0, "ann", 2),
            "the third over the whole server's limit"
        );
        h.publish_user(0, "ann", b"dm");
        assert_eq!(taken(&h, 1).len(), 1);
        assert!(taken(&h, 0).is_empty());
        h.logout(1, "ann");
        h.publish_user(0, "ann", b"dm");
        assert!(taken(&h, 1).is_empty());
        assert!(h.is_online("ann"));
        h.logout(0, "ann");
        assert!(!h.is_online("ann"));
        assert!(h.login(1, "ann", 0), "0: no limit");
    }
}
