//! Stream sockets the reactor serves (TCP and Unix) and their listeners, each
//! kind behind one type, and the error kinds every socket call sorts into.

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// `Source` (registration with the poller) for an enum of sockets: every call
/// goes to the socket inside, given by the enum's `socket()`.
macro_rules! source_via_socket {
    ($ty:ty) => {
        impl Source for $ty {
            fn register(
                &mut self,
                r: &Registry,
                token: Token,
                interest: Interest,
            ) -> io::Result<()> {
                self.socket().register(r, token, interest)
            }

            fn reregister(
                &mut self,
                r: &Registry,
                token: Token,
                interest: Interest,
            ) -> io::Result<()> {
                self.socket().reregister(r, token, interest)
            }

            fn deregister(&mut self, r: &Registry) -> io::Result<()> {
                self.socket().deregister(r)
            }
        }
    };
}

/// A listening stream socket: both kinds are accepted by the same code.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    /// The path's file goes when the last worker's listener is dropped.
    Unix(UnixListener, std::sync::Arc<UnixPath>),
}

/// Who connected: a name for log lines, and the address `--max-conns-per-ip`
/// counts (none for a Unix socket).
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub ip: Option<IpAddr>,
}

impl Listener {
    /// Accepts one connection.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, addr) = l.accept()?;
                // Replies are batched per turn already; do not let Nagle delay them.
                let _ = stream.set_nodelay(true);
                let peer = Peer {
                    name: addr.to_string(),
                    ip: Some(addr.ip()),
                };
                Ok((Stream::Tcp(stream), peer))
            }
            // Unix clients rarely bind a name: the listener's path says where they came in.
            Listener::Unix(l, path) => {
                let (stream, _) = l.accept()?;
                let peer = Peer {
                    name: format!("unix:{}", path.0.display()),
                    ip: None,
                };
                Ok((Stream::Unix(stream), peer))
            }
        }
    }
}

impl Listener {
    /// The socket inside, for registering with the poller.
    fn socket(&mut self) -> &mut dyn Source {
        match self {
            Listener::Tcp(l) => l,
            Listener::Unix(l, _) => l,
        }
    }
}

source_via_socket!(Listener);
/// The socket file of our Unix listener: removed when dropped (on shutdown and
/// on any exit that unwinds), but only while it is still the file we bound, so a
/// newer server's socket at the same path is left alone.
#[derive(Debug)]
pub struct UnixPath(PathBuf, (u64, u64));

impl Drop for UnixPath {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.0)
            && (meta.dev(), meta.ino()) == self.1
        {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Binds a Unix listener at `path`. A socket file left by a dead server (nobody
/// accepts on it: connecting is refused) is replaced; a live server there, or a
/// file that is not a socket, is an error that says so.
pub fn bind_unix(path: &Path) -> io::Result<Listener> {
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let meta = std::fs::symlink_metadata(path)?;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; not replacing it",
                        path.display()
                    ),
                ));
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another server is listening on {}", path.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    log::info!("replacing stale socket file {}", path.display());
                    std::fs::remove_file(path)?;
                    UnixListener::bind(path)?
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let meta = std::fs::symlink_metadata(path)?;
    let path = UnixPath(path.to_path_buf(), (meta.dev(), meta.ino()));
    Ok(Listener::Unix(listener, std::sync::Arc::new(path)))
}

/// An accepted, non-blocking stream connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TCP inside TLS (`--tls-listen`): reads and writes are plaintext.
    Tls(Box<crate::tls::TlsStream>),
}

impl Stream {
    /// What to be told of its reading side. TCP adds urgent data (EPOLLPRI): a
    /// read stops at an urgent mark with bytes still queued, and the event that
    /// says so is what keeps a short read from being taken for an empty socket.
    pub fn read_interest(&self) -> Interest {
        match self {
            Stream::Tcp(_) => Interest::READABLE | Interest::PRIORITY,
            Stream::Unix(_) | Stream::Tls(_) => Interest::READABLE,
        }
    }

    /// The TLS layer of a TLS stream: what it holds below the connection's
    /// own output (records, the handshake, close_notify) and its memory.
    pub fn tls(&self) -> Option<&crate::tls::TlsStream> {
        match self {
            Stream::Tls(s) => Some(s),
            Stream::Tcp(_) | Stream::Unix(_) => None,
        }
    }

    pub fn tls_mut(&mut self) -> Option<&mut crate::tls::TlsStream> {
        match self {
            Stream::Tls(s) => Some(s),
            Stream::Tcp(_) | Stream::Unix(_) => None,
        }
    }

    /// Whether a short read shows the socket empty (see `Server::read`). Not
    /// on a Unix socket: a read stops after a message that carries descriptors,
    /// with the rest already queued and no event to tell of it. Not with TLS,
    /// whose reads return a record's plaintext at a time.
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }

    /// Closes our sending side (FIN), keeping the receiving side open.
    /// With TLS, the session ends first (close_notify).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            // close_notify, and the FIN once it (and all before it) is out.
            Stream::Tls(s) => s.close(),
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
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tls(s) => s.write_vectored(bufs),
        }
    }

    /// TLS records rustls holds go to the socket (nothing to do for the others).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush_tls(),
            Stream::Tcp(_) | Stream::Unix(_) => Ok(()),
        }
    }
}

impl Stream {
    /// The socket inside, for registering with the poller.
    fn socket(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
            Stream::Tls(s) => &mut s.sock,
        }
    }
}

source_via_socket!(Stream);

impl std::os::fd::AsRawFd for Stream {
    /// The socket's descriptor (below TLS, for a TLS stream).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.sock.as_raw_fd(),
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

/// What one read came to, as the caller of [`read_within`] handled it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Bytes came and were used: read again.
    Got,
    /// Fewer bytes came than there was room for: the socket was empty at that
    /// moment, and bytes arriving later raise a new edge. Ends the loop as
    /// `WouldBlock` would, one syscall sooner (see `Server::read`).
    Drained,
    /// End of file (the peer closed its side, a pipe's writer exited).
    Eof,
    /// The caller wants no more now (paused, or nothing left to read).
    Stop,
}

/// Why [`read_within`] stopped.
#[derive(Debug)]
pub enum ReadEnd {
    /// `WouldBlock`: everything there was is read; the next edge brings more.
    WouldBlock,
    Eof,
    Stopped,
    Failed(io::Error),
    /// The budget ran out with more perhaps waiting: no new edge will come for
    /// it, so the caller must come back (a revisit) or lose it.
    Budget,
}

/// The one budgeted read loop (sockets, child pipes, the UDP socket): calls
/// `read` until `WouldBlock` or a short read that says the same (edge-triggered
/// readiness fires once per arrival, so stopping early would strand bytes), end of file, a stop, a fatal error,
/// or `budget` reads (fairness: the others get their turn). Interrupted reads
/// are retried within the budget.
pub fn read_within(budget: usize, mut read: impl FnMut() -> io::Result<Step>) -> ReadEnd {
    for _ in 0..budget {
        match read() {
            Ok(Step::Got) => {}
            Ok(Step::Drained) => return ReadEnd::WouldBlock,
            Ok(Step::Eof) => return ReadEnd::Eof,
            Ok(Step::Stop) => return ReadEnd::Stopped,
            Err(e) => match classify(&e) {
                IoClass::WouldBlock => return ReadEnd::WouldBlock,
                IoClass::Retry => {}
                IoClass::Fatal => return ReadEnd::Failed(e),
            },
        }
    }
    ReadEnd::Budget
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
