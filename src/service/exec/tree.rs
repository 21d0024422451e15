//! An exec's process tree: a pids cgroup per exec caps it and lists every member
//! (setsid escapees included) so that all die together; the server, child subreaper,
//! reaps what it adopts (`reaper.rs`).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Tasks (processes and threads) one exec's tree may hold at once.
pub const MAX_TASKS: u32 = 64;

/// Where the per-exec cgroups go: `<pids hierarchy>/frameloop-<server pid>/`.
#[derive(Debug)]
pub struct Cgroups {
    base: PathBuf,
    next: u64,
    /// Per-exec cgroups whose last member was still on its way out.
    stale: Vec<PathBuf>,
}

/// The pids controller's hierarchy: cgroup v1's `pids` mount, or a cgroup v2 mount
/// that offers `pids` (enabled below its root on the way).
fn pids_hierarchy() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = PathBuf::from(left.split(' ').nth(4)?);
        let mut right = right.split(' ');
        let (fstype, options) = (right.next()?, right.nth(1)?);
        let found = match fstype {
            "cgroup" => options.split(',').any(|o| o == "pids"),
            "cgroup2" => {
                std::fs::read_to_string(point.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
                    && write(&point.join("cgroup.subtree_control"), "+pids").is_ok()
            }
            _ => false,
        };
        found.then_some(point)
    })
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(text.as_bytes())
}

impl Cgroups {
    /// Makes this server's cgroup, after removing those of servers gone (a crash
    /// leaves them). `None` where no pids controller can be written to.
    /// Each worker (contract section 12) has its own, `frameloop-PID.N` for
    /// worker N after the first.
    pub fn open(worker: usize) -> io::Result<Cgroups> {
        let root = pids_hierarchy().ok_or_else(|| io::Error::other("no pids cgroup hierarchy"))?;
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let gone = name
                    .strip_prefix("frameloop-")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                if gone {
                    remove_tree(&entry.path());
                }
            }
        }
        let base = match worker {
            0 => root.join(format!("frameloop-{}", std::process::id())),
            n => root.join(format!("frameloop-{}.{n}", std::process::id())),
        };
        match std::fs::create_dir(&base) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        // cgroup v2 only: the children of `base` get the controller too.
        if base.join("cgroup.subtree_control").exists() {
            write(&base.join("cgroup.subtree_control"), "+pids")?;
        }
        Ok(Cgroups {
            base,
            next: 0,
            stale: Vec::new(),
        })
    }

    /// A cgroup for one exec, capped at [`MAX_TASKS`].
    pub fn create(&mut self) -> io::Result<Cgroup> {
        self.sweep();
        self.next += 1;
        let dir = self.base.join(format!("exec-{}", self.next));
        std::fs::create_dir(&dir)?;
        let made = write(&dir.join("pids.max"), &MAX_TASKS.to_string()).and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(dir.join("cgroup.procs"))
        });
        match made {
            Ok(procs) => Ok(Cgroup {
                dir,
                procs: procs.into(),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// An exec's tree is gone: its cgroup is removed (later if it is not empty yet).
    pub fn remove(&mut self, cgroup: Cgroup) {
        if std::fs::remove_dir(&cgroup.dir).is_err() {
            self.stale.push(cgroup.dir);
        }
    }

    fn sweep(&mut self) {
        self.stale.retain(|dir| std::fs::remove_dir(dir).is_err());
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        remove_tree(&self.base);
    }
}

/// Removes a cgroup directory and the (empty) cgroups below it.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// One exec's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    /// Its `cgroup.procs`, open for writing: the child writes "0" to it to join
    /// before it runs the program (close-on-exec, so the program never has it).
    procs: OwnedFd,
}

impl Cgroup {
    pub fn procs_fd(&self) -> RawFd {
        self.procs.as_raw_fd()
    }

    fn members(&self) -> Vec<libc::pid_t> {
        let mut text = String::new();
        let _ = std::fs::File::open(self.dir.join("cgroup.procs"))
            .and_then(|mut f| f.read_to_string(&mut text));
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Kills every member, returning a pidfd for each (readable when it exits).
    /// First `pids.max` goes to 0, so no member can fork while this runs; a pid is
    /// signalled through a pidfd opened before it was seen in the cgroup again, so
    /// a recycled pid is never hit.
    fn kill(&self) -> Vec<OwnedFd> {
        let _ = write(&self.dir.join("pids.max"), "0");
        let opened: Vec<(libc::pid_t, OwnedFd)> = self
            .members()
            .into_iter()
            .filter_map(|pid| pidfd_open(pid).ok().map(|fd| (pid, fd)))
            .collect();
        let still = self.members();
        opened
            .into_iter()
            .filter(|(pid, _)| still.contains(pid))
            .map(|(_, fd)| {
                pidfd_kill(&fd, libc::SIGKILL);
                fd
            })
            .collect()
    }
}

pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel (close-on-exec by default).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process of `pidfd`; false when it no longer exists
/// (reaped). A zombie still exists.
fn pidfd_kill(pidfd: &OwnedFd, signal: libc::c_int) -> bool {
    let null = std::ptr::null::<libc::siginfo_t>();
    // SAFETY: pidfd_send_signal(2) with no siginfo and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            null,
            0,
        )
    };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The processes of one exec (its program's pid is the process group id), and
/// an epoll set that is readable when one of them exits: the descriptor the server
/// watches for the exec besides its pipes.
#[derive(Debug)]
pub struct Tree {
    cgroup: Option<Cgroup>,
    epoll: OwnedFd,
    /// Members killed and not gone yet.
    members: Vec<OwnedFd>,
}

impl Tree {
    pub fn new(cgroup: Option<Cgroup>) -> io::Result<Tree> {
        // SAFETY: epoll_create1 returns a new descriptor.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tree {
            cgroup,
            // SAFETY: fresh and ours.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            members: Vec::new(),
        })
    }

    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    pub fn take_cgroup(&mut self) -> Option<Cgroup> {
        self.cgroup.take()
    }

    /// The descriptor that is readable when a watched process exits.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Watches `pidfd` (level-triggered: the server's edge comes when one exits).
    pub fn watch(&self, pidfd: RawFd) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: pidfd as u64,
        };
        // SAFETY: both descriptors are open; the event is copied by the kernel.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                pidfd,
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn unwatch(&self, pidfd: RawFd) {
        // SAFETY: as in `watch`; a descriptor not in the set is an error we ignore.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                pidfd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Kills every process of the tree: the cgroup's members when there is one,
    /// and the program's process group (`pgid`, while the program is unreaped, so
    /// the id cannot have been recycled; always without a cgroup).
    pub fn kill(&mut self, pgid: Option<libc::pid_t>) {
        if let Some(pgid) = pgid {
            // SAFETY: kill(2) with a negative pid signals that process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let Some(cgroup) = &self.cgroup else {
            return;
        };
        for fd in cgroup.kill() {
            if self.watch(fd.as_raw_fd()).is_ok() {
                self.members.push(fd);
            }
        }
    }

    /// True once every member killed is reaped (the caller sweeps first: see
    /// [`super::reaper::Reaper::sweep`]). Members gone leave the epoll set as their pidfd closes.
    pub fn gone(&mut self) -> bool {
        self.members.retain(|fd| pidfd_kill(fd, 0));
        self.members.is_empty()
    }
}
