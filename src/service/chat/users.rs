//! Who is online here (contract section 7): logins that can receive `dm`s,
//! counted against `--max-conns-per-user` on every worker together, and the
//! pushes a `dm` queues for a user's connections.

use super::{Chat, Member, Push, Recipients, refused};
use crate::bus::Channel;
use crate::service::ops::OpError;
use std::rc::Rc;

pub fn not_online(user: &str) -> OpError {
    refused(404, format!("{user} has no open connection"))
}

impl Chat {
    /// The connection authenticated as `user`: it can now receive `dm`s. False
    /// (and not counted) when the user already has `max` connections logged in
    /// (`--max-conns-per-user`, 0: no limit), on every worker together.
    pub fn online(&mut self, member: &mut Member, user: &str, max: usize) -> bool {
        if member.online {
            return true;
        }
        let admitted = match &self.link {
            Some((hub, me)) => hub.login(*me, user, max),
            None => max == 0 || self.users.get(user).map_or(0, Vec::len) < max,
        };
        if admitted {
            member.online = true;
            let conns = self.users.entry(Rc::from(user)).or_default();
            conns.push(member.key);
            if conns.len() == 1 {
                self.bus_subscribe(Channel::User(user), None);
            }
        }
        admitted
    }

    pub(super) fn check_online(&self, to: &str) -> Result<(), OpError> {
        if self.online_here(to) {
            Ok(())
        } else {
            Err(not_online(to))
        }
    }

    /// Queues `frame` for every connection of `user` on this worker but `except`.
    pub(super) fn push_user(&mut self, user: &str, except: usize, frame: &Rc<[u8]>) {
        let to = self.users.get(user).map(Vec::as_slice).unwrap_or_default();
        self.pushes
            .extend(to.iter().filter(|&&k| k != except).map(|&to| Push {
                to: Recipients::Conn(to),
                frame: Rc::clone(frame),
            }));
    }
}
