//! The exec service of contract section 6: allowlisted programs run without a
//! shell. It names the descriptors to watch (stdout, stderr, a pidfd); the
//! server registers them with its loop and resumes the exec when they are ready.

use super::ops::OpError;
use crate::net::{self, ReadEnd};
use crate::outbuf::OutBuf;
use crate::proto::HeadWriter;
use crate::proto::Header;
use crate::proto::header::{opt_strings, req_str};
use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Output kept per stream; the rest is read and dropped (`truncated`).
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// Most arguments, and longest argument, a request may give.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_LEN: usize = 4096;
/// Reads per pipe per turn: a child writing flat out (`yes`) must not hold the loop.
const READS_PER_TURN: usize = 16;

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
            let room = MAX_OUTPUT - kept.len();
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
    child: Child,
    pidfd: OwnedFd,
    stdout: Pipe<ChildStdout>,
    stderr: Pipe<ChildStderr>,
    deadline: Instant,
    timed_out: bool,
    /// Set once reaped.
    status: Option<std::process::ExitStatus>,
}

/// What a step of an exec came to.
pub enum Step {
    /// Waiting for the child's events (pipes, exit) or its deadline.
    Waiting,
    /// A pipe still had data when its budget ran out: come back next turn.
    Again,
    /// Finished: the reply is queued.
    Done,
}

fn op_error(status: u16, message: impl Into<String>) -> OpError {
    OpError {
        status,
        message: message.into(),
    }
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

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel (close-on-exec by default).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Exec {
    /// Checks the request and starts the program in `cwd` (a directory descriptor
    /// inside the user's root). 403: not allowed; 400: bad arguments; 500: could not start.
    pub fn start(
        allow: &Allowlist,
        header: &Header,
        cwd: &OwnedFd,
        timeout: Duration,
    ) -> Result<Exec, OpError> {
        let name = req_str(header.cmd, "cmd").map_err(|e| op_error(400, e.to_string()))?;
        let args = opt_strings(header.args, "args").map_err(|e| op_error(400, e.to_string()))?;
        // The allowlist is looked up by exact name: "", "/bin/ls" and "a/b" never match.
        let Some(program) = allow.get(&name) else {
            return Err(op_error(403, format!("{name:?} is not allowed to run")));
        };
        if args.len() > MAX_ARGS {
            return Err(op_error(400, format!("more than {MAX_ARGS} args")));
        }
        if args
            .iter()
            .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
        {
            return Err(op_error(
                400,
                format!("an arg is over {MAX_ARG_LEN} bytes or holds a NUL"),
            ));
        }
        let cwd_fd = cwd.as_raw_fd();
        let mut command = Command::new(program);
        command
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: the timeout kills whatever it started too, and a
            // Ctrl-C on the server's terminal is the server's to handle, not the child's.
            .process_group(0);
        // SAFETY: fchdir is async-signal-safe; the descriptor stays open until spawn returns.
        // Changing directory by descriptor, not by path, keeps the child inside the root
        // even if a path component is swapped for a symlink meanwhile.
        unsafe {
            command.pre_exec(move || {
                if libc::fchdir(cwd_fd) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            log::warn!("exec {}: {e}", program.display());
            op_error(500, format!("could not start {name}: {e}"))
        })?;
        // Everything after the spawn that can fail: a child we cannot watch is killed.
        let watch = |child: &mut Child| -> io::Result<(OwnedFd, ChildStdout, ChildStderr)> {
            let pidfd = pidfd_open(child.id())?;
            let stdout = child.stdout.take().ok_or(io::ErrorKind::BrokenPipe)?;
            let stderr = child.stderr.take().ok_or(io::ErrorKind::BrokenPipe)?;
            set_nonblocking(stdout.as_raw_fd())?;
            set_nonblocking(stderr.as_raw_fd())?;
            Ok((pidfd, stdout, stderr))
        };
        match watch(&mut child) {
            Ok((pidfd, stdout, stderr)) => Ok(Exec {
                child,
                pidfd,
                stdout: Pipe::new(stdout),
                stderr: Pipe::new(stderr),
                deadline: Instant::now() + timeout,
                timed_out: false,
                status: None,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait(); // just killed: returns at once
                Err(op_error(500, format!("could not start {name}: {e}")))
            }
        }
    }

    /// When the exec timeout kills the child; `None` once it has.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.timed_out).then_some(self.deadline)
    }

    /// What the loop must watch (readable) to resume this exec: stdout, stderr,
    /// and the pidfd, which becomes readable when the child exits (reaping needs
    /// no signal handler).
    pub fn watched(&self) -> [RawFd; 3] {
        let fd = |pipe: Option<RawFd>| pipe.unwrap_or(-1);
        [
            fd(self.stdout.pipe.as_ref().map(AsRawFd::as_raw_fd)),
            fd(self.stderr.pipe.as_ref().map(AsRawFd::as_raw_fd)),
            self.pidfd.as_raw_fd(),
        ]
    }

    /// Reads what the pipes hold, reaps the child if it exited, and queues the
    /// reply once it is finished: exited and both pipes at EOF (or timed out).
    pub fn step(&mut self, scratch: &mut [u8], out: &mut OutBuf, id: Option<u64>) -> Step {
        let out_idle = self.stdout.read_some(scratch);
        let err_idle = self.stderr.read_some(scratch);
        self.reap();
        if !(out_idle && err_idle) {
            return Step::Again;
        }
        let Some(status) = self.status else {
            return Step::Waiting;
        };
        // After a timeout, a grandchild that escaped the kill may hold a pipe open: stop waiting.
        if (self.stdout.open() || self.stderr.open()) && !self.timed_out {
            return Step::Waiting;
        }
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

    /// The exec timeout passed: kill the child's whole process group.
    pub fn expire(&mut self) {
        if self.status.is_none() {
            self.timed_out = true;
            self.kill();
        }
    }

    fn kill(&mut self) {
        if self.status.is_none() {
            // The group id is the child's pid (process_group(0)), and stays reserved
            // until we reap the child, so this cannot hit a reused pid.
            // SAFETY: kill(2) with a negative pid signals that process group.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        }
    }

    /// `waitpid(WNOHANG)`: true once the child is reaped.
    fn reap(&mut self) -> bool {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.status = Some(status),
                Ok(None) => {}
                // ECHILD: someone else reaped it; it is gone either way.
                Err(_) => self.status = Some(std::process::ExitStatus::from_raw(0)),
            }
        }
        self.status.is_some()
    }

    /// The client went away: kill the child and stop reading its pipes (closing
    /// them also takes them out of the poller). Returns the child when it is not
    /// reaped yet: the server watches its [`Orphan::pidfd`] and reaps it later.
    pub fn abandon(mut self) -> Option<Orphan> {
        self.kill();
        self.stdout.pipe = None;
        self.stderr.pipe = None;
        if self.reap() {
            return None;
        }
        Some(Orphan { exec: self })
    }
}

impl Drop for Exec {
    /// Never leave a child running behind a dropped request.
    fn drop(&mut self) {
        self.kill();
        self.reap();
    }
}

/// A killed child of a closed connection, reaped when its pidfd says it exited.
#[derive(Debug)]
pub struct Orphan {
    exec: Exec,
}

impl Orphan {
    /// Readable once the child has exited.
    pub fn pidfd(&self) -> RawFd {
        self.exec.pidfd.as_raw_fd()
    }

    /// True once reaped.
    pub fn reap(&mut self) -> bool {
        self.exec.reap()
    }

    /// Waits for the child (it was sent SIGKILL): for when its pidfd cannot be watched.
    pub fn wait(mut self) {
        self.exec.status = self.exec.child.wait().ok();
    }
}
