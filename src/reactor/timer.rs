//! Timers: a min-heap of deadlines, each naming a token. Cancelling is lazy:
//! a cancelled timer stays in the heap, is skipped when it comes due, and is
//! swept out when cancelled ones outnumber the live. Owners also remember the
//! id they armed and ignore any other that fires, so a timer for a slot that
//! was freed and reused can never act on the new occupant.

use mio::Token;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::{Duration, Instant};

/// Names one armed timer. Ids are never reused, so a stale timer (for a
/// connection that has since closed, or re-armed) is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId(pub(super) u64);

#[derive(Debug, Default)]
pub struct Timers {
    // Ordered by deadline, then by id: timers due at the same instant fire in arming order.
    heap: BinaryHeap<Reverse<(Instant, TimerId, Token)>>,
    next_id: u64,
    /// Cancelled timers still in the heap: skipped when they come due, and
    /// swept out when they outnumber the live ones (so a flood of short-lived
    /// connections does not leave a heap full of dead 300 s idle timers).
    cancelled: HashSet<TimerId>,
}

/// Sweeping starts only past this many cancelled timers.
const SWEEP_MIN: usize = 1024;

impl Timers {
    pub fn add(&mut self, deadline: Instant, token: Token) -> TimerId {
        let id = TimerId(self.next_id);
        self.next_id += 1;
        self.heap.push(Reverse((deadline, id, token)));
        id
    }

    /// Cancels a timer that has not fired yet.
    pub fn cancel(&mut self, id: TimerId) {
        self.cancelled.insert(id);
        if self.cancelled.len() > SWEEP_MIN && self.cancelled.len() * 2 > self.heap.len() {
            let cancelled = &self.cancelled;
            self.heap
                .retain(|Reverse((_, id, _))| !cancelled.contains(id));
            self.cancelled.clear();
        }
    }

    /// Removes and returns the earliest live timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, Token)> {
        while let Some(Reverse((deadline, _, _))) = self.heap.peek() {
            if *deadline > now {
                return None;
            }
            let Reverse((_, id, token)) = self.heap.pop()?;
            if !self.cancelled.remove(&id) {
                return Some((id, token));
            }
        }
        None
    }

    /// Time until the earliest deadline (zero if already due), or `None` with no timers.
    pub fn until_next(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((deadline, _, _))| deadline.saturating_duration_since(now))
    }

    /// Live (armed, not cancelled) timers.
    pub fn len(&self) -> usize {
        self.heap.len().saturating_sub(self.cancelled.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_in_deadline_then_arming_order() {
        let mut t = Timers::default();
        let now = Instant::now();
        let late = t.add(now + Duration::from_secs(2), Token(1));
        let a = t.add(now + Duration::from_secs(1), Token(2));
        let b = t.add(now + Duration::from_secs(1), Token(3));
        assert_eq!(t.until_next(now), Some(Duration::from_secs(1)));
        assert_eq!(t.pop_due(now), None);
        let at = now + Duration::from_secs(1);
        assert_eq!(t.pop_due(at), Some((a, Token(2))));
        assert_eq!(t.pop_due(at), Some((b, Token(3))));
        assert_eq!(t.pop_due(at), None);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(5)),
            Some((late, Token(1)))
        );
        assert_eq!(t.until_next(now), None);
    }

    #[test]
    fn cancelled_timers_never_fire_and_are_swept() {
        let mut t = Timers::default();
        let now = Instant::now();
        let keep = t.add(now, Token(1));
        let ids: Vec<TimerId> = (0..5000)
            .map(|i| t.add(now + Duration::from_secs(300), Token(i)))
            .collect();
        for id in &ids {
            t.cancel(*id);
        }
        assert!(t.heap.len() < 2 * SWEEP_MIN + 10, "swept: {}", t.heap.len());
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.pop_due(now + Duration::from_secs(400)),
            Some((keep, Token(1)))
        );
        assert_eq!(t.pop_due(now + Duration::from_secs(400)), None);
        assert!(t.is_empty());
    }
}
