//! `--quota` of contract section 5: each user's disk use in 4096-byte blocks (a
//! file its size rounded up, at least one block; a directory one block), and what
//! uploads in progress hold against it from their header on (judged up front, 413).
//!
//! The count moves only where the disk does (a rename, an unlink, a mkdir), by what
//! the entry counts on disk at that moment: the stat and the call after it are
//! one step under the user's lock ([`Files::hold`]), so no other request (on this
//! worker or another, contract section 12) comes between, and no interleaving of
//! requests can make the count drift from the disk.

use super::{Done, FileSession, Files, beneath};
use crate::pool::Task;
use crate::service::ops::OpError;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The unit of disk use.
pub(super) const BLOCK: u64 = 4096;

/// What a file of `size` bytes counts: whole blocks, at least one (an empty file too).
pub(super) fn file_blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK).max(1).saturating_mul(BLOCK)
}

/// What an entry counts, from its `lstat`: a file its blocks, a directory one
/// block, anything else (a symlink, a FIFO an exec made) nothing.
pub(super) fn counted(st: &libc::stat) -> u64 {
    if beneath::is_file(st) {
        file_blocks(beneath::size(st))
    } else if beneath::is_dir(st) {
        BLOCK
    } else {
        0
    }
}

/// Each user's use, once `--quota` needed it: one table for every worker.
pub type Usages = Arc<Mutex<HashMap<String, Arc<Mutex<Usage>>>>>;

/// A lock that a panicked holder does not poison for the others.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One user's disk use, in bytes of whole blocks.
#[derive(Debug, Default)]
pub struct Usage {
    /// What the entries under the user's root count (the root itself does not).
    stored: u64,
    /// What uploads in progress hold: each the growth judged at its header.
    reserved: u64,
    /// Counts every change of `stored`: a recount walking meanwhile must walk again.
    changes: u64,
}

impl Usage {
    /// 413 unless adding `more` and removing `less` keeps the use, with what other
    /// uploads hold (all reservations less `own`), within `quota`.
    pub(super) fn judge(&self, quota: u64, less: u64, more: u64, own: u64) -> Result<(), OpError> {
        let after = self
            .stored
            .saturating_sub(less)
            .saturating_add(self.reserved.saturating_sub(own))
            .saturating_add(more);
        if after > quota {
            return Err(OpError::new(
                413,
                format!("over quota: {after} bytes of disk would exceed {quota}"),
            ));
        }
        Ok(())
    }

    pub(super) fn change(&mut self, less: u64, more: u64) {
        self.stored = self.stored.saturating_sub(less).saturating_add(more);
        self.changes = self.changes.wrapping_add(1);
    }
}

/// What one upload in progress holds against its user's quota until it ends
/// (dropped: released, stored or not).
#[derive(Debug)]
pub(super) struct Reservation {
    usage: Arc<Mutex<Usage>>,
    quota: u64,
    held: u64,
}

impl Reservation {
    /// The user's use, locked: what the upload's rename is judged and counted
    /// against, with nothing between the stat, the rename and the count.
    pub(super) fn hold(&self) -> MutexGuard<'_, Usage> {
        lock(&self.usage)
    }

    /// At the rename, judged again from the disk as it is now: the upload of
    /// `written` bytes replaces an entry that counts `replaced` at this moment.
    pub(super) fn judge(&self, u: &Usage, replaced: u64, written: u64) -> Result<(), OpError> {
        u.judge(self.quota, replaced, file_blocks(written), self.held)
    }
}

/// The rename was done: the new file counts, the one it replaced no longer.
pub(super) fn stored(u: &mut Usage, replaced: u64, written: u64) {
    u.change(replaced, file_blocks(written));
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut u = lock(&self.usage);
        u.reserved = u.reserved.saturating_sub(self.held);
    }
}

impl Files {
    /// Judges a `put` of `size` bytes that replaces an entry counting `replaced`
    /// now, and holds its growth against the quota, or refuses it (413). `None`
    /// without `--quota`: nothing is counted.
    pub(super) fn reserve(
        &mut self,
        session: &mut FileSession,
        user: &str,
        replaced: u64,
        size: u64,
    ) -> Result<Option<Reservation>, OpError> {
        let Some(quota) = self.quota else {
            return Ok(None);
        };
        let usage = self.usage(session, user)?;
        let need = file_blocks(size);
        let held = need.saturating_sub(replaced);
        {
            let mut u = lock(&usage);
            u.judge(quota, replaced, need, 0)?;
            u.reserved = u.reserved.saturating_add(held);
        }
        Ok(Some(Reservation { usage, quota, held }))
    }

    /// The user's use, to be locked across a stat and the change it judges
    /// (`mkdir`, `rm`); `None` without `--quota`.
    pub(super) fn hold(
        &mut self,
        session: &mut FileSession,
        user: &str,
    ) -> Result<Option<Arc<Mutex<Usage>>>, OpError> {
        match self.quota {
            Some(_) => self.usage(session, user).map(Some),
            None => Ok(None),
        }
    }

    /// Judges `mkdir` of `count` new directories (413 when they do not fit).
    pub(super) fn judge_dirs(&self, u: &Usage, count: usize) -> Result<(), OpError> {
        let Some(quota) = self.quota else {
            return Ok(());
        };
        let more = BLOCK.saturating_mul(u64::try_from(count).unwrap_or(u64::MAX));
        u.judge(quota, 0, more, 0)
    }

    /// What the user may still store under `--quota` (`None`: unlimited): the
    /// quota less their disk use and what their uploads in progress hold.
    pub fn quota_left(
        &mut self,
        session: &mut FileSession,
        user: &str,
    ) -> Result<Option<u64>, OpError> {
        let Some(quota) = self.quota else {
            return Ok(None);
        };
        let usage = self.usage(session, user)?;
        let u = lock(&usage);
        Ok(Some(
            quota.saturating_sub(u.stored.saturating_add(u.reserved)),
        ))
    }

    /// Starts counting the user's tree again from the disk, after something
    /// other than these requests wrote beneath the root (an exec): the walk is
    /// blocking work for the pool. `None`: nothing to recount (no `--quota`, or the
    /// user's use was never counted: the first walk will see everything).
    pub fn recount_start(
        &mut self,
        session: &mut FileSession,
        user: &str,
    ) -> Result<Option<(Recount, Task<Done>)>, OpError> {
        let Some(usage) = self.known(user).filter(|_| self.quota.is_some()) else {
            return Ok(None);
        };
        let changes = lock(&usage).changes;
        let root = self.root(session, user)?.try_clone()?;
        let task = walk_of(&root)?;
        let recount = Recount {
            user: user.to_string(),
            root,
            changes,
        };
        Ok(Some((recount, task)))
    }

    /// A recount's walk came back. When nothing changed the count meanwhile,
    /// the walk is the count; otherwise (a `put`, `rm` or `mkdir` of the user
    /// landed while it walked) it may have seen half of that, so it walks again:
    /// the count stays exact. A walk that failed leaves the count as it was.
    pub fn recount_done(
        &mut self,
        recount: Recount,
        walked: Result<u64, OpError>,
    ) -> Option<(Recount, Task<Done>)> {
        let usage = self.known(&recount.user)?;
        let stored = match walked {
            Ok(stored) => stored,
            Err(e) => {
                log::warn!("recounting {}'s quota: {}", recount.user, e.message);
                return None;
            }
        };
        let mut u = lock(&usage);
        if u.changes == recount.changes {
            u.stored = stored;
            return None;
        }
        let task = walk_of(&recount.root).ok()?;
        let again = Recount {
            changes: u.changes,
            ..recount
        };
        Some((again, task))
    }

    /// The user's usage record once counted (by any worker).
    fn known(&self, user: &str) -> Option<Arc<Mutex<Usage>>> {
        lock(&self.usage).get(user).cloned()
    }

    /// The user's usage record, computed by walking their root the first time
    /// (a walk that fails is an error reply, and is tried again next time).
    fn usage(
        &mut self,
        session: &mut FileSession,
        user: &str,
    ) -> Result<Arc<Mutex<Usage>>, OpError> {
        if let Some(usage) = self.known(user) {
            return Ok(usage);
        }
        let stored = self.walk(session, user)?;
        Ok(self.walked(user, stored))
    }

    /// Whether the user's use must be walked before their requests are judged
    /// (under `--quota`, the first time the user is seen).
    pub fn needs_walk(&self, user: &str) -> bool {
        self.quota.is_some() && self.known(user).is_none()
    }

    /// The first walk of the user's tree, as blocking work for the pool (a big
    /// tree takes long): the root is opened here, walked on a pool thread.
    pub fn walk_task(&self, session: &mut FileSession, user: &str) -> Result<Task<Done>, OpError> {
        walk_of(self.root(session, user)?)
    }

    /// The first walk came back: the user's use counts from now on, unless a
    /// walk of another of their connections came back first. Until then none of
    /// the user's connections changed the tree (each waited for its walk).
    pub fn walked(&mut self, user: &str, stored: u64) -> Arc<Mutex<Usage>> {
        let mut usages = lock(&self.usage);
        let usage = usages.entry(user.to_string()).or_insert_with(|| {
            Arc::new(Mutex::new(Usage {
                stored,
                ..Usage::default()
            }))
        });
        Arc::clone(usage)
    }

    /// What the user's tree counts on disk now, walked here on the loop: only
    /// when the walk at login could not start.
    fn walk(&self, session: &mut FileSession, user: &str) -> Result<u64, OpError> {
        Ok(tree_use(walk_start(self.root(session, user)?)?)?)
    }
}

/// A recount of a user's tree in progress (see [`Files::recount_start`]).
#[derive(Debug)]
pub struct Recount {
    user: String,
    /// The user's root, held to walk again if the count changed meanwhile.
    root: OwnedFd,
    /// The count's changes when the walk started.
    changes: u64,
}

/// The root opened for a walk: a descriptor of its own, since listing moves
/// the directory's read position.
fn walk_start(root: &OwnedFd) -> io::Result<OwnedFd> {
    beneath::open(root.as_fd(), ".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// A walk of the tree below `root` (not `root` itself), for the pool.
fn walk_of(root: &OwnedFd) -> Result<Task<Done>, OpError> {
    let dir = walk_start(root)?;
    Ok(Box::new(move || {
        Done::Walked(tree_use(dir).map_err(OpError::from))
    }))
}

/// What the entries below `dir` count (not `dir` itself), walked through directory
/// descriptors, each opened from its parent's by name: no path grows with the
/// depth, and no recursion either. A directory is held open only while it has
/// subdirectories left to walk, so a chain of any depth holds two descriptors.
fn tree_use(dir: OwnedFd) -> io::Result<u64> {
    let mut total: u64 = 0;
    let mut pending: Vec<(OwnedFd, Vec<Vec<u8>>)> = Vec::new();
    let mut next = Some(dir);
    loop {
        if let Some(dir) = next.take() {
            let mut subdirs = Vec::new();
            for entry in beneath::list(dir.as_fd())? {
                total = total.saturating_add(counted(&entry.stat));
                if beneath::is_dir(&entry.stat) {
                    subdirs.push(entry.name);
                }
            }
            if !subdirs.is_empty() {
                pending.push((dir, subdirs));
            }
        }
        let Some((parent, names)) = pending.last_mut() else {
            return Ok(total);
        };
        let Some(name) = names.pop() else {
            pending.pop();
            continue;
        };
        let child = beneath::open_subdir(parent.as_fd(), &name);
        if names.is_empty() {
            pending.pop();
        }
        match child {
            Ok(fd) => next = Some(fd),
            // Gone or replaced since it was listed (an exec at work): it counted as listed.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_of(kind: libc::mode_t, size: i64) -> libc::stat {
        // SAFETY: stat is plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        st.st_mode = kind | 0o600;
        st.st_size = size;
        st
    }

    #[test]
    fn files_count_whole_blocks_at_least_one() {
        assert_eq!(file_blocks(0), 4096);
        assert_eq!(file_blocks(1), 4096);
        assert_eq!(file_blocks(4096), 4096);
        assert_eq!(file_blocks(4097), 8192);
        assert_eq!(file_blocks(3 * 4096), 3 * 4096);
        assert_eq!(file_blocks(u64::MAX - 4095), u64::MAX - 4095);
        // A client's absurd size saturates instead of wrapping to a small number.
        assert_eq!(file_blocks(u64::MAX), u64::MAX);
    }

    #[test]
    fn entries_count_by_kind() {
        assert_eq!(counted(&stat_of(libc::S_IFREG, 0)), 4096);
        assert_eq!(counted(&stat_of(libc::S_IFREG, 10_000)), 3 * 4096);
        assert_eq!(counted(&stat_of(libc::S_IFDIR, 123_456)), 4096);
        assert_eq!(counted(&stat_of(libc::S_IFLNK, 20)), 0);
        assert_eq!(counted(&stat_of(libc::S_IFIFO, 0)), 0);
        // A negative size the kernel never reports counts as empty.
        assert_eq!(counted(&stat_of(libc::S_IFREG, -1)), 4096);
    }

    #[test]
    fn judging_counts_others_reservations_not_its_own() {
        let u = Usage {
            stored: 2 * BLOCK,
            reserved: 3 * BLOCK,
            ..Usage::default()
        };
        // 2 stored + 3 held + 1 = 6 blocks.
        assert!(u.judge(6 * BLOCK, 0, BLOCK, 0).is_ok());
        assert_eq!(u.judge(6 * BLOCK - 1, 0, BLOCK, 0).unwrap_err().status, 413);
        // Its own 2 held blocks left out, one replaced: 2 - 1 + 1 + 2 = 4.
        assert!(u.judge(4 * BLOCK, BLOCK, 2 * BLOCK, 2 * BLOCK).is_ok());
        assert!(u.judge(4 * BLOCK - 1, BLOCK, 2 * BLOCK, 2 * BLOCK).is_err());
        // Nothing wraps.
        assert!(u.judge(u64::MAX, u64::MAX, 0, u64::MAX).is_ok());
        assert!(u.judge(u64::MAX - 1, 0, u64::MAX, 0).is_err());
    }

    #[test]
    fn changes_never_wrap() {
        let mut u = Usage::default();
        u.change(BLOCK, 0);
        assert_eq!(u.stored, 0);
        u.change(0, u64::MAX);
        u.change(0, BLOCK);
        assert_eq!(u.stored, u64::MAX);
    }

    #[test]
    fn recount_takes_the_disk_and_keeps_reservations() {
        let data = tempfile::tempdir().unwrap();
        let mut files =
            Files::open(data.path(), Some(10 * BLOCK), true, Default::default()).unwrap();
        let mut session = FileSession::default();
        assert_eq!(
            files.quota_left(&mut session, "u").unwrap(),
            Some(10 * BLOCK)
        );
        let held = files.reserve(&mut session, "u", 0, 1).unwrap();
        assert_eq!(
            files.quota_left(&mut session, "u").unwrap(),
            Some(9 * BLOCK)
        );
        // Written behind the requests' back (as an exec would): counted on recount.
        let root = data.path().join("files/u");
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), [0u8; 5000]).unwrap();
        let (recount, task) = files.recount_start(&mut session, "u").unwrap().unwrap();
        let Done::Walked(walked) = task() else {
            panic!("a walk")
        };
        assert!(
            files.recount_done(recount, walked).is_none(),
            "nothing changed meanwhile"
        );
        assert_eq!(
            files.quota_left(&mut session, "u").unwrap(),
            Some(6 * BLOCK)
        );
        drop(held);
        assert_eq!(
            files.quota_left(&mut session, "u").unwrap(),
            Some(7 * BLOCK)
        );
        let mut unlimited = Files::open(data.path(), None, true, Default::default()).unwrap();
        assert_eq!(unlimited.quota_left(&mut session, "u").unwrap(), None);
    }

    #[test]
    fn the_walk_counts_files_and_directories_not_links_or_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("a/b/c")).unwrap();
        std::fs::create_dir(p.join("d")).unwrap();
        std::fs::write(p.join("empty"), b"").unwrap();
        std::fs::write(p.join("a/b/two"), [1u8; 4097]).unwrap();
        std::fs::write(p.join("d/one"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", p.join("a/link")).unwrap();
        let fd = beneath::open_dir(p).unwrap();
        // Dirs a, a/b, a/b/c, d; files empty (1), two (2), one (1).
        assert_eq!(tree_use(fd).unwrap(), (4 + 1 + 2 + 1) * BLOCK);
    }
}
