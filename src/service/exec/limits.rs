//! Exec's resource limits (contract section 6): how many run at once, in all and
//! per user (`--exec-max`, `--exec-max-per-user`), and each child's rlimits.

use super::confine::Rlimit;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Open files per process of an exec.
pub const MAX_FILES: libc::rlim_t = 256;

/// The limits `serve` was given.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Address space per process, bytes (`--exec-memory`).
    pub memory: u64,
    /// Execs running at once (`--exec-max`).
    pub max: usize,
    /// Execs running at once per user (`--exec-max-per-user`).
    pub max_per_user: usize,
}

/// The child's rlimits: open files, address space, CPU seconds (a little over the
/// timeout: the deadline kills first), file size (`file_size`: the quota left;
/// `None`, unlimited), no core files, and, where no cgroup caps the tree,
/// RLIMIT_NPROC (which binds only a server that does not run as root).
pub fn rlimits(
    limits: &Limits,
    timeout: Duration,
    file_size: Option<u64>,
    nproc: bool,
) -> [Option<Rlimit>; 6] {
    let cpu = timeout.as_secs().saturating_add(2);
    [
        Some((libc::RLIMIT_NOFILE as _, MAX_FILES)),
        Some((libc::RLIMIT_AS as _, limits.memory)),
        Some((libc::RLIMIT_CPU as _, cpu)),
        Some((libc::RLIMIT_CORE as _, 0)),
        file_size.map(|left| (libc::RLIMIT_FSIZE as _, left)),
        nproc.then_some((libc::RLIMIT_NPROC as _, super::tree::MAX_TASKS.into())),
    ]
}

/// Execs running now, in all and per user.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// Hands out [`Slot`]s within the limits; clones share the counts (every
/// worker of a server, contract section 12).
#[derive(Debug, Default, Clone)]
pub struct Slots {
    counts: Arc<Mutex<Counts>>,
}

/// One running exec's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    user: String,
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slots {
    /// A slot for `user`, or `None` past either limit (503).
    pub fn take(&self, limits: &Limits, user: &str) -> Option<Slot> {
        let mut counts = lock(&self.counts);
        let mine = counts.per_user.get(user).copied().unwrap_or(0);
        if counts.total >= limits.max || mine >= limits.max_per_user {
            return None;
        }
        counts.total += 1;
        counts.per_user.insert(user.to_string(), mine + 1);
        Some(Slot {
            counts: Arc::clone(&self.counts),
            user: user.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_both_limits_and_come_back() {
        let limits = Limits {
            memory: 0,
            max: 3,
            max_per_user: 2,
        };
        let slots = Slots::default();
        let a1 = slots.take(&limits, "a");
        let a2 = slots.take(&limits, "a");
        assert!(a1.is_some() && a2.is_some());
        assert!(slots.take(&limits, "a").is_none(), "per user");
        let b1 = slots.take(&limits, "b");
        assert!(b1.is_some());
        assert!(slots.take(&limits, "c").is_none(), "in all");
        drop(a1);
        assert!(slots.take(&limits, "c").is_some());
    }
}
