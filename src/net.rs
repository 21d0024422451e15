//! Stream sockets the reactor serves (TCP and Unix), behind one type, and the
//! error kinds every socket call sorts into.

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

/// An accepted, non-blocking stream connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Closes our sending side (FIN), keeping the receiving side open.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Stream {
    /// TCP_CORK: while set, the kernel sends only full segments; clearing it
    /// pushes what is held back at once. No-op for Unix sockets.
    pub fn set_cork(&self, on: bool) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let Stream::Tcp(s) = self else {
            return Ok(());
        };
        let value = libc::c_int::from(on);
        // SAFETY: the descriptor is open and `value` is a valid c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::outbuf::Sink for Stream {
    /// `sendfile(2)`: the kernel moves page-cache pages to the socket, no copy
    /// through user space. Works for TCP and Unix sockets alike.
    fn send_file(&mut self, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        // SAFETY: both descriptors are open for the duration of the call and `off`
        // is a valid, exclusively borrowed off_t.
        let n = unsafe { libc::sendfile(fd, file.as_raw_fd(), &mut off, len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 && len > 0 {
            // The file shrank under us: the reply promised bytes we cannot send.
            return Err(io::Error::other("file truncated while being sent"));
        }
        Ok(n as usize)
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interest),
            Stream::Unix(s) => s.register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interest),
            Stream::Unix(s) => s.reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}

/// The three classes of socket error (DESIGN principle 10).
#[derive(Debug, PartialEq, Eq)]
pub enum IoClass {
    /// Nothing more now: wait for the next readiness edge.
    WouldBlock,
    /// A signal interrupted the call: retry it.
    Retry,
    /// Anything else: this one connection is finished.
    Fatal,
}

pub fn classify(e: &io::Error) -> IoClass {
    match e.kind() {
        io::ErrorKind::WouldBlock => IoClass::WouldBlock,
        io::ErrorKind::Interrupted => IoClass::Retry,
        _ => IoClass::Fatal,
    }
}

/// Whether an `accept` error means the process or system is out of descriptors
/// (or memory for sockets): a reason to pause accepting, not to exit or spin.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Raises the soft descriptor limit to the hard limit, so `--max-conns` is
/// reachable; returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}
