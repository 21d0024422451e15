//! `<data-dir>/tmp`, where uploads are written before their rename, and who
//! owns each file in it. Servers of a cluster may share a data dir (contract
//! section 12): a temp file carries its server's id, and its server holds a
//! lock on it (`flock`) while it is written, so a server starting removes only
//! files no running server holds: its own previous run's, or another's that
//! died, never an upload in progress. The lock, not a pid or a host name,
//! decides: pids repeat across containers, and names across machines.

use super::beneath;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of upload temp files: `put-ID~N`.
const TMP_PREFIX: &str = "put-";

/// Numbers the temp files this process makes (all its workers).
static MADE: AtomicU64 = AtomicU64::new(0);

pub(super) struct TempDir {
    pub(super) dir: Rc<OwnedFd>,
}

/// This server's id in temp file names: random, drawn once per process.
pub fn server_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Without randomness the pid still tells this run's files apart; the
        // lock is what protects them.
        match getrandom::fill(&mut bytes) {
            Ok(()) => hex::encode(bytes),
            Err(_) => format!("pid{}", std::process::id()),
        }
    })
}

/// Takes `file`'s lock without waiting: false when another holds it.
fn try_lock(file: &impl AsRawFd) -> bool {
    // SAFETY: flock on an open descriptor.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

impl TempDir {
    /// Creates the directory and, with `clean` (the first worker, before any
    /// serves), removes the temp files no running server holds: uploads a
    /// crash left unfinished (the destination never saw them).
    pub(super) fn open(path: &Path, clean: bool) -> io::Result<TempDir> {
        beneath::create_private_dir(path)?;
        let dir = beneath::open_dir(path)?;
        let mut stale = 0;
        for entry in std::fs::read_dir(path)?.filter(|_| clean).flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with(TMP_PREFIX) {
                continue;
            }
            // Anything odd (a directory, a file gone meanwhile) is left alone.
            let Ok(fd) = beneath::open(dir.as_fd(), &name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
            else {
                continue;
            };
            // Removed while locked: its creator, if it just made it, sees it
            // unlinked once it gets the lock (see `create`).
            if try_lock(&fd) && beneath::remove(dir.as_fd(), &name, false).is_ok() {
                stale += 1;
            }
        }
        if stale > 0 {
            log::info!(
                "removed {stale} unfinished upload(s) from {}",
                path.display()
            );
        }
        Ok(TempDir { dir: Rc::new(dir) })
    }

    /// A new, empty temp file (0600, private like what it becomes), locked
    /// for as long as it is open, and its name.
    pub(super) fn create(&mut self) -> io::Result<(File, String)> {
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..8 {
            let made = MADE.fetch_add(1, Ordering::Relaxed) + 1;
            let name = format!("{TMP_PREFIX}{}~{made}", server_id());
            let fd = match beneath::open(
                self.dir.as_fd(),
                &name,
                // Read too: the pool hashes the body back from the file (see `Hashing`).
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                0o600,
            ) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    last = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A server starting may have locked and removed it in the moment
            // before our lock: then it is unlinked, and we try another name.
            let file = File::from(fd);
            if try_lock(&file)
                && file
                    .metadata()
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 0)
            {
                return Ok((file, name));
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_no_server_holds_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let mut live = TempDir::open(&tmp, true).unwrap();
        let (held, held_name) = live.create().unwrap();
        assert!(held_name.starts_with(&format!("put-{}~", server_id())));
        // Leftovers of a crash: nobody holds them, whatever their names say.
        for name in ["put-4194305-1", "put-0123456789abcdef~3", "put-x"] {
            std::fs::write(tmp.join(name), b"partial").unwrap();
        }
        std::fs::create_dir(tmp.join("put-dir")).unwrap();
        std::fs::write(tmp.join("notes.txt"), b"not ours").unwrap();
        // Another server starting on the same directory.
        let _other = TempDir::open(&tmp, true).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![held_name.clone(), "notes.txt".into(), "put-dir".into()];
        want.sort();
        assert_eq!(
            left, want,
            "the locked upload, and what is not an upload, stay"
        );
        // Closed (its upload over, or its server gone): removable.
        drop(held);
        let _third = TempDir::open(&tmp, true).unwrap();
        assert!(!tmp.join(&held_name).exists());
    }
}
