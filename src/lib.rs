//! frameloop: one thread, one event loop, every service. Where to start reading:
//!
//! - [`reactor`]: the loop itself (poll, timers, revisit queue). Knows no ops.
//! - [`server`]: the reactor's handler: it owns the sockets, tokens and the slab,
//!   and carries out what each connection machine wants (accept, read, write, close).
//! - [`conn`]: a connection as a sans-IO machine (bytes and `now` in; output, a
//!   deadline, reading or not, out); [`outbuf`]: its pending output;
//!   [`bufpool`]: the buffers they share.
//! - [`udp`]: the UDP transport, one frame per datagram.
//! - [`proto`]: the frame codec, sans-IO (bytes in, frames out).
//! - [`service`]: the ops, one module per section of the contract; never a socket.
//! - [`net`]: sockets, the one budgeted read loop, error classes; [`pool`]: the
//!   threads that do blocking file work beside the loop.
//! - [`auth`]: the HMAC challenge-response math and the users file.
//! - [`client`]: a blocking client library; [`load`]: the load generator;
//!   [`config`]: the server's settings and the loop's tuning.

pub mod auth;
pub mod bufpool;
pub mod bus;
pub mod client;
pub mod config;
pub mod conn;
pub mod hub;
pub mod load;
pub mod net;
pub mod outbuf;
pub mod pool;
pub mod proto;
pub mod reactor;
pub mod server;
pub mod service;
pub mod tls;
pub mod udp;
