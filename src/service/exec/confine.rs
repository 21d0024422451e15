//! Confinement of an exec (contract section 6): what the kernel offers (Landlock,
//! seccomp, a pids cgroup), the Landlock ruleset built before the fork, and what
//! the child applies between fork and exec (the socket filter is in `seccomp`).
//!
//! Between `fork` and `exec` a child of a multi-threaded process may only make
//! async-signal-safe calls: no allocation, no locks. So everything that allocates
//! (the Landlock ruleset with its rules, the cgroup, the limit values) is prepared
//! in the parent, and [`ChildSetup::apply`] makes raw system calls on plain numbers
//! only: `fchdir`, `write`, `setrlimit`, `prctl`, `capset`, `landlock_restrict_self`,
//! and last the seccomp filter (a `prctl` on a constant program).

use super::tree::Cgroups;
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The Landlock ABI whose rights are asked for (and tested): file system rights
/// (with truncate and device ioctl), TCP bind and connect, and the abstract-socket
/// and signal scopes of ABI 6.
const ABI_USED: ABI = ABI::V7;
/// The lowest ABI that holds the contract: scoping came with ABI 6.
const ABI_NEEDED: i32 = 6;

/// The kernel's Landlock ABI version; 0 or less without Landlock.
pub fn kernel_abi() -> i32 {
    const VERSION: libc::c_uint = 1; // LANDLOCK_CREATE_RULESET_VERSION
    let null = std::ptr::null::<libc::c_void>();
    // SAFETY: the version query takes no attribute and no size.
    unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, null, 0, VERSION) as i32 }
}

/// What is missing for the contract's confinement on this machine, in words.
pub fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    match kernel_abi() {
        abi if abi < 1 => missing.push("Landlock (no file, network or signal confinement)".into()),
        abi if abi < ABI_NEEDED => missing.push(format!(
            "Landlock ABI {ABI_NEEDED} (the kernel has {abi}: some of network and signal confinement)"
        )),
        _ => {}
    }
    missing.extend(super::seccomp::missing());
    if let Err(e) = Cgroups::open(0) {
        missing.push(format!(
            "a writable pids cgroup ({e}: no cap of {} processes per exec, and processes \
             that leave the program's process group survive the deadline)",
            super::tree::MAX_TASKS
        ));
    }
    missing
}

/// `serve --allow-exec` checks this at start: where confinement is incomplete it
/// refuses, unless `--exec-unconfined`, and then warns.
pub fn check(unconfined: bool) -> Result<(), String> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let what = missing.join("; ");
    if !unconfined {
        return Err(format!(
            "--allow-exec needs exec confinement, and this machine lacks {what}; \
             give --exec-unconfined to run anyway"
        ));
    }
    log::warn!("--exec-unconfined: exec runs without {what}");
    Ok(())
}

/// Read-only rights on program and library directories.
fn run_dir() -> BitFlags<AccessFs> {
    AccessFs::Execute | AccessFs::ReadFile | AccessFs::ReadDir
}

/// What an exec may reach beyond its user's root, and how.
fn system_paths() -> Vec<(&'static str, BitFlags<AccessFs>)> {
    let read_dir = AccessFs::ReadFile | AccessFs::ReadDir;
    let read = BitFlags::from(AccessFs::ReadFile);
    let mut paths: Vec<(&str, BitFlags<AccessFs>)> = [
        "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    ]
    .into_iter()
    .map(|p| (p, run_dir()))
    .collect();
    // The kernel's views: /proc (uptime, ps of the tree) and the CPU list (nproc).
    paths.extend([("/proc", read_dir), ("/sys/devices/system/cpu", read_dir)]);
    // The loader's cache, time zone, user and group names: the few files programs need.
    for file in [
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/etc/timezone",
        "/etc/nsswitch.conf",
        "/etc/passwd",
        "/etc/group",
        "/dev/zero",
        "/dev/urandom",
    ] {
        paths.push((file, read));
    }
    paths.push((
        "/dev/null",
        AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
    ));
    paths
}

fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let mut name = path.as_os_str().as_bytes().to_vec();
    name.push(0);
    // SAFETY: a NUL-terminated path; O_PATH opens for naming only.
    let fd = unsafe { libc::open(name.as_ptr().cast(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The Landlock rules shared by every exec, their paths opened once at start.
#[derive(Debug)]
pub struct Landlock {
    system: Vec<(OwnedFd, BitFlags<AccessFs>)>,
}

impl Landlock {
    /// `None` where the kernel has no Landlock.
    pub fn prepare() -> Option<Landlock> {
        if kernel_abi() < 1 {
            return None;
        }
        let system = system_paths()
            .into_iter()
            .filter_map(|(path, access)| {
                let fd = open_path(Path::new(path)).ok()?;
                let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
                // A rule on a file takes file rights only.
                let access = if is_dir {
                    access
                } else {
                    access & AccessFs::from_file(ABI_USED)
                };
                Some((fd, access))
            })
            .collect();
        Some(Landlock { system })
    }

    /// A ruleset for one exec: read-write beneath `root` (the user's root), the
    /// system paths as prepared, no TCP bind or connect at all, and scoped: no
    /// abstract Unix socket and no signal outside the exec's own domain.
    pub fn ruleset(&self, root: &OwnedFd) -> io::Result<Option<OwnedFd>> {
        let fail = |e: landlock::RulesetError| io::Error::other(e.to_string());
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(ABI_USED))
            .and_then(|r| r.handle_access(AccessNet::from_all(ABI_USED)))
            .and_then(|r| r.scope(Scope::from_all(ABI_USED)))
            .and_then(|r| r.create())
            .map_err(fail)?;
        for (fd, access) in &self.system {
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd.as_fd(), *access))
                .map_err(fail)?;
        }
        ruleset = ruleset
            .add_rule(PathBeneath::new(root.as_fd(), AccessFs::from_all(ABI_USED)))
            .map_err(fail)?;
        Ok(ruleset.into())
    }
}

/// One resource limit for the child: `(RLIMIT_*, value)` (soft and hard).
pub type Rlimit = (libc::c_int, libc::rlim_t);

/// What the child applies before it runs the program: numbers and descriptors
/// only, copied into the `pre_exec` closure (the descriptors stay open in the
/// parent until the spawn returns).
#[derive(Debug, Clone, Copy)]
pub struct ChildSetup {
    /// The connection's current directory (beneath the user's root).
    pub cwd: RawFd,
    /// The exec's `cgroup.procs`, to join.
    pub cgroup_procs: Option<RawFd>,
    /// The exec's Landlock ruleset.
    pub ruleset: Option<RawFd>,
    pub rlimits: [Option<Rlimit>; 6],
    /// The socket filter (`seccomp`), installed last.
    pub filter: Option<&'static [libc::sock_filter]>,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check_rc(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl ChildSetup {
    /// Runs in the child between fork and exec: async-signal-safe system calls
    /// only (see the module comment). Any failure stops the spawn (500).
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY (whole block): each call takes integers or pointers to locals.
        unsafe {
            // By descriptor, not by path: a component swapped for a symlink
            // meanwhile cannot take the child out of the root.
            check_rc(libc::fchdir(self.cwd) as _)?;
            if let Some(procs) = self.cgroup_procs {
                // "0": the writer itself, before it can fork.
                if libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (resource, value) in self.rlimits.iter().flatten() {
                let limit = libc::rlimit {
                    rlim_cur: *value,
                    rlim_max: *value,
                };
                check_rc(libc::setrlimit(*resource as _, &limit) as _)?;
            }
            check_rc(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as _)?;
            // No capabilities, now or after exec (a root server's child would get
            // the bounding set back at exec): empty the bounding and ambient sets,
            // then the process's own. Without CAP_SETPCAP (not root) there is
            // nothing to drop, and the EPERM is ignored.
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            let header = CapHeader {
                version: CAPABILITY_VERSION_3,
                pid: 0,
            };
            let none = [CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            check_rc(libc::syscall(
                libc::SYS_capset,
                &header as *const CapHeader,
                none.as_ptr(),
            ))?;
            if let Some(ruleset) = self.ruleset {
                check_rc(libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0))?;
            }
        }
        // Last, after no_new_privs (which it needs): it refuses only sockets,
        // nothing the steps above or the exec itself use.
        if let Some(filter) = self.filter {
            super::seccomp::install(filter)?;
        }
        Ok(())
    }
}

/// The ruleset descriptor as the setup names it.
pub fn raw(fd: &Option<OwnedFd>) -> Option<RawFd> {
    fd.as_ref().map(AsRawFd::as_raw_fd)
}
