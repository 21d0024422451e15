//! `put` of contract section 5: the body streamed to a temp file on the same file
//! system, and renamed over the path only when it is complete, verified and flushed.

use super::quota::{Reservation, counted};
use super::{Done, FileSession, Files, beneath, not_symlink};
use crate::pool::Task;
use crate::proto::Header;
use crate::proto::header::{opt_bool, opt_str};
use crate::service::ops::OpError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

/// An upload starts writeback every this many bytes (see `beneath::start_writeback`).
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;
/// Prefix of upload temp files in `<data-dir>/tmp`; leftovers are removed at start.
const TMP_PREFIX: &str = "put-";

/// `<data-dir>/tmp`, where uploads are written before their rename.
pub(super) struct TempDir {
    dir: Rc<OwnedFd>,
    /// Numbers the temp files this process makes.
    made: u64,
}

impl TempDir {
    /// Creates the directory, removing what a previous run's unfinished uploads left.
    pub(super) fn open(path: &Path) -> io::Result<TempDir> {
        beneath::create_private_dir(path)?;
        let mut stale = 0;
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                std::fs::remove_file(entry.path())?;
                stale += 1;
            }
        }
        if stale > 0 {
            log::info!(
                "removed {stale} unfinished upload(s) from {}",
                path.display()
            );
        }
        Ok(TempDir {
            dir: Rc::new(beneath::open_dir(path)?),
            made: 0,
        })
    }

    /// A new, empty temp file (0600, private like what it becomes) and its name.
    fn create(&mut self) -> io::Result<(File, String)> {
        self.made += 1;
        let name = format!("{TMP_PREFIX}{}-{}", std::process::id(), self.made);
        let fd = beneath::open(
            self.dir.as_fd(),
            &name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        Ok((File::from(fd), name))
    }
}

impl Files {
    /// `put`, at its header: checks everything that can be judged up front and
    /// opens the temp file the body streams into.
    pub fn start_put(
        &mut self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
    ) -> Result<Upload, OpError> {
        let target = Self::path(session, header)?;
        let overwrite = opt_bool(header.overwrite, "overwrite", false)?;
        let want_sha = match opt_str(header.sha256, "sha256")? {
            None => None,
            Some(hex) => Some(
                crate::auth::hex32(&hex)
                    .ok_or_else(|| OpError::bad("sha256 must be 64 hex digits"))?,
            ),
        };
        let Some((parent, name)) = target.split_last() else {
            return Err(OpError::new(409, "is a directory"));
        };
        // O_RDONLY, not O_PATH: the directory is fsynced after the rename.
        let dir = self.open_at(session, user, &parent, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let replaced = match beneath::stat_entry(dir.as_fd(), name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => 0,
            Err(e) => return Err(e.into()),
            Ok(st) => {
                let st = not_symlink(st)?;
                if beneath::is_dir(&st) {
                    return Err(OpError::new(409, "is a directory"));
                }
                if !overwrite {
                    return Err(OpError::new(409, "already exists (overwrite not set)"));
                }
                counted(&st)
            }
        };
        let size = header.size;
        // Judged up front; judged again, from the disk as it is then, at the rename.
        let reservation = self.reserve(session, user, replaced, size)?;
        // A failure here drops the reservation, releasing it.
        let (file, tmp_name) = self.tmp.create()?;
        Ok(Upload {
            file,
            tmp: self.tmp.dir.clone(),
            tmp_name,
            dir,
            name: name.to_string(),
            size,
            written: 0,
            hasher: Sha256::new(),
            want_sha,
            overwrite,
            reservation,
            failed: None,
            writeback_at: 0,
            stored: false,
        })
    }
}

/// A `put` in progress: its body goes to a temp file; only a complete, verified,
/// flushed body is renamed over the destination. Dropped unfinished (disconnect,
/// error, shutdown), it removes the temp file.
#[derive(Debug)]
pub struct Upload {
    file: File,
    tmp: Rc<OwnedFd>,
    tmp_name: String,
    /// The destination's directory, held open: the rename lands there even if
    /// the directory is renamed meanwhile.
    dir: OwnedFd,
    name: String,
    size: u64,
    written: u64,
    hasher: Sha256,
    want_sha: Option<[u8; 32]>,
    overwrite: bool,
    /// Under `--quota`: what the upload adds held against the user's quota until it ends.
    reservation: Option<Reservation>,
    /// The first error; later body bytes are dropped and the error is the reply.
    failed: Option<OpError>,
    writeback_at: u64,
    stored: bool,
}

impl Upload {
    /// A piece of the body. Disk writes are bounded by the read chunk (64 KiB).
    pub fn write(&mut self, chunk: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.file.write_all(chunk) {
            self.failed = Some(e.into());
            return;
        }
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        if self.written - self.writeback_at >= WRITEBACK_STEP {
            beneath::start_writeback(
                self.file.as_fd(),
                self.writeback_at,
                self.written - self.writeback_at,
            );
            self.writeback_at = self.written;
        }
    }

    /// The whole body arrived: verify it, and hand back the flush (`fsync`, which
    /// can take long) as blocking work for the pool. [`Upload::commit`] follows.
    pub fn verify(&mut self) -> Result<([u8; 32], Task<Done>), OpError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.written != self.size {
            return Err(OpError::bad("body shorter than size"));
        }
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if let Some(want) = self.want_sha
            && want != digest
        {
            return Err(OpError::bad("sha256 does not match the body"));
        }
        let file = self.file.try_clone()?;
        Ok((
            digest,
            Box::new(move || Done::Synced(file.sync_all().map_err(OpError::from))),
        ))
    }

    /// The data is on disk: judge the quota, rename, count. Returns the bytes
    /// stored and the directory's flush (so the new name is on disk too) as
    /// blocking work for the pool, after which the reply goes out. Runs on the
    /// loop, in one go, so nothing comes between the judging and the rename.
    pub fn commit(mut self) -> Result<(u64, Task<Done>), OpError> {
        // The quota is judged from what the destination counts now, not at the
        // header: since then another connection may have removed or replaced it.
        // Nothing comes between this stat and the rename (one thread), so the
        // count moves exactly as the disk does.
        let replaced = match &self.reservation {
            Some(reservation) => {
                let replaced = self.replaced_now()?;
                reservation.judge(replaced, self.written)?;
                replaced
            }
            None => 0,
        };
        beneath::rename(
            self.tmp.as_fd(),
            &self.tmp_name,
            self.dir.as_fd(),
            &self.name,
            !self.overwrite,
        )?;
        self.stored = true;
        if let Some(reservation) = &self.reservation {
            reservation.stored(replaced, self.written);
        }
        // The file is stored whatever becomes of the directory's flush: a failed
        // one is not an error of this request (the data itself is synced).
        let dir = self.dir.try_clone().ok();
        let flush: Task<Done> = Box::new(move || {
            if let Some(dir) = dir {
                let _ = File::from(dir).sync_all();
            }
            Done::Synced(Ok(()))
        });
        Ok((self.written, flush))
    }

    /// What the destination counts at this moment (0 when absent), or why the
    /// rename would fail (a directory; a file that appeared without `overwrite`).
    fn replaced_now(&self) -> Result<u64, OpError> {
        match beneath::stat_entry(self.dir.as_fd(), &self.name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(0),
            Err(e) => Err(e.into()),
            Ok(st) if beneath::is_dir(&st) => Err(OpError::new(409, "is a directory")),
            Ok(_) if !self.overwrite => {
                Err(OpError::new(409, "already exists (overwrite not set)"))
            }
            Ok(st) => Ok(counted(&st)),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.stored {
            let _ = beneath::remove(self.tmp.as_fd(), &self.tmp_name, false);
        }
    }
}
