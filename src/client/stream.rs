//! The client's connection: a TCP, Unix or TLS stream behind one type, so the
//! client speaks the same protocol over each.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The client's connection: TCP or a Unix socket, same protocol.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(super::tls::TlsStream),
}

/// The same call on either kind of socket.
macro_rules! either {
    ($stream:expr, $s:ident => $call:expr) => {
        match $stream {
            Stream::Tcp($s) => $call,
            Stream::Unix($s) => $call,
            Stream::Tls(tls) => {
                let $s = tls.socket();
                $call
            }
        }
    };
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
            // Both halves share one TLS session.
            Stream::Tls(s) => Ok(Stream::Tls(s.clone())),
        }
    }

    /// Over TLS, the channel binding the login's MACs take in (section 3).
    pub fn binding(&self) -> Option<[u8; 32]> {
        match self {
            Stream::Tls(s) => Some(s.binding),
            Stream::Tcp(_) | Stream::Unix(_) => None,
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        either!(self, s => s.set_read_timeout(timeout))
    }

    /// Our TCP address (an error for a Unix socket, which has none worth naming).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr(),
            Stream::Tls(s) => s.socket().local_addr(),
            Stream::Unix(_) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        either!(self, s => s.shutdown(how))
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

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
