//! The exec service of contract section 6: allowlisted programs run without a
//! shell, confined and bounded; this file checks requests and starts children.
//!
//! Layers, each in its own file: `confine` (Landlock, no_new_privs, no
//! capabilities), `seccomp` (no sockets), `limits` (rlimits, execs at once),
//! `tree` (a pids cgroup per exec, killing and reaping the whole tree), `child`
//! (one running exec: pipes, deadline, reply). The server watches the
//! descriptors an exec names and resumes it when they are ready.

mod child;
pub mod confine;
pub mod limits;
mod reaper;
mod seccomp;
mod tree;

pub use child::{Exec, MAX_OUTPUT, Orphan, Step};

use super::ops::OpError;
use crate::proto::Header;
use crate::proto::header::{opt_strings, req_str};
use child::Spawned;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Most arguments, and longest argument, a request may give.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_LEN: usize = 4096;
/// Characters of a client's text an error reply quotes at most.
const QUOTE_MAX: usize = 64;

/// The programs `--allow-exec` named, resolved to absolute paths at start.
#[derive(Debug, Default, Clone)]
pub struct Allowlist {
    programs: HashMap<String, PathBuf>,
}

impl Allowlist {
    /// Resolves each name on `search` (a PATH-style list). A name with a `/`, or
    /// one that resolves to no executable file, is an error: `serve` refuses to start.
    pub fn resolve(names: &[String], search: &str) -> Result<Allowlist, String> {
        let mut programs = HashMap::new();
        for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if name.contains('/') {
                return Err(format!(
                    "--allow-exec takes program names, not paths: {name:?}"
                ));
            }
            let found = search
                .split(':')
                .filter(|dir| dir.starts_with('/'))
                .map(|dir| Path::new(dir).join(name))
                .find(|p| is_executable(p))
                .ok_or_else(|| {
                    format!("--allow-exec: {name:?} is not an executable on {search}")
                })?;
            // Resolve symlinks once, now: what runs is fixed at start.
            let path = found.canonicalize().unwrap_or(found);
            programs.insert(name.to_string(), path);
        }
        Ok(Allowlist { programs })
    }

    pub fn get(&self, name: &str) -> Option<&Path> {
        self.programs.get(name).map(PathBuf::as_path)
    }

    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.programs.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `text` quoted, cut to [`QUOTE_MAX`] characters: an error reply stays far
/// below `max_header` whatever the client sent.
pub fn quote(text: &str) -> String {
    let cut: String = text.chars().take(QUOTE_MAX).collect();
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

/// What every worker's exec service shares (contract section 12): the counts
/// of running execs (`--exec-max` holds for the whole server), and the reaper
/// (one worker's `waitpid(-1)` reaps the others' children).
#[derive(Debug, Default, Clone)]
pub struct Shared {
    slots: limits::Slots,
    reaper: reaper::SharedReaper,
}

/// The exec service's settings and what it keeps for the whole server.
#[derive(Debug)]
pub struct Runner {
    allow: Allowlist,
    timeout: Duration,
    limits: limits::Limits,
    slots: limits::Slots,
    /// `None`: no Landlock on this kernel (`--exec-unconfined`).
    landlock: Option<confine::Landlock>,
    /// `None`: no seccomp filter here (`--exec-unconfined`).
    filter: Option<&'static [libc::sock_filter]>,
    /// `None`: no pids cgroup (`--exec-unconfined`).
    cgroups: Option<tree::Cgroups>,
    reaper: reaper::SharedReaper,
    /// Killed execs of closed connections, not reaped yet.
    orphans: Vec<Orphan>,
    /// Read buffer for child pipes.
    scratch: Vec<u8>,
}

impl Runner {
    /// What another worker's runner shares with this one.
    pub fn shared(&self) -> Shared {
        Shared {
            slots: self.slots.clone(),
            reaper: self.reaper.clone(),
        }
    }

    /// Prepares what confinement the machine offers (`serve` has checked with
    /// [`confine::check`] that it is all there, or that `--exec-unconfined` was given).
    /// Worker `worker`'s, sharing `shared` with the others.
    pub fn new(config: &crate::config::Config, worker: usize, shared: Shared) -> Runner {
        let enabled = !config.allow_exec.is_empty();
        let Shared { slots, reaper } = shared;
        let cgroups = enabled
            .then(|| tree::Cgroups::open(worker))
            .and_then(|c| c.map_err(|e| log::warn!("exec: no pids cgroup: {e}")).ok());
        if enabled {
            reaper.become_subreaper();
        }
        Runner {
            allow: config.allow_exec.clone(),
            timeout: config.exec_timeout,
            limits: limits::Limits {
                memory: config.exec_memory,
                max: config.exec_max,
                max_per_user: config.exec_max_per_user,
            },
            slots,
            landlock: enabled.then(confine::Landlock::prepare).flatten(),
            filter: enabled.then(seccomp::prepare).flatten(),
            cgroups,
            reaper,
            orphans: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Checks the request and starts the program for `user` in `cwd`, confined
    /// to `root` (directory descriptors of the connection's current directory and
    /// the user's root), each file it writes capped at `quota_left` bytes.
    /// 403: not allowed; 400: bad arguments; 503: too many running; 500: could not start.
    pub fn start(
        &mut self,
        user: &str,
        header: &Header,
        cwd: &OwnedFd,
        root: &OwnedFd,
        quota_left: Option<u64>,
    ) -> Result<Exec, OpError> {
        let name = req_str(header.cmd, "cmd")?;
        let args = opt_strings(header.args, "args")?;
        // The allowlist is looked up by exact name: "", "/bin/ls" and "a/b" never match.
        let Some(program) = self.allow.get(&name).map(Path::to_path_buf) else {
            return Err(OpError::new(
                403,
                format!("{} is not allowed to run", quote(&name)),
            ));
        };
        if args.len() > MAX_ARGS {
            return Err(OpError::new(400, format!("more than {MAX_ARGS} args")));
        }
        if args
            .iter()
            .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
        {
            return Err(OpError::new(
                400,
                format!("an arg is over {MAX_ARG_LEN} bytes or holds a NUL"),
            ));
        }
        let Some(slot) = self.slots.take(&self.limits, user) else {
            return Err(OpError::new(503, "too many execs running; try again later"));
        };
        let cannot = |e: std::io::Error| {
            log::warn!("exec {}: {e}", program.display());
            OpError::new(500, format!("could not start {}: {e}", quote(&name)))
        };
        let cgroup = match &mut self.cgroups {
            Some(cgroups) => Some(cgroups.create().map_err(cannot)?),
            None => None,
        };
        let ruleset = match &self.landlock {
            Some(landlock) => landlock.ruleset(root).map_err(cannot)?,
            None => None,
        };
        let tree = tree::Tree::new(cgroup).map_err(cannot)?;
        let setup = confine::ChildSetup {
            cwd: cwd.as_raw_fd(),
            cgroup_procs: tree.cgroup().map(tree::Cgroup::procs_fd),
            ruleset: confine::raw(&ruleset),
            rlimits: limits::rlimits(
                &self.limits,
                self.timeout,
                quota_left,
                self.cgroups.is_none(),
            ),
            filter: self.filter,
        };
        let mut command = Command::new(&program);
        command
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C on the server's terminal is the
            // server's to handle, not the child's.
            .process_group(0);
        // SAFETY: `apply` makes async-signal-safe system calls only, on numbers and
        // on descriptors (`cwd`, the cgroup's, the ruleset's) that stay open here
        // until `spawn` returns.
        unsafe { command.pre_exec(move || setup.apply()) };
        let (mut child, pidfd) = match self.reaper.spawn(&mut command) {
            Ok(spawned) => spawned,
            Err(e) => {
                let mut tree = tree;
                self.remove_cgroup(tree.take_cgroup());
                return Err(cannot(e));
            }
        };
        drop(ruleset);
        let pid = child.id() as libc::pid_t;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(cannot(std::io::ErrorKind::BrokenPipe.into()));
        };
        let spawned = Spawned {
            pid,
            pidfd,
            stdout,
            stderr,
            tree,
            reaper: self.reaper.clone(),
            slot,
            timeout: self.timeout,
        };
        match Exec::new(spawned) {
            Ok(exec) => Ok(exec),
            Err((e, cgroup)) => {
                self.remove_cgroup(cgroup);
                Err(cannot(e))
            }
        }
    }

    /// A step of a running exec (see [`Exec::step`]); once it is done, its cgroup goes.
    pub fn step(
        &mut self,
        exec: &mut Exec,
        out: &mut crate::outbuf::OutBuf,
        id: Option<u64>,
    ) -> Step {
        if self.scratch.is_empty() {
            self.scratch = vec![0; 64 * 1024];
        }
        let step = exec.step(&mut self.scratch, out, id);
        if matches!(step, Step::Done) {
            self.remove_cgroup(exec.take_cgroup());
        }
        step
    }

    fn remove_cgroup(&mut self, cgroup: Option<tree::Cgroup>) {
        if let (Some(cgroups), Some(cgroup)) = (&mut self.cgroups, cgroup) {
            cgroups.remove(cgroup);
        }
    }

    /// The connection closed with `exec` running: its tree is killed. When not
    /// all is reaped yet, `watch` is asked to watch its descriptor (the server
    /// registers it; [`Runner::reap_orphans`] runs when it is readable); if it
    /// cannot, the program (already sent SIGKILL) is waited for here.
    pub fn release(&mut self, exec: Exec, watch: impl FnOnce(RawFd) -> bool) {
        let Some(mut orphan) = exec.abandon() else {
            return;
        };
        if watch(orphan.pidfd()) {
            self.orphans.push(orphan);
        } else {
            let cgroup = orphan.take_cgroup();
            orphan.wait();
            self.remove_cgroup(cgroup);
        }
    }

    /// Reaps the processes of killed execs that have exited.
    pub fn reap_orphans(&mut self) {
        let mut gone = Vec::new();
        self.orphans.retain_mut(|o| {
            let reaped = o.reap();
            if reaped {
                gone.push(o.take_cgroup());
            }
            !reaped
        });
        for cgroup in gone {
            self.remove_cgroup(cgroup);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short() {
        assert_eq!(quote("ls"), "\"ls\"");
        let long = quote(&"é".repeat(20_000));
        assert!(long.chars().count() <= QUOTE_MAX + 5, "{long}");
        assert!(long.ends_with("..."));
    }
}
