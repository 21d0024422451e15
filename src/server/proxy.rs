//! `--proxy-protocol`: a connection's PROXY header read off its socket before
//! anything else (TLS included), the client's address in it admitted and
//! logged, then the greeting. The header is peeked, and only its own bytes
//! are taken, so what follows stays in the kernel for the usual reads.

use super::Server;
use crate::conn::Reading;
use crate::net::{IoClass, Peer, classify};
use crate::proto::proxy;
use crate::reactor::{Reactor, TRACE};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// `recv(2)` into `buf`; with `MSG_PEEK` the bytes stay queued.
fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and `fd` is the
        // connection's open socket for the duration of the call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
        match usize::try_from(n) {
            Ok(n) => return Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                if classify(&e) != IoClass::Retry {
                    return Err(e);
                }
            }
        }
    }
}

/// Whether the peer has shut down its side (or the socket failed): asked only
/// of an unfinished header, whose bytes a peek keeps showing ahead of the EOF.
fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

impl Server {
    /// A connection waiting for its PROXY header looks at what has come. True
    /// when it may read on: it was not waiting, or its header was just taken
    /// and it was greeted (what followed the header is read next). False while
    /// the header is unfinished (the next bytes raise a new edge), or once it
    /// is closed (a bad header, the peer gone).
    pub(super) fn proxy_header(&mut self, r: &mut Reactor, key: usize) -> bool {
        let now = r.now();
        let Some(slot) = self.conns.get_mut(key) else {
            return false;
        };
        if slot.conn.reading() != Reading::Proxy {
            return true;
        }
        let fd = slot.stream.as_raw_fd();
        let buf = self.scratch.get_mut(..proxy::MAX_LEN).unwrap_or_default();
        let n = match recv(fd, buf, libc::MSG_PEEK) {
            Ok(0) => {
                slot.conn.peer_closed(&mut self.services, now);
                return false;
            }
            Ok(n) => n,
            Err(e) if classify(&e) == IoClass::WouldBlock => return false,
            Err(_) => {
                slot.conn.close(&mut self.services, "read error");
                return false;
            }
        };
        let peeked = buf.get(..n).unwrap_or_default();
        let Some((len, source)) = slot.conn.proxy_header(&mut self.services, peeked, now) else {
            if slot.conn.is_closed() {
                log::info!("{}: closed, not a PROXY header", slot.peer);
                // Taken, so the close is a FIN: unread input would make it a reset.
                let _ = recv(fd, buf, libc::MSG_DONTWAIT);
            } else if hung_up(fd) {
                // A peek sees the same bytes again, never the EOF behind them.
                let _ = recv(fd, buf, libc::MSG_DONTWAIT);
                slot.conn.peer_closed(&mut self.services, now);
            }
            return false;
        };
        // Peeked, so queued: this takes exactly the header, all of it.
        let taken = buf.get_mut(..len).map(|header| recv(fd, header, 0));
        if !matches!(taken, Some(Ok(got)) if got == len) {
            slot.conn.close(&mut self.services, "read error");
            return false;
        }
        self.services.stats.read(len);
        let via = std::mem::take(&mut slot.peer);
        // A health check (v2 LOCAL) or an unknown family: the socket's own peer.
        if let Some(client) = source {
            slot.peer = client.to_string();
            slot.ip = Some(client.ip());
        } else {
            slot.peer.clone_from(&via);
        }
        let label = super::Source::Conn(key).token().0;
        log::trace!(target: TRACE, "  conn {label}: PROXY header of {len} B, client {}", slot.peer);
        let peer = Peer {
            name: slot.peer.clone(),
            ip: slot.ip,
        };
        // Its place in line was taken at accept; now the rest of its places.
        let served = match self.take_places(&peer) {
            Ok(()) => true,
            Err(why) => {
                log::debug!("{}: refused, {}", peer.name, why.reason());
                false
            }
        };
        if let Some(slot) = self.conns.get_mut(key) {
            slot.conn.greet(&mut self.services, served);
        }
        self.opened(key, served, Some(&via));
        true
    }
}
