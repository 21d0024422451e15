//! `put` of contract section 5: the body streamed to a temp file on the same file
//! system, and renamed over the path only when it is complete, verified and flushed.

use super::quota::{Reservation, counted, stored};
use super::transfer::hash_range;
use super::{Done, FileSession, Files, beneath, not_symlink};
use crate::pool::Task;
use crate::proto::Header;
use crate::proto::header::{opt_bool, opt_str};
use crate::service::ops::OpError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// An upload starts writeback every this many bytes (see `beneath::start_writeback`).
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;
/// An upload hands the pool the hashing of what it wrote every this many bytes
/// (small enough that the pool reads it back while it is still in the CPU's cache).
const HASH_STEP: u64 = 1024 * 1024;
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
            hashing: Arc::new(Hashing {
                file,
                digest: Mutex::new((Sha256::new(), 0)),
                queued: AtomicBool::new(false),
                dropped: AtomicBool::new(false),
            }),
            tmp: self.tmp.dir.clone(),
            tmp_name,
            dir,
            name: name.to_string(),
            size,
            written: 0,
            want_sha,
            overwrite,
            reservation,
            failed: None,
            writeback_at: 0,
            hash_asked: 0,
            hash_refused_at: 0,
            stored: false,
        })
    }
}

/// A `put` in progress: its body goes to a temp file; only a complete, verified,
/// flushed body is renamed over the destination. Dropped unfinished (disconnect,
/// error, shutdown), it removes the temp file.
///
/// The body is hashed on the pool, not on the loop: the loop writes each piece to
/// the file, and every `HASH_STEP` bytes a pool task reads what was written back
/// (from the page cache) into the hash, so hashing overlaps receiving (on
/// another core when there is one). The last bytes are hashed by the flush task.
#[derive(Debug)]
pub struct Upload {
    hashing: Arc<Hashing>,
    tmp: Rc<OwnedFd>,
    tmp_name: String,
    /// The destination's directory, held open: the rename lands there even if
    /// the directory is renamed meanwhile.
    dir: OwnedFd,
    name: String,
    size: u64,
    written: u64,
    /// What the last hash task was given (hashed up to here, or to be).
    hash_asked: u64,
    /// `hash_asked` before the last task, restored if the pool refuses it.
    hash_refused_at: u64,
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
    /// Returns the hashing of what is written so far, as work for the pool,
    /// every `HASH_STEP` bytes when no such task is queued and `may_hash` (the
    /// server caps steps in flight; see [`Upload::hash_refused`]). Not for the
    /// last piece: the flush task hashes the rest.
    pub fn write(&mut self, chunk: &[u8], may_hash: bool) -> Option<Task<Done>> {
        if self.failed.is_some() {
            return None;
        }
        if let Err(e) = (&self.hashing.file).write_all(chunk) {
            self.failed = Some(e.into());
            return None;
        }
        self.written += chunk.len() as u64;
        if self.written - self.writeback_at >= WRITEBACK_STEP {
            beneath::start_writeback(
                self.hashing.file.as_fd(),
                self.writeback_at,
                self.written - self.writeback_at,
            );
            self.writeback_at = self.written;
        }
        // One hash task at a time: while one runs, the writes go on and the next
        // task takes all they added.
        if !may_hash
            || self.written - self.hash_asked < HASH_STEP
            || self.written >= self.size
            || self.hashing.queued.swap(true, Ordering::AcqRel)
        {
            return None;
        }
        self.hash_refused_at = self.hash_asked;
        self.hash_asked = self.written;
        let (hashing, upto) = (Arc::clone(&self.hashing), self.written);
        Some(Box::new(move || {
            // An error is met again, and answered, by the flush's hashing (which
            // goes on from the last byte the hash took).
            let _ = hashing.hash_to(upto);
            hashing.queued.store(false, Ordering::Release);
            Done::Hashing
        }))
    }

    /// The pool's queue was full: the task from [`Upload::write`] did not run;
    /// the next piece asks again.
    pub fn hash_refused(&mut self) {
        self.hash_asked = self.hash_refused_at;
        self.hashing.queued.store(false, Ordering::Release);
    }

    /// The whole body arrived: hand back its last hashing, its verification and
    /// its flush (`fsync`, which can take long) as blocking work for the pool;
    /// the task gives the digest. [`Upload::commit`] follows.
    pub fn verify(&mut self) -> Result<Task<Done>, OpError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.written != self.size {
            return Err(OpError::bad("body shorter than size"));
        }
        let (hashing, written, want_sha) = (Arc::clone(&self.hashing), self.written, self.want_sha);
        Ok(Box::new(move || {
            Done::Flushed(hashing.finish(written, want_sha).and_then(|digest| {
                hashing.file.sync_all()?;
                Ok(digest)
            }))
        }))
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
        let mut u = self.reservation.as_ref().map(Reservation::hold);
        let replaced = match (&self.reservation, &u) {
            (Some(reservation), Some(u)) => {
                let replaced = self.replaced_now()?;
                reservation.judge(u, replaced, self.written)?;
                replaced
            }
            _ => 0,
        };
        beneath::rename(
            self.tmp.as_fd(),
            &self.tmp_name,
            self.dir.as_fd(),
            &self.name,
            !self.overwrite,
        )?;
        self.stored = true;
        if let Some(u) = &mut u {
            stored(u, replaced, self.written);
        }
        drop(u);
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
        // A hash task still running stops at its next read.
        self.hashing.dropped.store(true, Ordering::Release);
        if !self.stored {
            let _ = beneath::remove(self.tmp.as_fd(), &self.tmp_name, false);
        }
    }
}

/// An upload's temp file and the hash of its first bytes, shared with the pool's
/// hash tasks (one at a time, plus the flush's last one: the lock orders them).
#[derive(Debug)]
struct Hashing {
    file: File,
    /// The hash so far, and how many bytes of the file it has taken.
    digest: Mutex<(Sha256, u64)>,
    /// A hash task is queued or running.
    queued: AtomicBool,
    /// The upload is gone: a running task stops.
    dropped: AtomicBool,
}

impl Hashing {
    /// Takes the file's bytes up to `upto` into the hash (those not taken yet).
    /// Runs on a pool thread.
    fn hash_to(&self, upto: u64) -> Result<(), OpError> {
        let mut digest = self
            .digest
            .lock()
            .map_err(|_| OpError::new(500, "hashing failed"))?;
        let (hasher, hashed) = &mut *digest;
        hash_range(&self.file, hasher, hashed, upto, &self.dropped)?;
        if *hashed < upto {
            return Err(OpError::bad("body shorter than size"));
        }
        Ok(())
    }

    /// The last bytes into the hash, and the digest, checked against the one
    /// the request named. Runs on a pool thread.
    fn finish(&self, written: u64, want: Option<[u8; 32]>) -> Result<[u8; 32], OpError> {
        self.hash_to(written)?;
        let mut digest = self
            .digest
            .lock()
            .map_err(|_| OpError::new(500, "hashing failed"))?;
        let digest: [u8; 32] = std::mem::take(&mut digest.0).finalize().into();
        match want {
            Some(want) if want != digest => Err(OpError::bad("sha256 does not match the body")),
            _ => Ok(digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::files::FileSession;

    fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s >> 33
    }

    /// Hash steps run inline, late on another thread, after the flush, or not
    /// at all (a full queue): the digest is the body's, whatever the order.
    #[test]
    fn steps_in_any_order_give_the_whole_digest() {
        for seed in 0..40u64 {
            let data_dir = tempfile::tempdir().unwrap();
            let mut files = Files::open(data_dir.path(), None, true, Default::default()).unwrap();
            let mut session = FileSession::default();
            let _ = files.root_dir(&mut session, "u");
            let mut s = seed + 1;
            let size = (lcg(&mut s) % (5 << 20)) as usize;
            let data: Vec<u8> = (0..size)
                .map(|i| ((i as u64).wrapping_mul(2654435761) >> 24) as u8 ^ seed as u8)
                .collect();
            let json = format!("{{\"op\":\"put\",\"path\":\"/f{seed}\",\"size\":{size}}}");
            let header = Header::parse_json(json.as_bytes()).unwrap();
            let mut upload = files.start_put(&mut session, "u", &header).unwrap();
            let (mut late, mut threads) = (Vec::new(), Vec::new());
            let mut pos = 0;
            while pos < size {
                let n = ((lcg(&mut s) % 70_000) as usize + 1).min(size - pos);
                if let Some(task) = upload.write(&data[pos..pos + n], true) {
                    match lcg(&mut s) % 4 {
                        0 => upload.hash_refused(),
                        1 => threads.push(std::thread::spawn(move || {
                            std::thread::sleep(std::time::Duration::from_micros(s % 3000));
                            task();
                        })),
                        2 => late.push(task),
                        _ => drop(task()),
                    }
                }
                pos += n;
            }
            let flush = upload.verify().unwrap();
            let flushed = std::thread::spawn(flush);
            threads.extend(
                late.into_iter()
                    .map(|task| std::thread::spawn(move || drop(task()))),
            );
            let Done::Flushed(Ok(digest)) = flushed.join().unwrap() else {
                panic!("seed {seed}: the flush failed")
            };
            threads.into_iter().for_each(|t| t.join().unwrap());
            let want: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(digest, want, "seed {seed}, size {size}");
        }
    }
}
