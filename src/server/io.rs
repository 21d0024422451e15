//! A connection's socket I/O: reading into the machine (one budgeted loop for
//! requests, read-ahead and draining), watching its exec child, and settling it
//! at the end of the turn (write, interest, timer, revisit, free).

use super::{Server, Slot, Source};
use crate::config::tuning;
use crate::conn::Reading;
use crate::net::{self, ReadEnd, Step};
use crate::reactor::{Reactor, TRACE};
use crate::tls::TlsStream;
use mio::Interest;
use mio::unix::SourceFd;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;

/// Corks a TCP connection while a file body is pending and uncorks it once the
/// body is out. Corked, each `sendfile` fills whole segments instead of pushing
/// a short one at the end of every call (nginx's `tcp_nopush`; measured on
/// loopback: about 15% less server CPU per GiB of `get`). Uncorking pushes the
/// tail at once, so the end of a body and the replies behind it are not delayed.
fn cork_for_files(slot: &mut Slot) {
    let want = slot.conn.out.has_file();
    if want != slot.corked && slot.stream.set_cork(want).is_ok() {
        slot.corked = want;
    }
}

impl Server {
    /// The socket is readable (or a revisit came): stashed input first, then the
    /// socket, until `WouldBlock` (edge-triggered readiness fires once per
    /// arrival, so stopping early would strand bytes), within a per-turn budget
    /// (fairness).
    ///
    /// With `short_read_ends`, a TCP read that fills less than its buffer ends
    /// the loop too: the socket was empty at that moment, and any byte that
    /// arrives later raises a new edge (epoll(7) says as much of stream
    /// sockets). That saves the read that would say `WouldBlock`, one syscall
    /// in three at pipeline 1. It holds only for a fresh event that reported no
    /// hang-up, error or urgent data (`Readiness::read_all`): a FIN that came
    /// with the data raises no later edge, nor does the rest of the stream
    /// behind an urgent mark, where a read also stops. Never on a revisit
    /// (no event behind it), nor on a Unix socket (`Stream::short_read_drains`).
    pub(super) fn read(&mut self, r: &mut Reactor, key: usize, short_read_ends: bool) {
        self.visit_pushes = 0;
        self.touch(key);
        // Behind a proxy the PROXY header comes first, below TLS too.
        let proxied = self.config.proxy_protocol;
        if (proxied && !self.proxy_header(r, key)) || !self.handshake(r, key) {
            return;
        }
        let serves = |s: &Slot| s.conn.has_stash() && s.conn.reading() == Reading::Requests;
        if self.conns.get(key).is_some_and(serves) {
            self.feed(r, key, None);
            if self.conns.get(key).is_some_and(|s| s.conn.has_stash()) {
                return; // paused again: the rest of the input waits in the kernel
            }
        }
        // Each chunk is served as it is read (`read_once` hands it to the machine
        // before the next read); a machine that stops taking input ends the loop.
        let mut scratch = std::mem::take(&mut self.scratch);
        let end = net::read_within(tuning::READS_PER_TURN, || {
            self.read_once(r, key, &mut scratch, short_read_ends)
        });
        self.scratch = scratch;
        let now = r.now();
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        match end {
            // The socket may hold more, and no new edge will come for those
            // bytes: come back next turn, after the others.
            ReadEnd::Budget => r.revisit(Source::Conn(key).token()),
            ReadEnd::Eof => {
                log::trace!(target: TRACE, "  conn {}: read 0 B (peer closed its side)", Source::Conn(key).token().0);
                slot.conn.peer_closed(&mut self.services, now);
            }
            ReadEnd::Failed(e) => self.read_failed(now, key, e),
            ReadEnd::WouldBlock | ReadEnd::Stopped => {}
        }
    }

    /// A TLS handshake moves on whatever the machine's state: a connection that
    /// reads no requests (refused with 503, flushing) still owes its output,
    /// which waits for the handshake. False when there is nothing more to read
    /// now (the handshake waits for the peer, or the connection ended).
    fn handshake(&mut self, r: &mut Reactor, key: usize) -> bool {
        let Some(slot) = self.conns.get_mut(key) else {
            return false;
        };
        let Some(tls) = slot.stream.tls_mut() else {
            return true;
        };
        for _ in 0..tuning::READS_PER_TURN {
            if !tls.is_handshaking() {
                return true;
            }
            match tls.handshake_step() {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    self.read_failed(r.now(), key, e);
                    return false;
                }
            }
        }
        r.revisit(Source::Conn(key).token());
        false
    }

    /// A read ended in an error: the peer's FIN (`UnexpectedEof`), a TLS error
    /// (counted), or a broken socket.
    fn read_failed(&mut self, now: std::time::Instant, key: usize, e: io::Error) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if e.kind() == io::ErrorKind::UnexpectedEof {
            slot.conn.peer_closed(&mut self.services, now);
        } else if crate::tls::is_tls_error(&e) {
            // A failed TLS handshake (plain frames or garbage on the TLS port)
            // or a bad record: counted apart from peers that just went away.
            self.services.stats.tls_failed();
            log::debug!("{}: TLS: {e}", slot.peer);
            slot.conn.close(&mut self.services, "TLS error");
        } else {
            slot.conn.close(&mut self.services, "read error");
        }
    }

    /// One `read` into the machine, as its state wants.
    fn read_once(
        &mut self,
        r: &mut Reactor,
        key: usize,
        scratch: &mut [u8],
        short_read_ends: bool,
    ) -> io::Result<Step> {
        let Some(slot) = self.conns.get_mut(key) else {
            return Ok(Step::Stop);
        };
        let reading = slot.conn.reading();
        let buf = match reading {
            Reading::Not | Reading::Proxy => return Ok(Step::Stop),
            Reading::Requests | Reading::Discard => scratch,
            Reading::Ahead(room) => {
                let room = room.min(scratch.len());
                scratch.get_mut(..room).unwrap_or_default()
            }
        };
        let room = buf.len();
        let drains = short_read_ends && slot.stream.short_read_drains();
        let n = slot.stream.read(buf)?;
        if n == 0 {
            return Ok(Step::Eof);
        }
        log::trace!(target: TRACE, "  conn {}: read {n} B", Source::Conn(key).token().0);
        self.services.stats.read(n);
        let input = buf.get(..n).unwrap_or_default();
        match reading {
            Reading::Requests => {
                let used = self.feed(r, key, Some(input));
                if used < n {
                    // Paused mid-buffer: keep the rest for when it resumes.
                    if let Some(slot) = self.conns.get_mut(key) {
                        slot.conn.keep_input(input.get(used..).unwrap_or_default());
                    }
                    return Ok(Step::Stop);
                }
            }
            Reading::Ahead(_) => slot.conn.keep_input(input),
            Reading::Discard | Reading::Not | Reading::Proxy => {}
        }
        Ok(if drains && n < room {
            Step::Drained
        } else {
            Step::Got
        })
    }

    /// Hands input (or, with `None`, the stash) to the machine, carrying out the
    /// chat pushes of each frame before the next frame is served. Returns the
    /// bytes of `input` used.
    fn feed(&mut self, r: &mut Reactor, key: usize, input: Option<&[u8]>) -> usize {
        let mut used = 0;
        loop {
            let Some(slot) = self.conns.get_mut(key) else {
                return input.map_or(0, <[u8]>::len);
            };
            let rest = input.map(|i| i.get(used..).unwrap_or_default());
            used += slot.conn.receive(&mut self.services, rest, r.now());
            if let Some(fds) = slot.conn.take_watch() {
                self.watch_child(r, key, fds);
            }
            if !self.services.has_pushes() {
                return used;
            }
            self.visit_pushes += self.send_pushes(r);
            let Some(slot) = self.conns.get_mut(key) else {
                return used;
            };
            if self.visit_pushes > tuning::PUSHES_PER_VISIT {
                // One `say` costs a push per member: a sender pipelining into a big
                // room pauses until the end of the turn has written them (fairness,
                // and bounded memory).
                slot.conn.pause_for_pushes();
            }
            let done = match input {
                Some(i) => used >= i.len(),
                None => !slot.conn.has_stash(),
            };
            if done {
                return used;
            }
        }
    }

    /// Registers an exec child's descriptors under the connection's child token.
    fn watch_child(&mut self, r: &mut Reactor, key: usize, fds: [RawFd; 3]) {
        let token = Source::Child(key).token();
        let watched = fds
            .iter()
            .filter(|fd| **fd >= 0)
            .try_for_each(|fd| r.register(&mut SourceFd(fd), token, Interest::READABLE));
        if let (Err(e), Some(slot)) = (watched, self.conns.get_mut(key)) {
            log::error!("{}: cannot watch an exec child: {e}", slot.peer);
            slot.conn.close(&mut self.services, "server fault");
        }
    }

    /// The exec child's descriptors are ready, or the job's turn came.
    pub(super) fn resume(&mut self, r: &mut Reactor, key: usize) {
        if let Some(slot) = self.conns.get_mut(key) {
            slot.conn.resume(&mut self.services, r.now());
            self.touch(key);
        }
    }

    /// Writes what the connection owes and tells the machine; shuts the write side
    /// down when it asks.
    pub(super) fn write_out(&mut self, r: &mut Reactor, key: usize) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if slot.conn.is_closed() {
            return;
        }
        let mut n = 0;
        if !slot.conn.out.is_empty() {
            cork_for_files(slot);
            match slot
                .conn
                .out
                .write_to(&mut slot.stream, tuning::FILE_SEND_PER_TURN)
            {
                Ok(done) => {
                    cork_for_files(slot);
                    n = done.bytes;
                    log::trace!(target: TRACE, "  conn {}: wrote {n} B, {} B pending", Source::Conn(key).token().0, slot.conn.out.len());
                    if !done.blocked && !slot.conn.out.is_empty() {
                        // Stopped by the per-turn file budget, not a full socket: no
                        // writable edge will come, so come back next turn.
                        r.revisit(Source::Conn(key).token());
                    }
                }
                Err(_) => return slot.conn.close(&mut self.services, "write error"),
            }
        } else if slot.stream.tls().is_some_and(TlsStream::wants_write) {
            // TLS records with nothing behind them in the output (the handshake's,
            // or what the connection's last write left in rustls).
            if slot.stream.flush().is_err() {
                return slot.conn.close(&mut self.services, "write error");
            }
        }
        self.services.stats.wrote(n);
        self.services.stats.frames_out(slot.conn.out.take_frames());
        let held_below = slot.stream.tls().is_some_and(TlsStream::holds_output);
        slot.conn
            .written(&mut self.services, n, held_below, r.now());
        if slot.conn.take_shutdown() && slot.stream.shutdown_write().is_err() {
            slot.conn.close(&mut self.services, "shutdown failed");
        }
    }

    /// The end of a connection's turn: write, then apply what the machine wants
    /// now (interest, timer, revisit), or free it once closed.
    pub(super) fn settle(&mut self, r: &mut Reactor, key: usize) {
        self.write_out(r, key);
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        slot.dirty = false;
        Self::recount(&self.team.counts, self.me, slot);
        if slot.conn.is_closed() {
            return self.free(r, key);
        }
        let token = Source::Conn(key).token();
        // Interest follows from state: WRITABLE only while output is left over
        // (the connection's, or TLS records waiting for the socket).
        let tls_pending = slot.stream.tls().is_some_and(TlsStream::wants_write);
        let want = if slot.conn.wants_write() || tls_pending {
            slot.stream.read_interest() | Interest::WRITABLE
        } else {
            slot.stream.read_interest()
        };
        if want != slot.interest {
            if r.reregister(&mut slot.stream, token, want).is_err() {
                slot.conn.close(&mut self.services, "reregister failed");
                return self.free(r, key);
            }
            log::trace!(target: TRACE, "  conn {}: interest {want:?}", token.0);
            slot.interest = want;
        }
        // The timer follows the machine's deadline, lazily: one armed earlier is
        // kept (when it fires, the machine finds nothing due and it is re-armed).
        match (slot.conn.deadline(), slot.timer) {
            (Some(due), Some((_, at))) if at <= due => {}
            (due, old) => {
                if let Some((id, _)) = old {
                    r.cancel_timer(id);
                }
                slot.timer = due.map(|due| (r.add_timer(due, token), due));
            }
        }
        if slot.conn.take_revisit() {
            r.revisit(token);
        }
    }
}
