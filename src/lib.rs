//! frameloop: one thread, one event loop, every service. Where to start reading:
//!
//! - [`reactor`]: the loop itself (poll, timers, revisit queue). Knows no ops.
//! - [`server`]: the reactor's handler: accept, read, decode, dispatch, write, close.
//! - [`udp`]: the UDP transport, one frame per datagram.
//! - [`conn`]: a connection's state machine; [`outbuf`]: its pending output;
//!   [`bufpool`]: the buffers they share.
//! - [`proto`]: the frame codec, sans-IO (bytes in, frames out).
//! - [`service`]: the ops, one module per section of the contract.
//! - [`auth`]: the HMAC challenge-response math and the users file.
//! - [`client`]: a blocking client library; [`load`]: the load generator;
//!   [`config`]: every limit and default.

pub mod auth;
pub mod bufpool;
pub mod client;
pub mod config;
pub mod conn;
pub mod load;
pub mod net;
pub mod outbuf;
pub mod proto;
pub mod reactor;
pub mod server;
pub mod service;
pub mod udp;
