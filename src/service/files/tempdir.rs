//! `<data-dir>/tmp`, where uploads are written before their rename, and who
//! owns each file in it. Servers of a cluster may share a data dir (contract
//! section 12): a temp file is named for its server (host and process), and a
//! server starting removes only what a server of its own host that is no
//! longer running left, never a live server's upload in progress.

use super::beneath;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of upload temp files: `put-HOST~PID~N`.
const TMP_PREFIX: &str = "put-";

/// Numbers the temp files this process makes (all its workers).
static MADE: AtomicU64 = AtomicU64::new(0);

pub(super) struct TempDir {
    pub(super) dir: Rc<OwnedFd>,
    /// This machine's name, as temp files carry it.
    host: String,
}

/// This machine's host name, cut to what a file name may carry.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it when the name fits (and we stop at the first NUL anyway).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name: String = buf
        .get(..len)
        .unwrap_or_default()
        .iter()
        .map(|b| *b as char)
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    if rc != 0 || name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Who left a temp file: `(host, pid)`; the host is `None` for the names of
/// servers from before hosts were named (`put-PID-N`). `None`: not ours.
fn owner(name: &str) -> Option<(Option<&str>, u32)> {
    let rest = name.strip_prefix(TMP_PREFIX)?;
    let mut parts = rest.rsplitn(3, '~');
    let (_, pid, host) = (parts.next()?, parts.next(), parts.next());
    match (host, pid) {
        (Some(host), Some(pid)) => Some((Some(host), pid.parse().ok()?)),
        _ => Some((None, rest.split('-').next()?.parse().ok()?)),
    }
}

/// Whether process `pid` runs on this machine (a zombie counts as running).
fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl TempDir {
    /// Creates the directory and, with `clean` (the first worker, before any
    /// serves), removes what unfinished uploads of servers of this host that
    /// are gone left (a crash mid-put: the destination never saw them).
    pub(super) fn open(path: &Path, clean: bool) -> io::Result<TempDir> {
        beneath::create_private_dir(path)?;
        let host = host_name();
        let mut stale = 0;
        for entry in std::fs::read_dir(path)?.filter(|_| clean) {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some((from, pid)) = owner(&name) else {
                continue;
            };
            if from.is_none_or(|h| h == host) && pid != std::process::id() && !running(pid) {
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
            host,
        })
    }

    /// A new, empty temp file (0600, private like what it becomes) and its name.
    pub(super) fn create(&mut self) -> io::Result<(File, String)> {
        let made = MADE.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{TMP_PREFIX}{}~{}~{made}", self.host, std::process::id());
        let fd = beneath::open(
            self.dir.as_fd(),
            &name,
            // Read too: the pool hashes the body back from the file (see `Hashing`).
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        Ok((File::from(fd), name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_name_says_who_left_it() {
        assert_eq!(
            owner("put-web-1.example~4242~7"),
            Some((Some("web-1.example"), 4242))
        );
        assert_eq!(
            owner("put-4242-7"),
            Some((None, 4242)),
            "before hosts were named"
        );
        assert_eq!(owner("put-x~y~1"), None);
        assert_eq!(owner("notes.txt"), None);
        assert_eq!(owner("put-"), None);
        let name = format!("{TMP_PREFIX}{}~{}~1", host_name(), std::process::id());
        assert_eq!(
            owner(&name),
            Some((Some(host_name().as_str()), std::process::id()))
        );
    }

    #[test]
    fn only_leftovers_of_gone_servers_of_this_host_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let host = host_name();
        // pid_max is at most 2^22: these never run.
        let gone = format!("put-{host}~4194305~1");
        let live = format!("put-{host}~{}~999999999", std::process::id());
        let elsewhere = "put-another-host~4194305~1".to_string();
        let legacy = "put-4194305-9".to_string();
        for name in [&gone, &live, &elsewhere, &legacy] {
            std::fs::write(tmp.join(name), b"partial").unwrap();
        }
        let mut t = TempDir::open(&tmp, true).unwrap();
        let left: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!left.contains(&gone) && !left.contains(&legacy), "{left:?}");
        assert!(
            left.contains(&live) && left.contains(&elsewhere),
            "{left:?}"
        );
        let (_, made) = t.create().unwrap();
        assert!(made.starts_with(&format!("put-{host}~{}~", std::process::id())));
    }
}
