//! `get` and `sum` of contract section 5: a regular file sent with sendfile, or
//! hashed in bounded steps between other connections' work.

use super::{FileSession, Files, beneath};
use crate::outbuf::{FileRange, OutBuf};
use crate::proto::header::opt_u64;
use crate::proto::{HeadWriter, Header};
use crate::service::ops::OpError;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

/// Bytes `sum` hashes per loop turn: about half a millisecond of SHA-256, so a
/// 1 GiB sum never holds the loop for long.
const SUM_STEP: usize = 1024 * 1024;
/// Read size within a `sum` step.
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

    /// `sum`: starts a job that hashes the file in steps.
    pub fn sum(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
    ) -> Result<Sum, OpError> {
        let (file, st) = self.open_file(session, user, header)?;
        Ok(Sum {
            file,
            total: beneath::size(&st),
            pos: 0,
            hasher: Sha256::new(),
            buf: Vec::new(),
        })
    }
}

/// A `sum` in progress.
#[derive(Debug)]
pub struct Sum {
    file: File,
    total: u64,
    pos: u64,
    hasher: Sha256,
    buf: Vec<u8>,
}

impl Sum {
    /// Hashes up to `SUM_STEP` bytes. `Ok(None)`: more to do next turn;
    /// `Ok(Some((total, digest)))`: finished.
    pub fn step(&mut self) -> Result<Option<(u64, [u8; 32])>, OpError> {
        if self.buf.is_empty() {
            self.buf = vec![0; SUM_READ];
        }
        let mut done = 0;
        while done < SUM_STEP {
            let n = self.file.read_at(&mut self.buf, self.pos)?;
            if n == 0 {
                // End of file (it may have changed size since the open: hash what is there).
                self.total = self.pos;
                let digest = std::mem::take(&mut self.hasher).finalize().into();
                return Ok(Some((self.total, digest)));
            }
            self.hasher.update(self.buf.get(..n).unwrap_or_default());
            self.pos += n as u64;
            done += n;
        }
        Ok(None)
    }
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
