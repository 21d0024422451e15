//! The file service of contract section 5: per-user roots, each connection's current
//! directory, and pwd, cd, mkdir, rm; `ls`, `put`, `get`/`sum` and the quota are submodules.

pub mod beneath;
mod listing;
pub mod path;
mod quota;
mod tempdir;
mod transfer;
mod upload;

pub use listing::write_listing;
pub use quota::Recount;
pub use transfer::write_digest;
pub use upload::Upload;

/// What the file service's blocking work (run on the pool) gives back.
#[derive(Debug)]
pub enum Done {
    /// An `ls` reply body.
    Listing(Result<Vec<u8>, OpError>),
    /// A `sum`: the file's length and SHA-256.
    Hashed(Result<(u64, [u8; 32]), OpError>),
    /// A step of a `put`'s hashing (nothing to do back on the loop).
    Hashing,
    /// A `put`'s body is hashed, matches the `sha256` it named, and is on disk
    /// (fsync): its digest.
    Flushed(Result<[u8; 32], OpError>),
    /// A `put`'s directory is on disk (fsync).
    Synced(Result<(), OpError>),
    /// The first walk of a user's tree under `--quota`: what it counts.
    Walked(Result<u64, OpError>),
}

use super::ops::OpError;
use crate::outbuf::OutBuf;
use crate::proto::header::{opt_bool, req_str};
use crate::proto::{HeadWriter, Header};
use path::{Resolved, resolve};
pub use quota::Usages;
use quota::{BLOCK, counted};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempdir::TempDir;
pub use tempdir::server_id;

/// `openat2` flags for a directory only walked through or named (not read).
const DIR_PATH: libc::c_int = libc::O_PATH | libc::O_DIRECTORY;

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

/// The file service, for the whole server.
pub struct Files {
    /// `<data-dir>/files`: one root per user below it.
    files_dir: PathBuf,
    /// `<data-dir>/tmp`: uploads in progress (same file system, so rename is atomic).
    tmp: TempDir,
    quota: Option<u64>,
    /// Per user, once `--quota` needed it (every worker's).
    usage: Usages,
}

impl Files {
    /// Prepares `<data-dir>/files` and `<data-dir>/tmp` (created 0700, the data dir
    /// too when missing), removing uploads a previous run left behind (a crash
    /// mid-put: the destination never saw them).
    /// The file service over `data_dir`; `clean`: remove unfinished uploads
    /// a previous run left (see `TempDir::open`); `usage`: the users' disk use,
    /// shared with the other workers.
    pub fn open(
        data_dir: &Path,
        quota: Option<u64>,
        clean: bool,
        usage: Usages,
    ) -> io::Result<Files> {
        let files_dir = data_dir.join("files");
        beneath::create_private_dir(&files_dir)?;
        Ok(Files {
            files_dir,
            tmp: TempDir::open(&data_dir.join("tmp"), clean)?,
            quota,
            usage,
        })
    }

    /// The users' disk use, for another worker's file service.
    pub fn usages(&self) -> Usages {
        Arc::clone(&self.usage)
    }

    /// The user's root directory descriptor, created (0700) and opened on first use.
    fn root<'s>(&self, session: &'s mut FileSession, user: &str) -> Result<&'s OwnedFd, OpError> {
        let root = match session.root.take() {
            Some(root) => root,
            None => {
                // Names are [A-Za-z0-9_.-]{1,64}; `.` and `..` would name a directory outside.
                if user == "." || user == ".." {
                    return Err(OpError::new(403, "this user has no file root"));
                }
                let dir = self.files_dir.join(user);
                beneath::create_private_dir(&dir)?;
                beneath::open_dir(&dir)?
            }
        };
        Ok(session.root.insert(root))
    }

    /// Opens `at` beneath the user's root with `flags`: where every request's path
    /// meets the file system.
    fn open_at(
        &self,
        session: &mut FileSession,
        user: &str,
        at: &Resolved,
        flags: libc::c_int,
    ) -> Result<OwnedFd, OpError> {
        let root = self.root(session, user)?;
        Ok(beneath::open(root.as_fd(), &at.relative(), flags, 0)?)
    }

    /// The connection's current directory, opened beneath the root (for exec).
    pub fn cwd_dir(&self, session: &mut FileSession, user: &str) -> Result<OwnedFd, OpError> {
        let cwd = session.cwd.clone();
        self.open_at(session, user, &cwd, DIR_PATH)
    }

    /// The user's root, opened again (for exec's confinement).
    pub fn root_dir(&self, session: &mut FileSession, user: &str) -> Result<OwnedFd, OpError> {
        self.open_at(session, user, &Resolved::root(), DIR_PATH)
    }

    /// The request's required `path`, resolved against the current directory.
    fn path(session: &FileSession, header: &Header) -> Result<Resolved, OpError> {
        Ok(resolve(&session.cwd, &req_str(header.path, "path")?)?)
    }

    pub fn pwd(&self, session: &FileSession, out: &mut OutBuf, id: Option<u64>) {
        reply_path(out, id, &session.cwd);
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
        self.open_at(session, user, &target, DIR_PATH)?;
        reply_path(out, id, &target);
        session.cwd = target;
        Ok(())
    }

    pub fn mkdir(
        &mut self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
        out: &mut OutBuf,
        id: Option<u64>,
    ) -> Result<(), OpError> {
        let target = Self::path(session, header)?;
        let parents = opt_bool(header.parents, "parents", false)?;
        // The use stays locked from the first stat to the last count.
        let usage = self.hold(session, user)?;
        let mut u = usage.as_deref().map(quota::lock);
        let (mut dir, missing) = if parents {
            // Like `mkdir -p`: existing directories are walked through, and the
            // missing rest is judged against the quota as a whole, then made.
            let mut dir = self.open_at(session, user, &Resolved::root(), DIR_PATH)?;
            let names: Vec<&str> = target.components().collect();
            let mut existing = 0;
            for name in &names {
                match beneath::open(dir.as_fd(), name, DIR_PATH, 0) {
                    Ok(next) => dir = next,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                    Err(e) => return Err(e.into()),
                }
                existing += 1;
            }
            (dir, names.get(existing..).unwrap_or_default().to_vec())
        } else {
            let Some((parent, name)) = target.split_last() else {
                return Err(OpError::new(409, "already exists"));
            };
            let dir = self.open_at(session, user, &parent, DIR_PATH)?;
            if beneath::stat_entry(dir.as_fd(), name).is_ok() {
                return Err(io::Error::from_raw_os_error(libc::EEXIST).into());
            }
            (dir, vec![name])
        };
        if let Some(u) = &u {
            self.judge_dirs(u, missing.len())?;
        }
        for name in missing {
            match beneath::mkdir(dir.as_fd(), name) {
                Ok(()) => {
                    if let Some(u) = &mut u {
                        u.change(0, BLOCK);
                    }
                }
                // Made meanwhile (an exec): fine for `-p`, as it always was.
                Err(e) if parents && e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            if parents {
                dir = beneath::open(dir.as_fd(), name, DIR_PATH, 0)?;
            }
        }
        reply_path(out, id, &target);
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
            return Err(OpError::new(403, "the root cannot be removed"));
        };
        let dir = self.open_at(session, user, &parent, DIR_PATH)?;
        // What it counts as it is now, under the same lock as the unlink.
        let usage = self.hold(session, user)?;
        let mut u = usage.as_deref().map(quota::lock);
        let st = not_symlink(beneath::stat_entry(dir.as_fd(), name)?)?;
        let is_dir = beneath::is_dir(&st);
        beneath::remove(dir.as_fd(), name, is_dir)?;
        if let Some(u) = &mut u {
            u.change(counted(&st), 0);
        }
        reply_path(out, id, &target);
        Ok(())
    }
}

/// An entry's `lstat`, unless it is a symlink: refused as `openat2` refuses one
/// met on the way (ELOOP, so with the same status and message).
fn not_symlink(st: libc::stat) -> Result<libc::stat, OpError> {
    if beneath::is_symlink(&st) {
        return Err(io::Error::from_raw_os_error(libc::ELOOP).into());
    }
    Ok(st)
}

/// The `{path}` reply of pwd, cd, mkdir and rm.
fn reply_path(out: &mut OutBuf, id: Option<u64>, path: &Resolved) {
    let path = path.display();
    out.append(|buf| {
        let mut w = HeadWriter::reply(buf, 200, id);
        w.field("path", path.as_str());
        w.finish(0);
    });
}
