//! `get` and `sum` of contract section 5: a regular file sent with sendfile, or
//! hashed on a pool thread while the loop serves everyone else.

use super::{Done, FileSession, Files, beneath};
use crate::outbuf::{FileRange, OutBuf};
use crate::pool::Task;
use crate::proto::header::opt_u64;
use crate::proto::{HeadWriter, Header};
use crate::service::ops::OpError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Read size of a `sum`.
const SUM_READ: usize = 256 * 1024;

impl Files {
    /// Opens a regular file for `get` or `sum`.
    fn open_file(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
    ) -> Result<(File, libc::stat), OpError> {
        let target = Self::path(session, header)?;
        // O_NONBLOCK: opening a FIFO someone planted must not block the loop.
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let fd = self.open_at(session, user, &target, flags)?;
        let st = beneath::fstat(fd.as_fd())?;
        if beneath::is_dir(&st) {
            return Err(OpError::new(409, "is a directory"));
        }
        if !beneath::is_file(&st) {
            return Err(OpError::new(403, "not a regular file"));
        }
        Ok((File::from(fd), st))
    }

    /// `get`: the reply header, then the file range queued for sendfile.
    pub fn get(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
        out: &mut OutBuf,
        id: Option<u64>,
    ) -> Result<(), OpError> {
        let offset = opt_u64(header.offset, "offset")?.unwrap_or(0);
        let (file, st) = self.open_file(session, user, header)?;
        let total = beneath::size(&st);
        if offset > total {
            return Err(OpError::bad(format!(
                "offset {offset} is beyond the end ({total})"
            )));
        }
        let len = total - offset;
        out.append(|buf| {
            let mut w = HeadWriter::reply(buf, 200, id);
            w.field("total", &total).field("mtime", &st.st_mtime);
            w.finish(len);
        });
        out.push_file(FileRange { file, offset, len });
        Ok(())
    }

    /// `sum`: opens the file; the hashing is blocking work for the pool.
    pub fn sum(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
    ) -> Result<Task<Done>, OpError> {
        let (file, _) = self.open_file(session, user, header)?;
        Ok(Box::new(move || Done::Hashed(hash(&file))))
    }
}

/// SHA-256 of a whole file (to its end now: it may have changed size since the
/// open), with its length. Runs on a pool thread.
fn hash(file: &File) -> Result<(u64, [u8; 32]), OpError> {
    let mut hasher = Sha256::new();
    let mut total = 0;
    hash_range(
        file,
        &mut hasher,
        &mut total,
        u64::MAX,
        &AtomicBool::new(false),
    )?;
    Ok((total, hasher.finalize().into()))
}

thread_local! {
    /// A pool thread's read buffer for hashing, made once per thread.
    static HASH_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Feeds the file's bytes from `*pos` to `to` (or its end, if nearer) into
/// `hasher`, moving `*pos` past each piece taken, so that after an error it
/// still says exactly what the hash holds. Stops early when `stop` is set.
/// Runs on a pool thread (`sum`, and an upload's hashing).
pub(super) fn hash_range(
    file: &File,
    hasher: &mut Sha256,
    pos: &mut u64,
    to: u64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    HASH_BUF.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(SUM_READ, 0);
        }
        while *pos < to && !stop.load(Ordering::Acquire) {
            let want = usize::try_from(to - *pos).map_or(SUM_READ, |left| left.min(SUM_READ));
            let n = match file.read_at(buf.get_mut(..want).unwrap_or_default(), *pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(buf.get(..n).unwrap_or_default());
            *pos += n as u64;
        }
        Ok(())
    })
}

/// Writes the `{total, sha256}` reply of put and sum.
pub fn write_digest(out: &mut OutBuf, id: Option<u64>, total: u64, digest: &[u8; 32]) {
    let mut hex = [0u8; 64];
    let _ = hex::encode_to_slice(digest, &mut hex);
    out.append(|buf| {
        let mut w = HeadWriter::reply(buf, 200, id);
        w.field("total", &total)
            .field("sha256", std::str::from_utf8(&hex).unwrap_or_default());
        w.finish(0);
    });
}
