//! The file service of contract section 5: per-user roots; pwd, cd, ls, mkdir, rm;
//! `put` streamed to a temp file and renamed into place; `get` sent from the file
//! with sendfile; `sum` hashed in bounded steps between other connections' work.

pub mod beneath;
pub mod path;

use super::ops::OpError;
use crate::outbuf::{FileRange, OutBuf};
use crate::proto::header::{opt_bool, opt_str, opt_u64, req_str};
use crate::proto::{HeadWriter, Header};
use path::{Resolved, resolve};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Bytes `sum` hashes per loop turn: about half a millisecond of SHA-256, so a
/// 1 GiB sum never holds the loop for long.
const SUM_STEP: usize = 1024 * 1024;
/// Read size within a `sum` step.
const SUM_READ: usize = 256 * 1024;
/// An upload starts writeback every this many bytes (see `beneath::start_writeback`).
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;
/// Prefix of upload temp files in `<data-dir>/tmp`; leftovers are removed at start.
const TMP_PREFIX: &str = "put-";

fn op_error(status: u16, message: impl Into<String>) -> OpError {
    OpError {
        status,
        message: message.into(),
    }
}

/// The contract's status for a failed file system call.
fn io_error(e: &io::Error) -> OpError {
    let (status, message) = match e.raw_os_error().unwrap_or(0) {
        libc::ENOENT => (404, "no such file or directory"),
        // ELOOP: RESOLVE_NO_SYMLINKS met a symlink; EXDEV: RESOLVE_BENEATH met an escape.
        libc::ELOOP | libc::EXDEV => (403, "a path component is a symbolic link"),
        libc::ENOTDIR => (409, "not a directory"),
        libc::EISDIR => (409, "is a directory"),
        libc::EEXIST => (409, "already exists"),
        libc::ENOTEMPTY => (409, "directory not empty"),
        libc::EACCES | libc::EPERM => (403, "permission denied"),
        libc::ENAMETOOLONG => (400, "name too long"),
        libc::ENOSPC | libc::EDQUOT => (500, "the server's disk is full"),
        _ => {
            log::warn!("file service: {e}");
            return op_error(500, format!("server file error: {e}"));
        }
    };
    op_error(status, message)
}

fn bad(e: impl ToString) -> OpError {
    op_error(400, e.to_string())
}

/// Bytes stored by one user, for `--quota`.
#[derive(Debug, Default)]
struct Usage {
    stored: u64,
    /// Declared sizes of uploads in progress (judged up front, released when they end).
    reserved: u64,
}

/// What the file service keeps per connection.
#[derive(Debug)]
pub struct FileSession {
    cwd: Resolved,
    /// The user's root directory, opened on first use.
    root: Option<OwnedFd>,
}

impl Default for FileSession {
    fn default() -> FileSession {
        FileSession {
            cwd: Resolved::root(),
            root: None,
        }
    }
}

pub struct Files {
    /// `<data-dir>/files`: one root per user below it.
    files_dir: PathBuf,
    /// `<data-dir>/tmp`: uploads in progress (same file system, so rename is atomic).
    tmp: Rc<OwnedFd>,
    quota: Option<u64>,
    usage: HashMap<String, Rc<RefCell<Usage>>>,
    next_tmp: u64,
}

/// One `ls` entry, serialized in the reply body.
#[derive(Serialize)]
struct ListEntry<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime: i64,
}

impl Files {
    /// Prepares `<data-dir>/files` and `<data-dir>/tmp`, removing uploads a previous
    /// run left behind (a crash mid-put: the destination never saw them).
    pub fn open(data_dir: &Path, quota: Option<u64>) -> io::Result<Files> {
        let files_dir = data_dir.join("files");
        let tmp_dir = data_dir.join("tmp");
        std::fs::create_dir_all(&files_dir)?;
        std::fs::create_dir_all(&tmp_dir)?;
        let mut stale = 0;
        for entry in std::fs::read_dir(&tmp_dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                std::fs::remove_file(entry.path())?;
                stale += 1;
            }
        }
        if stale > 0 {
            log::info!(
                "removed {stale} unfinished upload(s) from {}",
                tmp_dir.display()
            );
        }
        Ok(Files {
            files_dir,
            tmp: Rc::new(beneath::open_dir(&tmp_dir)?),
            quota,
            usage: HashMap::new(),
            next_tmp: 0,
        })
    }

    /// The user's root directory descriptor, created and opened on first use.
    fn root<'s>(&self, session: &'s mut FileSession, user: &str) -> Result<&'s OwnedFd, OpError> {
        if session.root.is_none() {
            // Names are [A-Za-z0-9_.-]{1,64}; `.` and `..` would name a directory outside.
            if user == "." || user == ".." {
                return Err(op_error(403, "this user has no file root"));
            }
            let dir = self.files_dir.join(user);
            std::fs::create_dir_all(&dir).map_err(|e| io_error(&e))?;
            session.root = Some(beneath::open_dir(&dir).map_err(|e| io_error(&e))?);
        }
        session
            .root
            .as_ref()
            .ok_or_else(|| op_error(500, "no file root"))
    }

    /// The connection's current directory, opened beneath the root (for exec).
    pub fn cwd_dir(&self, session: &mut FileSession, user: &str) -> Result<OwnedFd, OpError> {
        let rel = session.cwd.relative();
        let root = self.root(session, user)?;
        beneath::open(root.as_fd(), &rel, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| io_error(&e))
    }

    fn path(session: &FileSession, header: &Header) -> Result<Resolved, OpError> {
        let text = req_str(header.path, "path").map_err(bad)?;
        resolve(&session.cwd, &text).map_err(|e| op_error(e.status, e.message))
    }

    pub fn pwd(&self, session: &FileSession, out: &mut OutBuf, id: Option<u64>) {
        let path = session.cwd.display();
        out.append(|buf| {
            let mut w = HeadWriter::reply(buf, 200, id);
            w.field("path", path.as_str());
            w.finish(0);
        });
    }

    pub fn cd(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
        out: &mut OutBuf,
        id: Option<u64>,
    ) -> Result<(), OpError> {
        let target = Self::path(session, header)?;
        let root = self.root(session, user)?;
        beneath::open(
            root.as_fd(),
            &target.relative(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| io_error(&e))?;
        let path = target.display();
        session.cwd = target;
        out.append(|buf| {
            let mut w = HeadWriter::reply(buf, 200, id);
            w.field("path", path.as_str());
            w.finish(0);
        });
        Ok(())
    }

    pub fn ls(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
        out: &mut OutBuf,
        id: Option<u64>,
    ) -> Result<(), OpError> {
        let target = match opt_str(header.path, "path").map_err(bad)? {
            None => session.cwd.clone(),
            Some(text) => {
                resolve(&session.cwd, &text).map_err(|e| op_error(e.status, e.message))?
            }
        };
        let root = self.root(session, user)?;
        let dir = beneath::open(
            root.as_fd(),
            &target.relative(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| io_error(&e))?;
        let mut entries = beneath::list(dir.as_fd()).map_err(|e| io_error(&e))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        // Only files and directories with UTF-8 names are listed: those are what a
        // path can name; symlinks and special files are not served at all.
        let listed: Vec<ListEntry> = entries
            .iter()
            .filter_map(|e| {
                let name = std::str::from_utf8(&e.name).ok()?;
                let kind = if beneath::is_dir(&e.stat) {
                    "dir"
                } else if beneath::is_file(&e.stat) {
                    "file"
                } else {
                    return None;
                };
                Some(ListEntry {
                    name,
                    kind,
                    size: u64::try_from(e.stat.st_size).unwrap_or(0),
                    mtime: e.stat.st_mtime,
                })
            })
            .collect();
        let body = serde_json::to_vec(&listed).map_err(|e| op_error(500, e.to_string()))?;
        out.append(|buf| HeadWriter::reply(buf, 200, id).finish(body.len() as u64));
        out.push_body(body);
        Ok(())
    }

    pub fn mkdir(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
        out: &mut OutBuf,
        id: Option<u64>,
    ) -> Result<(), OpError> {
        let target = Self::path(session, header)?;
        let parents = opt_bool(header.parents, "parents", false).map_err(bad)?;
        let root = self.root(session, user)?;
        if parents {
            // Like `mkdir -p`: each missing component is made; existing directories are fine.
            let mut dir = beneath::open(root.as_fd(), ".", libc::O_PATH | libc::O_DIRECTORY, 0)
                .map_err(|e| io_error(&e))?;
            for name in target.components() {
                match beneath::mkdir(dir.as_fd(), name) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(io_error(&e)),
                }
                dir = beneath::open(dir.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| io_error(&e))?;
            }
        } else {
            let Some((parent, name)) = target.split_last() else {
                return Err(op_error(409, "already exists"));
            };
            let dir = beneath::open(
                root.as_fd(),
                &parent.relative(),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .map_err(|e| io_error(&e))?;
            beneath::mkdir(dir.as_fd(), name).map_err(|e| io_error(&e))?;
        }
        let path = target.display();
        out.append(|buf| {
            let mut w = HeadWriter::reply(buf, 200, id);
            w.field("path", path.as_str());
            w.finish(0);
        });
        Ok(())
    }

    pub fn rm(
        &mut self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
        out: &mut OutBuf,
        id: Option<u64>,
    ) -> Result<(), OpError> {
        let target = Self::path(session, header)?;
        let Some((parent, name)) = target.split_last() else {
            return Err(op_error(403, "the root cannot be removed"));
        };
        let root = self.root(session, user)?;
        let dir = beneath::open(
            root.as_fd(),
            &parent.relative(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| io_error(&e))?;
        let st = beneath::stat_entry(dir.as_fd(), name).map_err(|e| io_error(&e))?;
        if beneath::is_symlink(&st) {
            return Err(op_error(403, "a path component is a symbolic link"));
        }
        let is_dir = beneath::is_dir(&st);
        beneath::remove(dir.as_fd(), name, is_dir).map_err(|e| io_error(&e))?;
        if !is_dir && let Some(usage) = self.usage.get(user) {
            let mut usage = usage.borrow_mut();
            usage.stored = usage
                .stored
                .saturating_sub(u64::try_from(st.st_size).unwrap_or(0));
        }
        let path = target.display();
        out.append(|buf| {
            let mut w = HeadWriter::reply(buf, 200, id);
            w.field("path", path.as_str());
            w.finish(0);
        });
        Ok(())
    }

    /// Opens a regular file for `get` or `sum`.
    fn open_file(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
    ) -> Result<(File, libc::stat), OpError> {
        let target = Self::path(session, header)?;
        let root = self.root(session, user)?;
        // O_NONBLOCK: opening a FIFO someone planted must not block the loop.
        let fd = beneath::open(
            root.as_fd(),
            &target.relative(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )
        .map_err(|e| io_error(&e))?;
        let st = beneath::fstat(fd.as_fd()).map_err(|e| io_error(&e))?;
        if beneath::is_dir(&st) {
            return Err(op_error(409, "is a directory"));
        }
        if !beneath::is_file(&st) {
            return Err(op_error(403, "not a regular file"));
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
        let offset = opt_u64(header.offset, "offset").map_err(bad)?.unwrap_or(0);
        let (file, st) = self.open_file(session, user, header)?;
        let total = u64::try_from(st.st_size).unwrap_or(0);
        if offset > total {
            return Err(bad(format!("offset {offset} is beyond the end ({total})")));
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
            total: u64::try_from(st.st_size).unwrap_or(0),
            pos: 0,
            hasher: Sha256::new(),
            buf: Vec::new(),
        })
    }

    /// The user's usage record (computed by walking their root the first time).
    fn usage(&mut self, user: &str) -> Rc<RefCell<Usage>> {
        let files_dir = &self.files_dir;
        self.usage
            .entry(user.to_string())
            .or_insert_with(|| {
                let stored = tree_size(&files_dir.join(user));
                Rc::new(RefCell::new(Usage {
                    stored,
                    reserved: 0,
                }))
            })
            .clone()
    }

    /// `put`, at its header: checks everything that can be judged up front and
    /// opens the temp file the body streams into.
    pub fn start_put(
        &mut self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
    ) -> Result<Upload, OpError> {
        let target = Self::path(session, header)?;
        let overwrite = opt_bool(header.overwrite, "overwrite", false).map_err(bad)?;
        let want_sha = match opt_str(header.sha256, "sha256").map_err(bad)? {
            None => None,
            Some(hex) => {
                Some(crate::auth::hex32(&hex).ok_or_else(|| bad("sha256 must be 64 hex digits"))?)
            }
        };
        let Some((parent, name)) = target.split_last() else {
            return Err(op_error(409, "is a directory"));
        };
        let root = self.root(session, user)?;
        // O_RDONLY, not O_PATH: the directory is fsynced after the rename.
        let dir = beneath::open(
            root.as_fd(),
            &parent.relative(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| io_error(&e))?;
        let replaced = match beneath::stat_entry(dir.as_fd(), name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => 0,
            Err(e) => return Err(io_error(&e)),
            Ok(st) if beneath::is_symlink(&st) => {
                return Err(op_error(403, "a path component is a symbolic link"));
            }
            Ok(st) if beneath::is_dir(&st) => return Err(op_error(409, "is a directory")),
            Ok(_) if !overwrite => return Err(op_error(409, "already exists (overwrite not set)")),
            Ok(st) => u64::try_from(st.st_size).unwrap_or(0),
        };
        let size = header.size;
        let usage = self.quota.map(|_| self.usage(user));
        if let (Some(quota), Some(usage)) = (self.quota, &usage) {
            let mut u = usage.borrow_mut();
            let after = (u.stored + u.reserved)
                .saturating_sub(replaced)
                .saturating_add(size);
            if after > quota {
                return Err(op_error(
                    413,
                    format!("over quota: {after} bytes would exceed {quota}"),
                ));
            }
            u.reserved += size;
        }
        self.next_tmp += 1;
        let tmp_name = format!("{TMP_PREFIX}{}-{}", std::process::id(), self.next_tmp);
        let file = beneath::open(
            self.tmp.as_fd(),
            &tmp_name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o644,
        );
        let file = match file {
            Ok(fd) => File::from(fd),
            Err(e) => {
                if let Some(usage) = &usage {
                    usage.borrow_mut().reserved -= size;
                }
                return Err(io_error(&e));
            }
        };
        Ok(Upload {
            file,
            tmp: self.tmp.clone(),
            tmp_name,
            dir,
            name: name.to_string(),
            size,
            written: 0,
            hasher: Sha256::new(),
            want_sha,
            overwrite,
            replaced,
            usage,
            failed: None,
            writeback_at: 0,
            stored: false,
        })
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
    replaced: u64,
    usage: Option<Rc<RefCell<Usage>>>,
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
            self.failed = Some(io_error(&e));
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

    /// The whole body arrived: verify, flush, rename. Returns (total, sha256).
    pub fn finish(mut self) -> Result<(u64, [u8; 32]), OpError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.written != self.size {
            return Err(op_error(400, "body shorter than size"));
        }
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if let Some(want) = self.want_sha
            && want != digest
        {
            return Err(op_error(400, "sha256 does not match the body"));
        }
        // Data on disk before the name points at it; then the directory entry.
        self.file.sync_all().map_err(|e| io_error(&e))?;
        beneath::rename(
            self.tmp.as_fd(),
            &self.tmp_name,
            self.dir.as_fd(),
            &self.name,
            !self.overwrite,
        )
        .map_err(|e| io_error(&e))?;
        self.stored = true;
        if let Ok(dir) = self.dir.try_clone() {
            let _ = File::from(dir).sync_all();
        }
        if let Some(usage) = &self.usage {
            let mut u = usage.borrow_mut();
            u.stored = u.stored.saturating_sub(self.replaced) + self.written;
        }
        Ok((self.written, digest))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.stored {
            let _ = beneath::remove(self.tmp.as_fd(), &self.tmp_name, false);
        }
        if let Some(usage) = &self.usage {
            let mut u = usage.borrow_mut();
            u.reserved = u.reserved.saturating_sub(self.size);
        }
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
            let n = self
                .file
                .read_at(&mut self.buf, self.pos)
                .map_err(|e| io_error(&e))?;
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
