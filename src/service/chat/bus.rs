//! Chat across servers (contract section 12): with `--bus`, this worker
//! subscribes to the Redis channels of its rooms and users while they have
//! connections here, publishes what its members say, and delivers what
//! comes in. The bus [`Node`] is pure code; the server moves its bytes.

use super::frames::membership;
use super::{Chat, Member, NOBODY};
use crate::bus::{Channel, Event, Node, Ticket};
use crate::service::ops::OpError;
use std::rc::Rc;

/// What an op waits for on the bus: `answers` replies from Redis to `ticket`
/// (a subscription confirmed, a publish counted), for its `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awaited {
    pub ticket: Ticket,
    pub answers: u32,
    pub op: AwaitedOp,
}

/// The op waiting, and what its answer depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwaitedOp {
    /// A join of this room: undone if the bus is lost first.
    Join(Rc<str>),
    /// A `dm` to this user: Redis's count of receivers 0 is a 404.
    Dm(String),
}

/// A member joining through the bus, until its barrier is answered.
#[derive(Debug)]
pub(super) struct Joining {
    pub(super) room: Rc<str>,
    pub(super) key: usize,
    user: Box<str>,
    /// The PING's ticket, and the join's (which waits for the `joined`).
    barrier: Ticket,
    join: Ticket,
}

/// The bus as chat sees it: the node and the tickets it hands out.
#[derive(Debug)]
pub(super) struct Bus {
    pub(super) node: Node,
    next_ticket: Ticket,
    /// Subscribed again to everything here since the bus came (back) up:
    /// chat is served only then. `syncing`: the PING whose answer says so.
    synced: bool,
    syncing: Option<Ticket>,
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
            synced: false,
            syncing: None,
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

    /// 503 while the bus is lost, or back but not yet subscribed again to
    /// everything here; chat ops are refused then.
    pub fn check_bus(&self) -> Result<(), OpError> {
        match &self.bus {
            Some(b) if !(b.node.is_up() && b.synced) => Err(unavailable()),
            _ => Ok(()),
        }
    }

    /// The bus was lost (or is being made again): the tickets that will not be
    /// answered now, the joins still at their barrier's included.
    pub fn bus_lost(&mut self) -> Vec<Ticket> {
        let Some(bus) = &mut self.bus else {
            return Vec::new();
        };
        bus.synced = false;
        bus.syncing = None;
        let mut lost = bus.node.restart();
        lost.extend(self.joining.iter().map(|j| j.join));
        lost
    }

    /// Whether `ticket` is the answer that ends the subscribing again after
    /// the bus came up (chat is served from now on).
    pub fn bus_synced(&mut self, ticket: Ticket) -> bool {
        match &mut self.bus {
            Some(bus) if bus.syncing == Some(ticket) => {
                bus.syncing = None;
                bus.synced = true;
                true
            }
            _ => false,
        }
    }

    /// A join with the bus. The member waits in `joining`, hearing nothing of
    /// the room and said to nobody, until Redis answers a PING sent on the
    /// subscribed connection after the room's subscription (its first member
    /// here): what Redis delivers before that answer was said before the
    /// join. Then it is a member, and its `joined` is said ([`Chat::barrier`]);
    /// the join's 200 waits for that publish to be counted.
    pub(super) fn join_on_bus(
        &mut self,
        member: &mut Member,
        user: &str,
        name: Rc<str>,
        ticket: Ticket,
    ) -> Awaited {
        let mut answers = 1; // the `joined`, said at the barrier
        if !self.here(&name) {
            self.bus_subscribe(Channel::Room(&name), Some(ticket));
            answers += 1;
        }
        if let Some(bus) = self.up_node() {
            let barrier = bus.ticket();
            bus.node.barrier(barrier);
            self.joining.push(Joining {
                room: Rc::clone(&name),
                key: member.key,
                user: user.into(),
                barrier,
                join: ticket,
            });
        }
        member.rooms.push(Rc::clone(&name));
        Awaited {
            ticket,
            answers,
            op: AwaitedOp::Join(name),
        }
    }

    /// Whether `ticket` is a joining member's barrier. If so, that member
    /// hears the room from now on (the caller has carried out every push
    /// queued before), and its `joined` is said, counted for its join.
    pub fn barrier(&mut self, ticket: Ticket) -> bool {
        let Some(i) = self.joining.iter().position(|j| j.barrier == ticket) else {
            return false;
        };
        let j = self.joining.swap_remove(i);
        self.rooms
            .entry(Rc::clone(&j.room))
            .or_default()
            .push(j.key);
        let joined = membership("joined", &j.room, &j.user);
        self.push_room(&j.room, j.key, joined, Some(j.join));
        true
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
                let mut rooms: Vec<Rc<str>> = self.rooms.keys().cloned().collect();
                rooms.extend(self.joining.iter().map(|j| Rc::clone(&j.room)));
                rooms.sort();
                rooms.dedup();
                let users: Vec<Rc<str>> = self.users.keys().cloned().collect();
                for room in &rooms {
                    self.bus_subscribe(Channel::Room(room), None);
                }
                for user in &users {
                    self.bus_subscribe(Channel::User(user), None);
                }
                let Some(bus) = self.up_node() else {
                    return;
                };
                if rooms.is_empty() && users.is_empty() {
                    bus.synced = true;
                } else {
                    let ticket = bus.ticket();
                    bus.node.barrier(ticket);
                    bus.syncing = Some(ticket);
                }
            }
            Event::Message { room, name, frame } => {
                if room {
                    self.push_room_here(&name, frame);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{LINES, Line, Url};
    use crate::proto::Header;
    use crate::service::chat::{Recipients, Target};

    fn up(chat: &mut Chat) {
        for line in LINES {
            let node = chat.bus_node().unwrap();
            node.received(line, b"+PONG\r\n");
            while let Some(event) = chat.bus_node().unwrap().next_event(line).unwrap() {
                chat.bus_event(event);
            }
        }
    }

    /// What the node would write on `line` now (taken).
    fn written(chat: &mut Chat, line: Line) -> String {
        let out = std::mem::take(chat.bus_node().unwrap().output(line));
        String::from_utf8_lossy(&out).into_owned()
    }

    fn chat_on_bus() -> Chat {
        let mut chat = Chat::default();
        let url = Url::parse("redis://h:1").unwrap();
        chat.use_bus(Node::new(&url, *b"aaaaaaaaaaaaaa00", 1 << 16));
        assert_eq!(chat.check_bus().unwrap_err().status, 503, "down until up");
        up(&mut chat);
        assert!(chat.check_bus().is_ok());
        for line in LINES {
            written(&mut chat, line); // the hellos
        }
        chat
    }

    fn member(key: usize) -> Member {
        Member {
            key,
            ..Member::default()
        }
    }

    #[test]
    fn a_room_is_subscribed_while_it_has_members_here() {
        let mut chat = chat_on_bus();
        let room = Header::parse(br#"{"room":"r"}"#).unwrap();
        let (mut a, mut b) = (member(1), member(2));
        let first = chat.join(&mut a, "ann", &room).unwrap().unwrap();
        assert_eq!(first.answers, 2, "the subscription, and the joined's count");
        let sub = written(&mut chat, Line::Sub);
        assert!(sub.contains("SUBSCRIBE\r\n$16\r\nframeloop:room:r") && sub.ends_with("PING\r\n"));
        assert!(
            written(&mut chat, Line::Pub).is_empty(),
            "joined: said at the barrier"
        );
        // Joining, ann hears nothing of the room (what comes was said before).
        let mut keys = Vec::new();
        let to_room = Recipients::Room {
            room: "r".into(),
            except: NOBODY,
        };
        chat.recipients(&to_room, &mut keys);
        assert!(keys.is_empty());
        // The confirmation, then the barrier's answer: ann is in, and said to be.
        let waits = answer(
            &mut chat,
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nr\r\n:1\r\n+PONG\r\n",
        );
        assert_eq!(waits, [first.ticket], "the barrier is chat's own");
        chat.recipients(&to_room, &mut keys);
        assert_eq!(keys, [1]);
        assert!(written(&mut chat, Line::Pub).contains(r#""op":"joined""#));
        let second = chat.join(&mut b, "bob", &room).unwrap().unwrap();
        assert_eq!(second.answers, 1, "subscribed already: the joined's count");
        assert!(!written(&mut chat, Line::Sub).contains("SUBSCRIBE"));
        chat.leave(&mut a, "ann", &room).unwrap();
        assert!(written(&mut chat, Line::Pub).contains(r#""op":"left""#));
        assert!(
            !written(&mut chat, Line::Sub).contains("UNSUBSCRIBE"),
            "bob is joining"
        );
        chat.hang_up(&mut b, "bob");
        assert!(written(&mut chat, Line::Sub).contains("UNSUBSCRIBE"));
        assert!(
            written(&mut chat, Line::Pub).is_empty(),
            "bob was never said to be in"
        );
        assert_eq!(chat.counts(), (0, 0));
    }

    /// Feeds Redis's `bytes` on the subscribed line; answers that are not
    /// chat's own barriers come back.
    fn answer(chat: &mut Chat, bytes: &[u8]) -> Vec<Ticket> {
        chat.bus_node().unwrap().received(Line::Sub, bytes);
        let mut others = Vec::new();
        while let Some(e) = chat.bus_node().unwrap().next_event(Line::Sub).unwrap() {
            if let Event::Answer { ticket, .. } = e
                && !chat.barrier(ticket)
            {
                others.push(ticket);
            }
        }
        others
    }

    #[test]
    fn a_dm_waits_for_redis_only_for_a_user_not_here() {
        let mut chat = chat_on_bus();
        let (mut a, b) = (member(1), member(2));
        assert!(chat.online(&mut a, "ann", 0));
        assert!(written(&mut chat, Line::Sub).contains("frameloop:user:ann"));
        let to_ann = Target::User("ann".into());
        assert_eq!(chat.send(&b, "bob", &to_ann, b"hi").unwrap(), None);
        assert!(written(&mut chat, Line::Pub).contains("frameloop:user:ann"));
        let to_cy = Target::User("cy".into());
        let waits = chat.send(&b, "bob", &to_cy, b"hi").unwrap().unwrap();
        assert_eq!(waits.answers, 1);
        // Lost: the ticket comes back unanswered, chat is refused.
        assert_eq!(chat.bus_lost(), [waits.ticket]);
        assert_eq!(chat.send(&b, "bob", &to_cy, b"hi").unwrap_err().status, 503);
    }

    #[test]
    fn back_up_it_subscribes_again_to_what_is_here() {
        let mut chat = chat_on_bus();
        let mut a = member(1);
        assert!(chat.online(&mut a, "ann", 0));
        let room = Header::parse(br#"{"room":"r"}"#).unwrap();
        chat.join(&mut a, "ann", &room).unwrap();
        chat.bus_lost();
        for line in LINES {
            written(&mut chat, line);
        }
        up(&mut chat);
        assert_eq!(
            chat.check_bus().unwrap_err().status,
            503,
            "until subscribed again"
        );
        let again = written(&mut chat, Line::Sub);
        let node = chat.bus_node().unwrap();
        node.received(Line::Sub, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n");
        node.received(Line::Sub, b"*3\r\n$9\r\nsubscribe\r\n$1\r\ny\r\n:2\r\n");
        node.received(Line::Sub, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        let Ok(Some(Event::Answer { ticket, .. })) = node.next_event(Line::Sub) else {
            panic!("the barrier's answer");
        };
        assert!(chat.bus_synced(ticket));
        assert!(chat.check_bus().is_ok());
        assert!(again.contains("frameloop:room:r") && again.contains("frameloop:user:ann"));
        // A join cut by the loss is undone: the member is not in the room.
        chat.undo_join(&mut a, "ann", "r");
        assert_eq!(chat.counts(), (0, 1));
    }
}
