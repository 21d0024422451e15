//! The chat service (contract section 7): rooms, who is online, and the pushes
//! `join`, `leave`, `say` and `dm` cause. Sans-IO: connections are named by their
//! slab key, and its pushes wait in a queue the server carries out (`Chat::take_pushes`).
//! With several workers, pushes for members on other workers go through the
//! [`Hub`] (contract section 12), and theirs come back in as a [`Delivery`];
//! with `--bus`, pushes for every other worker and server go through Redis
//! (`bus.rs`) instead.

use super::ops::OpError;
use crate::auth::valid_name;
use crate::bus::{Channel, Ticket};
use crate::hub::Hub;
use crate::proto::Header;
use crate::proto::header::{Raw, req_str};
use frames::{membership, message};
use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

mod bus;
mod frames;
mod hub;
mod users;

pub use bus::{Awaited, AwaitedOp, unavailable};
pub(super) use users::not_online;

/// Longest room (and user) name.
pub const MAX_NAME: usize = 64;
/// Rooms one connection may be in at once: a hostile client cannot grow the
/// server's tables without bound through one connection.
pub const MAX_ROOMS: usize = 256;

/// "Queue this frame on those connections": what the server does for the service.
#[derive(Debug)]
pub struct Push {
    pub to: Recipients,
    /// The whole push frame (header and body), shared by every member it goes to.
    pub frame: Rc<[u8]>,
}

/// Who gets a push. A room's members are looked up when the server carries the
/// push out ([`Chat::recipients`]), not when it is queued: a push is one entry
/// however big the room, and members that closed meanwhile are not in the list.
/// (Queued per member, a room of N whose members all close at once would queue
/// N x N `left` pushes, most of them for connections already gone.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    Conn(usize),
    /// Every member of the room but `except` (the sender, joiner or leaver;
    /// [`NOBODY`] for a push from another worker).
    Room {
        room: Rc<str>,
        except: usize,
    },
}

/// The `except` of a push that comes from another worker.
pub const NOBODY: usize = usize::MAX;

/// Where a `say` or `dm` goes, checked when its header arrives.
#[derive(Debug)]
pub enum Target {
    Room(Rc<str>),
    User(String),
}

/// What the chat service keeps per connection (inside the `Session`).
#[derive(Debug, Default)]
pub struct Member {
    /// The connection's slab key, set by the server when it opens the connection.
    pub key: usize,
    /// Rooms this connection is in (the same `Rc` as the room table's key).
    rooms: Vec<Rc<str>>,
    /// Listed under its user for `dm` (authenticated and not closing).
    online: bool,
}

/// Rooms and users, for the whole server.
#[derive(Debug, Default)]
pub struct Chat {
    /// Room name -> member connections. A room exists while it has members.
    rooms: HashMap<Rc<str>, Vec<usize>>,
    /// User name -> its open connections (the targets of a `dm`).
    users: HashMap<Rc<str>, Vec<usize>>,
    /// Pushes queued for the server to carry out.
    pushes: Vec<Push>,
    /// With several workers: the hub, and this worker's number.
    link: Option<(Arc<Hub>, usize)>,
    /// With `--bus`: the bus, which carries pushes to every other worker.
    bus: Option<bus::Bus>,
    /// Members joining through the bus, not yet hearing the room (`bus.rs`).
    joining: Vec<bus::Joining>,
}

/// A required room or user name field: a string of a valid name, or a 400.
fn name_field<'a>(raw: Option<Raw<'a>>, field: &'static str) -> Result<Cow<'a, str>, OpError> {
    let name = req_str(raw, field).map_err(|e| OpError::bad(e.to_string()))?;
    if !valid_name(&name) {
        return Err(OpError::bad(format!(
            "{field} must be 1-{MAX_NAME} of A-Z a-z 0-9 _ . -"
        )));
    }
    Ok(name)
}

fn refused(status: u16, message: String) -> OpError {
    OpError { status, message }
}

impl Chat {
    /// `join`: idempotent (joining a room again is a 200 with no push). With
    /// the bus, the join waits for Redis (`Chat::join_on_bus`).
    pub fn join(
        &mut self,
        member: &mut Member,
        user: &str,
        header: &Header,
    ) -> Result<Option<Awaited>, OpError> {
        let room = name_field(header.room, "room")?;
        if member.rooms.iter().any(|r| **r == *room) {
            return Ok(None);
        }
        if member.rooms.len() >= MAX_ROOMS {
            return Err(refused(403, format!("already in {MAX_ROOMS} rooms")));
        }
        let name = self.room_name(&room);
        if let Some(ticket) = self.bus_ticket() {
            return Ok(Some(self.join_on_bus(member, user, name, ticket)));
        }
        let members = self.rooms.entry(Rc::clone(&name)).or_default();
        let others = !members.is_empty();
        members.push(member.key);
        if !others && let Some((hub, me)) = self.hub() {
            hub.subscribe(me, &name); // its first member here
        }
        if others || self.link.is_some() {
            let joined = membership("joined", &name, user);
            self.push_room(&name, member.key, joined, None);
        }
        member.rooms.push(name);
        Ok(None)
    }

    /// The room's name, shared with the tables when the room is known here.
    fn room_name(&self, room: &str) -> Rc<str> {
        let known = self.rooms.get_key_value(room).map(|(name, _)| name);
        let joining = self.joining.iter().map(|j| &j.room);
        match known
            .into_iter()
            .chain(joining)
            .find(|name| ***name == *room)
        {
            Some(name) => Rc::clone(name),
            None => Rc::from(room),
        }
    }

    /// Whether `room` has a member here, or one joining through the bus.
    fn here(&self, room: &str) -> bool {
        self.rooms.contains_key(room) || self.joining.iter().any(|j| *j.room == *room)
    }

    /// `leave`: 403 when the connection is not in the room.
    pub fn leave(
        &mut self,
        member: &mut Member,
        user: &str,
        header: &Header,
    ) -> Result<(), OpError> {
        let room = name_field(header.room, "room")?;
        let Some(i) = member.rooms.iter().position(|r| **r == *room) else {
            return Err(refused(403, format!("not a member of {room}")));
        };
        let name = member.rooms.swap_remove(i);
        self.part(member.key, &name, user);
        Ok(())
    }

    /// Removes `key` from `room` (or from those joining it); the members left
    /// get `left`, an empty room goes.
    fn part(&mut self, key: usize, room: &Rc<str>, user: &str) {
        // One still joining was never said to be in: it leaves quietly.
        self.joining.retain(|j| !(j.room == *room && j.key == key));
        let mut was_in = false;
        if let Some(members) = self.rooms.get_mut(room) {
            let before = members.len();
            members.retain(|&k| k != key);
            was_in |= members.len() < before;
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
        if !self.here(room) {
            if let Some((hub, me)) = self.hub() {
                hub.unsubscribe(me, room);
            }
            self.bus_unsubscribe(Channel::Room(room));
            if self.hub().is_none() && self.bus.is_none() {
                return; // nobody else to tell
            }
        }
        if was_in {
            self.push_room(room, key, membership("left", room, user), None);
        }
    }

    /// Queues `frame` for every member of `room` but `except`, here and (posted
    /// once to each, or published once on the bus) on the other workers with
    /// members in it; `ticket`: someone waits for the publish to be counted.
    fn push_room(
        &mut self,
        room: &Rc<str>,
        except: usize,
        frame: Rc<[u8]>,
        ticket: Option<Ticket>,
    ) {
        if let Some((hub, me)) = self.hub() {
            hub.publish_room(me, room, &frame);
        }
        self.bus_publish(Channel::Room(room), &frame, ticket);
        if !self.rooms.contains_key(room) {
            return; // no member left here
        }
        self.pushes.push(Push {
            to: Recipients::Room {
                room: Rc::clone(room),
                except,
            },
            frame,
        });
    }

    /// Checks a `say` or `dm` header before its body is collected (so a refused
    /// message's body is dropped as it arrives, never held).
    pub fn target(&self, member: &Member, dm: bool, header: &Header) -> Result<Target, OpError> {
        if dm {
            let to = name_field(header.to, "to")?;
            if self.bus.is_none() {
                // With the bus, Redis's count says (`send`).
                self.check_online(&to)?;
            }
            return Ok(Target::User(to.into_owned()));
        }
        let room = name_field(header.room, "room")?;
        member
            .rooms
            .iter()
            .find(|r| ***r == *room)
            .map(|r| Target::Room(Rc::clone(r)))
            .ok_or_else(|| refused(403, format!("not a member of {room}")))
    }

    /// A `say` or `dm` with its whole body: fans the `msg` push out to every
    /// other member connection (or every other connection of the user). The frame
    /// is built once and shared. A `dm` whose user went away meanwhile: 404.
    /// With the bus, a `dm` to a user with no connection on this server waits
    /// for Redis's count of receivers (the ticket): none is a 404.
    pub fn send(
        &mut self,
        member: &Member,
        from: &str,
        target: &Target,
        body: &[u8],
    ) -> Result<Option<Awaited>, OpError> {
        self.check_bus()?; // lost since the header came
        let room = match target {
            Target::Room(room) => {
                let members = self.rooms.get(room).map(Vec::as_slice).unwrap_or_default();
                if members.iter().all(|&k| k == member.key)
                    && self.link.is_none()
                    && self.bus.is_none()
                {
                    return Ok(None); // alone in the room: nobody to copy the body for
                }
                Some(&**room)
            }
            Target::User(user) => {
                if self.bus.is_none() {
                    self.check_online(user)?;
                }
                None
            }
        };
        let push = message(room, from, body);
        match target {
            Target::Room(room) => {
                self.push_room(room, member.key, push, None);
                Ok(None)
            }
            Target::User(user) => {
                if let Some((hub, me)) = self.hub() {
                    hub.publish_user(me, user, &push);
                }
                // Online here: 200 now. Elsewhere or nowhere: Redis's count says.
                let ticket = self.bus_ticket().filter(|_| !self.online_here(user));
                self.bus_publish(Channel::User(user), &push, ticket);
                self.push_user(user, member.key, &push);
                Ok(ticket.map(|ticket| Awaited {
                    ticket,
                    answers: 1,
                    op: AwaitedOp::Dm(user.clone()),
                }))
            }
        }
    }

    /// A push from another worker or server: queued for the members of `room`
    /// here, if it has any, sharing `frame`.
    fn push_room_here(&mut self, room: &str, frame: Rc<[u8]>) {
        if let Some((room, _)) = self.rooms.get_key_value(room) {
            let room = Rc::clone(room);
            self.pushes.push(Push {
                to: Recipients::Room {
                    room,
                    except: NOBODY,
                },
                frame,
            });
        }
    }

    /// The connections a push goes to now, into `into` (cleared first).
    pub fn recipients(&self, to: &Recipients, into: &mut Vec<usize>) {
        into.clear();
        match to {
            Recipients::Conn(key) => into.push(*key),
            Recipients::Room { room, except } => {
                if let Some(members) = self.rooms.get(room) {
                    into.extend(members.iter().filter(|&k| k != except));
                }
            }
        }
    }

    /// The connection is closing: it leaves every room (the others get `left`)
    /// and no longer receives `dm`s. Safe to call more than once.
    pub fn hang_up(&mut self, member: &mut Member, user: &str) {
        for room in std::mem::take(&mut member.rooms) {
            self.part(member.key, &room, user);
        }
        if !std::mem::take(&mut member.online) {
            return;
        }
        if let Some((hub, me)) = &self.link {
            hub.logout(*me, user);
        }
        if let Some(conns) = self.users.get_mut(user) {
            conns.retain(|&k| k != member.key);
            if conns.is_empty() {
                self.users.remove(user);
                self.bus_unsubscribe(Channel::User(user));
            }
        }
    }

    /// Whether pushes wait to be carried out (cheap: checked after every request).
    pub fn has_pushes(&self) -> bool {
        !self.pushes.is_empty()
    }

    /// The pushes queued since the last call, for the server to carry out.
    pub fn take_pushes(&mut self) -> Vec<Push> {
        std::mem::take(&mut self.pushes)
    }

    /// Hands back the (drained) vector from [`Chat::take_pushes`], so its
    /// allocation is reused, unless new pushes were queued meanwhile.
    pub fn return_pushes(&mut self, mut used: Vec<Push>) {
        if self.pushes.is_empty() {
            used.clear();
            self.pushes = used;
        }
    }

    /// Rooms and online users, for tests.
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.rooms.len(), self.users.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::read_frame;

    fn header(json: &str) -> Header<'_> {
        Header::parse(json.as_bytes()).unwrap()
    }

    fn member(key: usize) -> Member {
        Member {
            key,
            ..Member::default()
        }
    }

    /// The pushes as (connection, push header, body), one row per recipient.
    fn drain(chat: &mut Chat) -> Vec<(usize, serde_json::Value, Vec<u8>)> {
        let mut keys = Vec::new();
        let mut rows = Vec::new();
        for d in chat.take_pushes() {
            chat.recipients(&d.to, &mut keys);
            let f = read_frame(&mut &d.frame[..]).unwrap();
            for &k in &keys {
                rows.push((
                    k,
                    serde_json::Value::Object(f.header.clone()),
                    f.body.clone(),
                ));
            }
        }
        rows
    }

    /// A room whose members all close at once queues one `left` per member, not
    /// one per member per remaining member (N x N entries, mostly for the dead).
    #[test]
    fn a_room_emptying_at_once_queues_one_push_per_leaver() {
        let mut chat = Chat::default();
        let room = header(r#"{"room":"big"}"#);
        let mut members: Vec<Member> = (0..500).map(member).collect();
        for m in &mut members {
            chat.join(m, "u", &room).unwrap();
        }
        chat.take_pushes();
        for m in &mut members {
            chat.hang_up(m, "u");
        }
        let pushes = chat.take_pushes();
        assert!(pushes.len() < 500, "{} entries", pushes.len());
        let mut keys = Vec::new();
        for d in &pushes {
            chat.recipients(&d.to, &mut keys);
            assert!(keys.is_empty(), "everyone has left");
        }
        assert_eq!(chat.counts(), (0, 0));
    }

    #[test]
    fn names() {
        assert!(valid_name("a") && valid_name("Room_1.-x") && valid_name(&"r".repeat(64)));
        for bad in ["", "a b", "é", "a/b", &"r".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn fan_out_skips_the_sender_and_shares_one_frame() {
        let mut chat = Chat::default();
        let (mut a, mut b, mut c) = (member(1), member(2), member(3));
        let room = header(r#"{"room":"lobby"}"#);
        chat.join(&mut a, "alice", &room).unwrap();
        assert!(drain(&mut chat).is_empty());
        chat.join(&mut b, "bob", &room).unwrap();
        let got = drain(&mut chat);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 1);
        assert_eq!(
            got[0].1,
            serde_json::json!({"op":"joined","room":"lobby","user":"bob"})
        );
        chat.join(&mut c, "carol", &room).unwrap();
        assert_eq!(drain(&mut chat).len(), 2);
        // Joining again: no push.
        chat.join(&mut c, "carol", &room).unwrap();
        assert!(drain(&mut chat).is_empty());

        let target = chat.target(&b, false, &room).unwrap();
        chat.send(&b, "bob", &target, b"hi").unwrap();
        let pushes = chat.take_pushes();
        assert_eq!(pushes.len(), 1, "one entry, one frame, for the whole room");
        let mut to = Vec::new();
        chat.recipients(&pushes[0].to, &mut to);
        to.sort();
        assert_eq!(to, [1, 3]);
        let f = read_frame(&mut &pushes[0].frame[..]).unwrap();
        assert_eq!(
            serde_json::Value::Object(f.header),
            serde_json::json!({"op":"msg","room":"lobby","from":"bob","size":2})
        );
        assert_eq!(f.body, b"hi");
    }

    #[test]
    fn refusals() {
        let mut chat = Chat::default();
        let mut a = member(1);
        let room = header(r#"{"room":"lobby"}"#);
        assert_eq!(chat.target(&a, false, &room).unwrap_err().status, 403);
        assert_eq!(chat.leave(&mut a, "alice", &room).unwrap_err().status, 403);
        assert_eq!(
            chat.join(&mut a, "alice", &header(r#"{"room":""}"#))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            chat.join(&mut a, "alice", &header(r#"{"room":7}"#))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            chat.join(&mut a, "alice", &header("{}"))
                .unwrap_err()
                .status,
            400
        );
        let to = header(r#"{"to":"bob"}"#);
        assert_eq!(chat.target(&a, true, &to).unwrap_err().status, 404);
        assert_eq!(
            chat.target(&a, true, &header(r#"{"to":"b b"}"#))
                .unwrap_err()
                .status,
            400
        );
        for i in 0..MAX_ROOMS {
            chat.join(&mut a, "alice", &header(&format!(r#"{{"room":"r{i}"}}"#)))
                .unwrap();
        }
        assert_eq!(chat.join(&mut a, "alice", &room).unwrap_err().status, 403);
    }

    #[test]
    fn hang_up_leaves_rooms_and_goes_offline() {
        let mut chat = Chat::default();
        let (mut a, mut b) = (member(1), member(2));
        chat.online(&mut a, "alice", 0);
        chat.online(&mut b, "bob", 0);
        for r in ["x", "y"] {
            let room = header_owned(r);
            chat.join(&mut a, "alice", &Header::parse(room.as_bytes()).unwrap())
                .unwrap();
            chat.join(&mut b, "bob", &Header::parse(room.as_bytes()).unwrap())
                .unwrap();
        }
        drain(&mut chat);
        chat.hang_up(&mut b, "bob");
        chat.hang_up(&mut b, "bob"); // twice: nothing more
        let got = drain(&mut chat);
        assert_eq!(got.len(), 2);
        for (to, push, _) in &got {
            assert_eq!(*to, 1);
            assert_eq!(push["op"], "left");
            assert_eq!(push["user"], "bob");
        }
        assert_eq!(chat.counts(), (2, 1));
        assert_eq!(
            chat.target(&a, true, &header(r#"{"to":"bob"}"#))
                .unwrap_err()
                .status,
            404
        );
        chat.hang_up(&mut a, "alice");
        assert!(drain(&mut chat).is_empty());
        assert_eq!(
            chat.counts(),
            (0, 0),
            "empty rooms and offline users are forgotten"
        );
    }

    fn header_owned(room: &str) -> String {
        format!(r#"{{"room":"{room}"}}"#)
    }
}
