//! Reaping the server's children: the programs exec started and the processes
//! of killed trees it adopted as child subreaper, for every worker at once.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Reaps the server's children: the programs exec started (their status is kept
/// for their [`Exec`](super::child::Exec)) and the processes of killed trees that
/// the server adopted as child subreaper (dropped). Shared by the running execs.
#[derive(Debug, Default)]
pub struct Reaper {
    /// Programs started and not collected yet; `Some` once reaped (a wait status).
    programs: HashMap<libc::pid_t, Option<libc::c_int>>,
    /// Whether the server is child subreaper (set on first use).
    subreaper: bool,
}

/// The reaper, shared by every worker of the server (contract section 12):
/// `waitpid(-1)` in one worker reaps the others' programs too, so their
/// statuses must land where each finds its own.
#[derive(Debug, Default, Clone)]
pub struct SharedReaper(Arc<Mutex<Reaper>>);

impl SharedReaper {
    fn lock(&self) -> MutexGuard<'_, Reaper> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn become_subreaper(&self) {
        self.lock().become_subreaper();
    }

    /// Spawns `command` and opens its pidfd with the lock held: another
    /// worker's sweep (`waitpid(-1)`) must not reap the child before it is
    /// known here (a program that exits at once), nor while the standard
    /// library waits for a child whose exec failed (it asserts it can).
    pub fn spawn(&self, command: &mut Command) -> io::Result<(Child, io::Result<OwnedFd>)> {
        let mut reaper = self.lock();
        let child = command.spawn()?;
        let pid = child.id() as libc::pid_t;
        reaper.started(pid);
        Ok((child, super::tree::pidfd_open(pid)))
    }

    /// Sweeps the exited children, then the wait status of program `pid` if
    /// it is reaped. `None` to sweep only: once a program's status is taken,
    /// its pid may already be another program's.
    pub fn reaped(&self, pid: Option<libc::pid_t>) -> Option<libc::c_int> {
        let mut reaper = self.lock();
        reaper.sweep();
        reaper.collect(pid?)
    }

    /// Waits (blocking, without the lock) for one program that was sent SIGKILL.
    pub fn wait(&self, pid: libc::pid_t) -> Option<libc::c_int> {
        if let Some(status) = self.lock().collect(pid) {
            return Some(status);
        }
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        let mut reaper = self.lock();
        if got == pid {
            reaper.programs.remove(&pid);
            return Some(status);
        }
        // Another worker's sweep reaped it meanwhile.
        reaper.collect(pid)
    }
}

impl Reaper {
    /// Makes the server the reaper of its descendants: a process whose parent dies
    /// comes to the server, not to PID 1 (which on some machines never reaps), so
    /// killed trees leave no zombies behind.
    pub fn become_subreaper(&mut self) {
        if !self.subreaper {
            // SAFETY: prctl with integer arguments.
            self.subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0;
        }
    }

    pub fn started(&mut self, pid: libc::pid_t) {
        self.programs.insert(pid, None);
    }

    /// `waitpid(-1, WNOHANG)` until nothing more is ready (bounded per call).
    pub fn sweep(&mut self) {
        for _ in 0..1024 {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if let Some(slot) = self.programs.get_mut(&pid) {
                *slot = Some(status);
            }
        }
    }

    /// The program's wait status once reaped (then forgotten).
    pub fn collect(&mut self, pid: libc::pid_t) -> Option<libc::c_int> {
        let status = (*self.programs.get(&pid)?)?;
        self.programs.remove(&pid);
        Some(status)
    }
}
