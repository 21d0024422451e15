//! Carrying out chat pushes: each frame queued on the connections it goes to,
//! slow consumers closed, never waited for.

use super::Server;
use crate::conn::Pushed;
use crate::reactor::Reactor;
use std::rc::Rc;

impl Server {
    /// Carries out the pushes the services queued. Returns how many were queued
    /// on connections.
    pub(super) fn send_pushes(&mut self, r: &mut Reactor) -> usize {
        let mut queued = 0;
        while self.services.has_pushes() {
            let mut batch = self.services.take_pushes();
            let mut keys = std::mem::take(&mut self.push_keys);
            for push in batch.drain(..) {
                // Members are looked up now: one closed on the way (a slow
                // consumer) has left and is not pushed to.
                self.services.recipients(&push.to, &mut keys);
                for &to in &keys {
                    queued += usize::from(self.push_to(r, to, &push.frame));
                }
            }
            self.push_keys = keys;
            // A slow member closed on the way queued `left` pushes: go round again.
            self.services.return_pushes(batch);
        }
        queued
    }

    /// Queues one push. A member over `--max-outbuf` is written to at once first
    /// (what it owes may have been queued this very turn); only if it is still
    /// over is it a slow consumer. A push is queued whole, so a member's output
    /// stays within `--max-outbuf` plus one message.
    fn push_to(&mut self, r: &mut Reactor, to: usize, frame: &Rc<[u8]>) -> bool {
        let max = self.rules.max_outbuf;
        if self
            .conns
            .get(to)
            .is_some_and(|s| s.conn.out.mem_len() > max)
        {
            self.write_out(r, to);
        }
        let Some(slot) = self.conns.get_mut(to) else {
            return false;
        };
        let pushed = slot.conn.push(&mut self.services, frame);
        if pushed == Pushed::SlowConsumer {
            let pending = slot.conn.out.mem_len();
            log::warn!(
                "{}: slow consumer ({pending} B unsent), disconnecting",
                slot.peer
            );
        }
        self.touch(to);
        pushed == Pushed::Queued
    }
}
