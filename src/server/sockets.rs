//! The sockets a server listens on, bound for each of its workers. One worker
//! binds them as a lone server always has. Several each bind their own on the
//! same addresses with SO_REUSEPORT (as nginx's `reuseport`: the kernel spreads
//! new connections and datagrams over them, and no worker waits on another's
//! accept), and share the one Unix socket. Also: the addresses bound.

use super::source::{TCP, TLS};
use super::{Server, context};
use crate::config::Config;
use crate::net::{self, Listener};
use crate::proto::Limits;
use crate::tls::Tls;
use crate::udp::Udp;
use mio::net::{TcpListener, UdpSocket};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

/// What one worker listens on.
pub struct Sockets {
    /// At `TCP`, 1 (Unix) and `TLS`; `None` when not on.
    pub(super) listeners: Vec<Option<Listener>>,
    pub(super) tls: Option<Tls>,
    pub(super) udp: Option<Udp>,
}

impl Server {
    /// The TCP listener's address (the port, when port 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.listeners.get(TCP) {
            Some(Some(Listener::Tcp(l))) => l.local_addr(),
            _ => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// The TLS listener's address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        match self.listeners.get(TLS) {
            Some(Some(Listener::Tcp(l))) => l.local_addr().ok(),
            _ => None,
        }
    }

    /// The UDP socket's address, when UDP is on.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|u| u.socket.local_addr().ok())
    }
}

/// Binds every worker's sockets (`udp_limits`: the decoder limits datagrams are
/// read with). Errors say which address failed.
pub fn bind(config: &Config, udp_limits: Limits) -> io::Result<Vec<Sockets>> {
    let workers = config.workers.max(1);
    let tcp = bind_tcp(config.listen, workers)
        .map_err(|e| context(e, format!("cannot listen on {}", config.listen)))?;
    let unix = match &config.unix {
        Some(path) => Some(net::bind_unix(path).map_err(|e| {
            let what = format!("cannot listen on Unix socket {}", path.display());
            context(e, what)
        })?),
        None => None,
    };
    let (tls_tcp, tls) = match config.tls_listen {
        Some(addr) => {
            let (tls, cert) = Tls::load(
                config.tls_cert.as_deref(),
                config.tls_key.as_deref(),
                &config.data_dir,
            )
            .map_err(io::Error::other)?;
            log::info!(
                "TLS certificate {} (SHA-256 fingerprint {})",
                cert.display(),
                tls.fingerprint()
            );
            let listeners = bind_tcp(addr, workers)
                .map_err(|e| context(e, format!("cannot listen on {addr} (--tls-listen)")))?;
            (listeners, Some(tls))
        }
        None => (Vec::new(), None),
    };
    let udp = match config.udp {
        Some(addr) => bind_udp(addr, workers).map_err(|e| {
            context(
                e,
                format!("cannot bind UDP {addr} (--udp ADDR, or --udp off)"),
            )
        })?,
        None => Vec::new(),
    };
    let mut tcp = tcp.into_iter();
    let mut tls_tcp = tls_tcp.into_iter();
    let mut udp = udp.into_iter();
    let mut unix = unix;
    let mut all = Vec::with_capacity(workers);
    for worker in 0..workers {
        // The last worker takes the listener itself; the others a duplicate.
        let unix = match &unix {
            Some(_) if worker + 1 == workers => unix.take(),
            Some(l) => Some(share_unix(l)?),
            None => None,
        };
        all.push(Sockets {
            listeners: vec![
                tcp.next().map(Listener::Tcp),
                unix,
                tls_tcp.next().map(Listener::Tcp),
            ],
            tls: tls.clone(),
            udp: udp.next().map(|s| Udp::new(s, udp_limits)),
        });
    }
    Ok(all)
}

/// A listening socket on `addr` for each worker. Several: `addr` is first
/// bound plainly, so an address in use (by any other server) fails as it
/// would for one, and port 0 picks the port they all take.
fn bind_tcp(addr: SocketAddr, workers: usize) -> io::Result<Vec<TcpListener>> {
    // mio sets SO_REUSEADDR, so a restart right after a stop binds at once.
    let first = TcpListener::bind(addr)?;
    if workers == 1 {
        return Ok(vec![first]);
    }
    let addr = first.local_addr()?;
    drop(first);
    (0..workers)
        .map(|_| {
            let s = reuse_port(addr, Type::STREAM)?;
            s.listen(1024)?;
            Ok(TcpListener::from_std(s.into()))
        })
        .collect()
}

/// A UDP socket on `addr` for each worker (see [`bind_tcp`]).
fn bind_udp(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let first = UdpSocket::bind(addr)?;
    if workers == 1 {
        return Ok(vec![first]);
    }
    let addr = first.local_addr()?;
    drop(first);
    (0..workers)
        .map(|_| Ok(UdpSocket::from_std(reuse_port(addr, Type::DGRAM)?.into())))
        .collect()
}

/// A non-blocking socket bound to `addr` with SO_REUSEPORT (and SO_REUSEADDR).
fn reuse_port(addr: SocketAddr, kind: Type) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), kind, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// The Unix listener for one more worker: the same socket (a duplicate of its
/// descriptor, each worker's poller watching it); the file goes with the last.
fn share_unix(l: &Listener) -> io::Result<Listener> {
    let Listener::Unix(l, path) = l else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let fd = l.as_fd().try_clone_to_owned()?;
    let std = std::os::unix::net::UnixListener::from(fd);
    Ok(Listener::Unix(
        mio::net::UnixListener::from_std(std),
        std::sync::Arc::clone(path),
    ))
}
