//! `--quota` of contract section 5: the bytes each user stores, and what uploads in
//! progress hold against it from their header on (judged up front, 413).

use super::Files;
use crate::service::ops::OpError;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

/// Bytes stored by one user.
#[derive(Debug, Default)]
pub(super) struct Usage {
    stored: u64,
    /// Declared sizes of uploads in progress (judged up front, released when they end).
    reserved: u64,
}

/// The declared size of one upload in progress, held against its user's quota
/// until the upload ends (dropped: released, stored or not).
#[derive(Debug)]
pub(super) struct Reservation {
    usage: Rc<RefCell<Usage>>,
    size: u64,
}

impl Reservation {
    /// The upload was stored: `written` bytes count, less the `replaced` file's.
    pub(super) fn stored(&self, replaced: u64, written: u64) {
        let mut u = self.usage.borrow_mut();
        u.stored = u.stored.saturating_sub(replaced) + written;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut u = self.usage.borrow_mut();
        u.reserved = u.reserved.saturating_sub(self.size);
    }
}

impl Files {
    /// Reserves `size` bytes for a `put` that replaces a file of `replaced` bytes,
    /// or refuses it (413). `None` without `--quota`: nothing is counted.
    pub(super) fn reserve(
        &mut self,
        user: &str,
        replaced: u64,
        size: u64,
    ) -> Result<Option<Reservation>, OpError> {
        let Some(quota) = self.quota else {
            return Ok(None);
        };
        let usage = self.usage(user);
        {
            let mut u = usage.borrow_mut();
            let after = (u.stored + u.reserved)
                .saturating_sub(replaced)
                .saturating_add(size);
            if after > quota {
                return Err(OpError::new(
                    413,
                    format!("over quota: {after} bytes would exceed {quota}"),
                ));
            }
            u.reserved += size;
        }
        Ok(Some(Reservation { usage, size }))
    }

    /// A file of `size` bytes was removed (counted only once the quota counts the user).
    pub(super) fn removed(&self, user: &str, size: u64) {
        if let Some(usage) = self.usage.get(user) {
            let mut u = usage.borrow_mut();
            u.stored = u.stored.saturating_sub(size);
        }
    }

    /// Bytes the user may still store (`None` without `--quota`): an exec's
    /// file size limit.
    pub fn quota_left(&mut self, user: &str) -> Option<u64> {
        let quota = self.quota?;
        let usage = self.usage(user);
        let u = usage.borrow();
        Some(quota.saturating_sub(u.stored + u.reserved))
    }

    /// An exec of the user ended: what it wrote counts from now on. The user's
    /// stored bytes are counted again from disk (if counted at all yet).
    /// TODO(issue 16): this walk runs on the loop; move it to the blocking-work
    /// pool with the first walk of a user's tree.
    pub fn exec_ended(&mut self, user: &str) {
        if self.quota.is_none() {
            return;
        }
        if let Some(usage) = self.usage.get(user) {
            usage.borrow_mut().stored = tree_size(&self.files_dir.join(user));
        }
    }

    /// The user's usage record (computed by walking their root the first time).
    fn usage(&mut self, user: &str) -> Rc<RefCell<Usage>> {
        let files_dir = &self.files_dir;
        self.usage
            .entry(user.to_string())
            .or_insert_with(|| {
                Rc::new(RefCell::new(Usage {
                    stored: tree_size(&files_dir.join(user)),
                    reserved: 0,
                }))
            })
            .clone()
    }
}

/// Bytes of regular files under `dir` (symlinks not followed).
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.path().symlink_metadata() {
            Ok(m) if m.is_dir() => tree_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}
