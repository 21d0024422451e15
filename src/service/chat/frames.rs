//! The push frames chat sends (contract section 7), each built once and
//! shared by every connection it goes to.

use crate::bufpool;
use crate::proto::HeadWriter;
use std::rc::Rc;

/// A push frame, built once: the header, then `body`.
fn frame(head: impl FnOnce(&mut Vec<u8>), body: &[u8]) -> Rc<[u8]> {
    let mut buf = bufpool::take();
    head(&mut buf);
    // One allocation of the exact size (the chained iterator knows its length).
    let frame = buf.iter().chain(body).copied().collect();
    bufpool::give(buf);
    frame
}

/// `{"op":"joined"|"left","room":..,"user":..}`
pub(super) fn membership(op: &str, room: &str, user: &str) -> Rc<[u8]> {
    frame(
        |buf| {
            let mut w = HeadWriter::push(buf, op);
            w.field("room", room).field("user", user);
            w.finish(0);
        },
        b"",
    )
}

/// `{"op":"msg",("room":..,)"from":..,"size":N}` + body. `size` is always written
/// (even 0): the contract lists it in the push.
pub(super) fn message(room: Option<&str>, from: &str, body: &[u8]) -> Rc<[u8]> {
    frame(
        |buf| {
            let mut w = HeadWriter::push(buf, "msg");
            if let Some(room) = room {
                w.field("room", room);
            }
            w.field("from", from).field("size", &body.len());
            w.finish(0);
        },
        body,
    )
}
