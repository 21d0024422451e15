//! Timers: a min-heap of deadlines, each naming a token. Cancelling is lazy:
//! the owner remembers the id it armed and ignores any other that fires.

use mio::Token;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
}

impl Timers {
    pub fn add(&mut self, deadline: Instant, token: Token) -> TimerId {
        let id = TimerId(self.next_id);
        self.next_id += 1;
        self.heap.push(Reverse((deadline, id, token)));
        id
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, Token)> {
        match self.heap.peek() {
            Some(Reverse((deadline, _, _))) if *deadline <= now => {
                self.heap.pop().map(|Reverse((_, id, token))| (id, token))
            }
            _ => None,
        }
    }

    /// Time until the earliest deadline (zero if already due), or `None` with no timers.
    pub fn until_next(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((deadline, _, _))| deadline.saturating_duration_since(now))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
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
}
