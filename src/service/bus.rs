//! The services' side of the chat bus (contract section 12): what Redis
//! says, handed to chat, and its answers matched to the ops waiting for them
//! (a `join`'s subscription, a `dm`'s count of receivers).

use super::chat::AwaitedOp;
use super::{Services, Session};
use crate::bus::{Event, Node, Ticket};
use crate::outbuf::OutBuf;

impl Services {
    /// Chat goes through the bus whose node this is (`--bus`).
    pub fn use_bus(&mut self, node: Node) {
        self.chat.use_bus(node);
    }

    /// Chat is served across the servers: the bus is up, and subscribed again
    /// to everything here.
    pub fn bus_usable(&self) -> bool {
        self.chat.check_bus().is_ok()
    }

    /// The bus's node, for the server to move its bytes (`None`: no bus).
    pub fn bus_node(&mut self) -> Option<&mut Node> {
        self.chat.bus_node()
    }

    /// Something the bus said. An answer readies the connection waiting for
    /// it ([`Services::pool_ready`] names it).
    pub fn bus_event(&mut self, event: Event) {
        match event {
            Event::Answer { ticket, .. } if self.chat.bus_synced(ticket) => {}
            Event::Answer { ticket, .. } if self.chat.barrier(ticket) => {}
            Event::Answer { ticket, count } => self.answer(ticket, Some(count)),
            event => self.chat.bus_event(event),
        }
    }

    /// The bus is lost: chat ops answer 503 until it is up again, and those
    /// waiting for it are answered 503 now.
    pub fn bus_lost(&mut self) {
        for ticket in self.chat.bus_lost() {
            self.answer(ticket, None);
        }
    }

    /// An answer to `ticket` (`None`: none will come). The op resumes with
    /// the last count once every answer it waits for is in.
    fn answer(&mut self, ticket: Ticket, count: Option<i64>) {
        let Some((key, left)) = self.bus_waits.get_mut(&ticket) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 || count.is_none() {
            let key = *key;
            self.bus_waits.remove(&ticket);
            self.bus_answers.insert(ticket, count);
            self.ready.push(key);
        }
    }

    /// The answer a chat op waited for (`None`: the bus was lost first).
    pub(super) fn bus_done(
        &mut self,
        session: &mut Session,
        out: &mut OutBuf,
        id: Option<u64>,
        op: AwaitedOp,
        count: Option<i64>,
    ) {
        let user = session.user.as_deref().unwrap_or_default();
        let result = match (op, count) {
            (AwaitedOp::Dm(to), Some(0)) => Err(super::chat::not_online(&to)),
            (_, Some(_)) => Ok(()),
            (AwaitedOp::Join(room), None) => {
                self.chat.undo_join(&mut session.chat, user, &room);
                Err(super::chat::unavailable())
            }
            (AwaitedOp::Dm(_), None) => Err(super::chat::unavailable()),
        };
        self.finish(out, id, result.map(|()| super::ops::Reply::Empty));
    }
}
