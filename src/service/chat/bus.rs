//! Chat across servers (contract section 12): with `--bus`, this worker
//! subscribes to the Redis channels of its rooms and users while they have
//! connections here, publishes what its members say, and delivers what
//! comes in. The bus [`Node`] is pure code; the server moves its bytes.

use super::{Chat, Member, NOBODY, Push, Recipients};
use crate::bus::{Channel, Event, Node, Ticket};
use crate::service::ops::OpError;
use std::rc::Rc;

/// What an op waits for on the bus: `answers` replies from Redis to `ticket`
/// (a subscription confirmed, a publish counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awaited {
    pub ticket: Ticket,
    pub answers: u32,
}

/// The bus as chat sees it: the node and the tickets it hands out.
#[derive(Debug)]
pub(super) struct Bus {
    pub(super) node: Node,
    next_ticket: Ticket,
}

impl Bus {
    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        self.next_ticket
    }
}

/// What chat ops answer while the bus is lost.
pub fn unavailable() -> OpError {
    OpError {
        status: 503,
        message: "bus unavailable".into(),
    }
}

impl Chat {
    /// Chat goes through the bus from now on (down until [`Event::Up`]).
    pub fn use_bus(&mut self, mut node: Node) {
        node.restart();
        self.bus = Some(Bus {
            node,
            next_ticket: 0,
        });
    }

    /// The bus's node, for the server to move its bytes.
    pub fn bus_node(&mut self) -> Option<&mut Node> {
        self.bus.as_mut().map(|b| &mut b.node)
    }

    /// The node, while the bus is up.
    pub(super) fn up_node(&mut self) -> Option<&mut Bus> {
        self.bus.as_mut().filter(|b| b.node.is_up())
    }

    /// 503 while the bus is lost; chat ops are refused then.
    pub fn check_bus(&self) -> Result<(), OpError> {
        match &self.bus {
            Some(b) if !b.node.is_up() => Err(unavailable()),
            _ => Ok(()),
        }
    }

    /// The bus was lost (or is being made again): the tickets that will not be
    /// answered now.
    pub fn bus_lost(&mut self) -> Vec<Ticket> {
        self.bus
            .as_mut()
            .map(|b| b.node.restart())
            .unwrap_or_default()
    }

    /// A ticket for an op to wait on, while the bus is up.
    pub(super) fn bus_ticket(&mut self) -> Option<Ticket> {
        self.up_node().map(Bus::ticket)
    }

    /// Subscribes to `channel` (a room's first member, a user's first
    /// connection here); `ticket`: someone waits for the confirmation.
    pub(super) fn bus_subscribe(&mut self, channel: Channel, ticket: Option<Ticket>) {
        if let Some(bus) = self.up_node() {
            bus.node.subscribe(channel, ticket);
        }
    }

    pub(super) fn bus_unsubscribe(&mut self, channel: Channel) {
        if let Some(bus) = self.up_node() {
            bus.node.unsubscribe(channel);
        }
    }

    /// Publishes a push; `ticket`: someone waits for the count of receivers.
    pub(super) fn bus_publish(&mut self, channel: Channel, frame: &[u8], ticket: Option<Ticket>) {
        if let Some(bus) = self.up_node() {
            bus.node.publish(channel, frame, ticket);
        }
    }

    /// What the bus said, but answers (which the services match to their
    /// waiters): on `Up`, subscribing again to every room and user here; a
    /// message, queued for the members or connections here.
    pub fn bus_event(&mut self, event: Event) {
        match event {
            Event::Up => {
                let rooms: Vec<Rc<str>> = self.rooms.keys().cloned().collect();
                let users: Vec<Rc<str>> = self.users.keys().cloned().collect();
                for room in rooms {
                    self.bus_subscribe(Channel::Room(&room), None);
                }
                for user in users {
                    self.bus_subscribe(Channel::User(&user), None);
                }
            }
            Event::Message { room, name, frame } => {
                let frame: Rc<[u8]> = frame.into();
                if room {
                    if let Some((room, _)) = self.rooms.get_key_value(&*name) {
                        let room = Rc::clone(room);
                        self.pushes.push(Push {
                            to: Recipients::Room {
                                room,
                                except: NOBODY,
                            },
                            frame,
                        });
                    }
                } else {
                    self.push_user(&name, NOBODY, &frame);
                }
            }
            Event::Answer { .. } => {}
        }
    }

    /// `member` leaves `room` after its subscription failed (the bus was lost
    /// before Redis confirmed it).
    pub fn undo_join(&mut self, member: &mut Member, user: &str, room: &str) {
        if let Some(i) = member.rooms.iter().position(|r| **r == *room) {
            let name = member.rooms.swap_remove(i);
            self.part(member.key, &name, user);
        }
    }
}
