//! Shutting down on SIGINT/SIGTERM (stop accepting, close every connection
//! politely, exit when they are gone or the time is up), and freeing a connection.

use super::{Server, Source};
use crate::config::tuning;
use crate::reactor::Reactor;
use mio::Interest;
use mio::unix::SourceFd;
use signal_hook::consts::SIGINT;

impl Server {
    /// SIGINT or SIGTERM arrived (signal-hook's handler wrote to its pipe).
    pub(super) fn signalled(&mut self, r: &mut Reactor) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let caught: Vec<i32> = signals.pending().collect();
        for signal in caught {
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if self.stopping {
                log::warn!("{name} again: exiting now");
                self.abort = true;
                return;
            }
            self.shut_down(r, name);
        }
    }

    /// Stops accepting (the Unix socket file goes with its listener) and closes
    /// every connection politely: what it is owed, a `bye` (reason `shutdown`),
    /// then the close. A request still running (an exec, an upload, a sum) gets
    /// no reply: it is dropped when its connection is freed. The loop ends when
    /// the last connection is gone, or after `SHUTDOWN_LIMIT`.
    fn shut_down(&mut self, r: &mut Reactor, why: &str) {
        self.stopping = true;
        log::info!(
            "{why}: shutting down; {} connection(s) have {:?} to finish (a second signal exits at once)",
            self.conns.len(),
            tuning::SHUTDOWN_LIMIT
        );
        for listener in &mut self.listeners {
            if let Some(mut l) = listener.take() {
                let _ = r.deregister(&mut l);
            }
        }
        if let Some(mut udp) = self.udp.take() {
            let _ = r.deregister(&mut udp.socket);
        }
        if let Some(timer) = self.accept_timer.take() {
            r.cancel_timer(timer);
        }
        let open: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in open {
            if let Some(slot) = self.conns.get_mut(key) {
                let services = &mut self.services;
                slot.conn
                    .close_politely(services, "shutdown", Some("shutdown"), r.now());
            }
            self.touch(key);
        }
        r.add_timer(r.now() + tuning::SHUTDOWN_LIMIT, Source::Signals.token());
    }

    /// The shutdown's time is up (its only timer).
    pub(super) fn shutdown_overdue(&mut self) {
        log::warn!(
            "shutdown: {} connections still open after {:?}; exiting",
            self.conns.len(),
            tuning::SHUTDOWN_LIMIT
        );
        self.abort = true;
    }

    /// Frees a connection: its timer, its registration, its job (a running exec's
    /// child is killed and watched on `Orphans` until reaped), its descriptor.
    pub(super) fn free(&mut self, r: &mut Reactor, key: usize) {
        let Some(mut slot) = self.conns.try_remove(key) else {
            return;
        };
        if let Some((timer, _)) = slot.timer {
            r.cancel_timer(timer);
        }
        let orphans = Source::Orphans.token();
        slot.conn.release(&mut self.services, |pidfd| {
            // Registered under the child token if it was watched, or not at all.
            let mut fd = SourceFd(&pidfd);
            r.reregister(&mut fd, orphans, Interest::READABLE)
                .or_else(|_| r.register(&mut fd, orphans, Interest::READABLE))
                .is_ok()
        });
        // A TLS session ends with close_notify when the socket takes it (a peer
        // that half-closed has all its replies by now).
        if let Some(tls) = slot.stream.tls_mut() {
            tls.close_notify();
        }
        let _ = r.deregister(&mut slot.stream);
        self.count_out(&slot);
        if slot.counted {
            self.services.stats.closed();
            log::info!(
                "close {} ({}), {} open",
                slot.peer,
                slot.conn.close_reason(),
                self.services.stats.conns_open()
            );
        }
        // Dropping the stream closes the descriptor.
    }
}
