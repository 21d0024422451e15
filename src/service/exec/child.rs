//! One running exec: its child's pipes, its process tree, the deadline, and the
//! reply once it ends; a killed exec of a closed connection lives on as an [`Orphan`].

use super::reaper::SharedReaper;
use super::tree::Tree;
use crate::net::{self, ReadEnd};
use crate::outbuf::OutBuf;
use crate::proto::HeadWriter;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ChildStderr, ChildStdout, ExitStatus};
use std::time::{Duration, Instant};

/// Output kept per stream; the rest is read and dropped (`truncated`).
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// Reads per pipe per turn: a child writing flat out (`yes`) must not hold the loop.
const READS_PER_TURN: usize = 16;

/// One pipe being read: what was kept, and whether it reached EOF.
#[derive(Debug)]
struct Pipe<P> {
    pipe: Option<P>,
    kept: Vec<u8>,
    dropped: bool,
}

impl<P: Read + AsRawFd> Pipe<P> {
    fn new(pipe: P) -> Pipe<P> {
        Pipe {
            pipe: Some(pipe),
            kept: Vec::new(),
            dropped: false,
        }
    }

    /// Reads until `WouldBlock` or EOF (closing the pipe), within a budget.
    /// Returns false when the budget ran out with the pipe still readable.
    fn read_some(&mut self, scratch: &mut [u8]) -> bool {
        let Some(pipe) = self.pipe.as_mut() else {
            return true;
        };
        let (kept, dropped) = (&mut self.kept, &mut self.dropped);
        let end = net::read_within(READS_PER_TURN, || {
            let n = pipe.read(scratch)?;
            if n == 0 {
                return Ok(net::Step::Eof);
            }
            let room = MAX_OUTPUT.saturating_sub(kept.len());
            *dropped |= n > room;
            let data = scratch.get(..n.min(room)).unwrap_or_default();
            kept.extend_from_slice(data);
            Ok(net::Step::Got)
        });
        match end {
            ReadEnd::Budget => false,
            ReadEnd::WouldBlock | ReadEnd::Stopped => true,
            ReadEnd::Eof | ReadEnd::Failed(_) => {
                self.pipe = None; // closing the fd also removes it from the poller
                true
            }
        }
    }

    fn open(&self) -> bool {
        self.pipe.is_some()
    }
}

/// A running `exec`.
#[derive(Debug)]
pub struct Exec {
    /// The program's pid: also its process group id.
    pid: libc::pid_t,
    pidfd: OwnedFd,
    tree: Tree,
    reaper: SharedReaper,
    stdout: Pipe<ChildStdout>,
    stderr: Pipe<ChildStderr>,
    deadline: Instant,
    timed_out: bool,
    /// When the tree was killed (at the deadline, on disconnect, or when the
    /// program ended: none of its processes survives the reply).
    killed: bool,
    /// Set once reaped.
    status: Option<ExitStatus>,
    /// Its place among the running execs (`--exec-max`).
    slot: Option<super::limits::Slot>,
}

/// What a step of an exec came to.
pub enum Step {
    /// Waiting for the child's events (pipes, exits) or its deadline.
    Waiting,
    /// A pipe still had data when its budget ran out: come back next turn.
    Again,
    /// Finished: the reply is queued.
    Done,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What [`Exec::new`] takes over from a spawned child.
pub struct Spawned {
    pub pid: libc::pid_t,
    /// Opened as it was spawned (see `SharedReaper::spawn`).
    pub pidfd: io::Result<OwnedFd>,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub tree: Tree,
    pub reaper: SharedReaper,
    pub slot: super::limits::Slot,
    pub timeout: Duration,
}

impl Exec {
    /// Watches a child just spawned. If it cannot, the child is killed and
    /// reaped, and its cgroup comes back with the error, for removal.
    pub fn new(mut spawned: Spawned) -> Result<Exec, (io::Error, Option<super::tree::Cgroup>)> {
        let pidfd = std::mem::replace(&mut spawned.pidfd, Err(io::ErrorKind::NotFound.into()));
        let watch = |s: &Spawned| -> io::Result<OwnedFd> {
            let pidfd = pidfd?;
            s.tree.watch(pidfd.as_raw_fd())?;
            set_nonblocking(s.stdout.as_raw_fd())?;
            set_nonblocking(s.stderr.as_raw_fd())?;
            Ok(pidfd)
        };
        match watch(&spawned) {
            Ok(pidfd) => Ok(Exec {
                pid: spawned.pid,
                pidfd,
                tree: spawned.tree,
                reaper: spawned.reaper,
                stdout: Pipe::new(spawned.stdout),
                stderr: Pipe::new(spawned.stderr),
                deadline: Instant::now() + spawned.timeout,
                timed_out: false,
                killed: false,
                status: None,
                slot: Some(spawned.slot),
            }),
            Err(e) => {
                let Spawned {
                    pid,
                    mut tree,
                    reaper,
                    ..
                } = spawned;
                tree.kill(Some(pid));
                let _ = reaper.wait(pid);
                Err((e, tree.take_cgroup()))
            }
        }
    }

    /// When the timeout kills the tree; `None` once it is killed. (Killed
    /// processes die at once; one stuck in uninterruptible sleep holds the reply
    /// until it dies, or until the connection's idle timeout closes it.)
    pub fn deadline(&self) -> Option<Instant> {
        (!self.killed).then_some(self.deadline)
    }

    /// What the loop must watch (readable) to resume this exec: stdout, stderr,
    /// and the tree's descriptor, readable when one of its processes exits (the
    /// program included: reaping needs no signal handler).
    pub fn watched(&self) -> [RawFd; 3] {
        let fd = |pipe: Option<RawFd>| pipe.unwrap_or(-1);
        [
            fd(self.stdout.pipe.as_ref().map(AsRawFd::as_raw_fd)),
            fd(self.stderr.pipe.as_ref().map(AsRawFd::as_raw_fd)),
            self.tree.fd(),
        ]
    }

    /// Reads what the pipes hold, reaps what exited, and queues the reply once
    /// the exec is finished: the program exited and both pipes are at EOF (or the
    /// deadline came), and then every process of its tree was killed and reaped.
    pub fn step(&mut self, scratch: &mut [u8], out: &mut OutBuf, id: Option<u64>) -> Step {
        let out_idle = self.stdout.read_some(scratch);
        let err_idle = self.stderr.read_some(scratch);
        let gone = self.reap();
        if !(out_idle && err_idle) {
            return Step::Again;
        }
        if !self.killed {
            let ended = self.status.is_some() && !self.stdout.open() && !self.stderr.open();
            if !ended {
                return Step::Waiting;
            }
            // The program ended: what it left running (detached from its pipes)
            // does not survive the reply.
            self.kill();
            if !self.reap() {
                return Step::Waiting;
            }
        } else if !gone {
            return Step::Waiting;
        }
        self.slot = None;
        let Some(status) = self.status else {
            return Step::Waiting; // not reached: gone implies reaped
        };
        let stdout = std::mem::take(&mut self.stdout.kept);
        let stderr = std::mem::take(&mut self.stderr.kept);
        let truncated = self.stdout.dropped || self.stderr.dropped;
        let size = (stdout.len() + stderr.len()) as u64;
        out.append(|buf| {
            let mut w = HeadWriter::reply(buf, 200, id);
            w.field("exit", &status.code())
                .field("signal", &status.signal())
                .field("timed_out", &self.timed_out)
                .field("truncated", &truncated);
            w.field("stdout", &stdout.len())
                .field("stderr", &stderr.len());
            w.finish(size);
        });
        out.push_body(stdout);
        out.push_body(stderr);
        Step::Done
    }

    /// Its deadline passed: the timeout kills the whole tree (the program, and
    /// whatever it left running, however detached).
    pub fn expire(&mut self) {
        if !self.killed {
            self.timed_out = true;
            self.kill();
        }
    }

    fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            // The program's pid is its process group id, reserved until we reap it.
            let pgid = self.status.is_none().then_some(self.pid);
            self.tree.kill(pgid);
        }
    }

    /// Sweeps the server's exited children, takes the program's status, and
    /// says whether the tree killed is gone (true until a kill: nothing to wait for).
    fn reap(&mut self) -> bool {
        if let Some(status) = self
            .reaper
            .reaped(self.status.is_none().then_some(self.pid))
        {
            self.status = Some(ExitStatus::from_raw(status));
            // A reaped pidfd stays readable: out of the set, or it wakes the loop.
            self.tree.unwatch(self.pidfd.as_raw_fd());
        }
        self.status.is_some() && self.tree.gone()
    }

    /// The client went away: kill the tree and stop reading its pipes (closing
    /// them also takes them out of the poller). Returns the exec when its
    /// processes are not all reaped yet: the server watches [`Orphan::pidfd`].
    pub fn abandon(mut self) -> Option<Orphan> {
        self.kill();
        self.slot = None;
        self.stdout.pipe = None;
        self.stderr.pipe = None;
        if self.reap() {
            return None;
        }
        Some(Orphan { exec: self })
    }

    /// Its cgroup, once the tree is gone, for removal.
    pub fn take_cgroup(&mut self) -> Option<super::tree::Cgroup> {
        self.tree.take_cgroup()
    }
}

impl Drop for Exec {
    /// Never leave a process running behind a dropped request.
    fn drop(&mut self) {
        self.kill();
        self.reap();
    }
}

/// A killed exec of a closed connection, kept until its processes are reaped.
#[derive(Debug)]
pub struct Orphan {
    exec: Exec,
}

impl Orphan {
    /// Readable when one of its processes exits.
    pub fn pidfd(&self) -> RawFd {
        self.exec.tree.fd()
    }

    /// True once every process is reaped.
    pub fn reap(&mut self) -> bool {
        self.exec.reap()
    }

    /// Waits for the program (it was sent SIGKILL): for when its descriptor
    /// cannot be watched. Its other processes are reaped by later sweeps.
    pub fn wait(mut self) {
        let status = self.exec.reaper.wait(self.exec.pid);
        self.exec.status = Some(ExitStatus::from_raw(status.unwrap_or(0)));
    }

    pub fn take_cgroup(&mut self) -> Option<super::tree::Cgroup> {
        self.exec.take_cgroup()
    }
}
