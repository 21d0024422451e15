//! Chat across the workers of one server (contract section 12): the hub
//! carries pushes between them, and knows who is online on any of them.
//! With the bus, pushes cross through Redis instead (`bus.rs`).

use super::{Chat, NOBODY};
use crate::hub::{Delivery, Hub, To};
use std::rc::Rc;
use std::sync::Arc;

impl Chat {
    /// This worker is worker `me` of several, which meet at `hub`.
    pub fn link(&mut self, hub: Arc<Hub>, me: usize) {
        self.link = Some((hub, me));
    }

    /// The hub, when pushes cross workers through it (not with the bus,
    /// which carries them to every worker itself).
    pub(super) fn hub(&self) -> Option<(&Hub, usize)> {
        match (&self.link, &self.bus) {
            (Some((hub, me)), None) => Some((hub, *me)),
            _ => None,
        }
    }

    /// Whether `user` has a connection on this server (any worker).
    pub(super) fn online_here(&self, user: &str) -> bool {
        match &self.link {
            Some((hub, _)) => hub.is_online(user),
            None => self.users.get(user).is_some_and(|c| !c.is_empty()),
        }
    }

    /// A push another worker posted: queued for this worker's members of its
    /// room, or connections of its user, all sharing one copy of the frame.
    pub fn deliver(&mut self, Delivery { to, frame }: Delivery) {
        match to {
            To::Room(room) => self.push_room_here(&room, Rc::from(&*frame)),
            To::User(user) => self.push_user(&user, NOBODY, &Rc::from(&*frame)),
        }
    }
}
