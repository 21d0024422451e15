//! One stream connection: its state machine, its output queue and its stashed
//! input. The server drives it; nothing here knows what an op is.

use crate::net::Stream;
use crate::outbuf::OutBuf;
use crate::proto::Decoder;
use crate::reactor::{TRACE, TimerId};
use crate::service::Session;
use mio::{Interest, Token};
use std::time::Instant;

/// The life of a connection (memcached's `conn_states`, with a polite close).
/// Every change goes through [`Conn::set_state`], which logs it.
///
/// ```text
///   accept --> Greeting --(auth ok, or --no-auth)--> Serving
///                 |                                     |
///     (401, 400 bad id, auth timeout,       (framing error, idle timeout,
///      framing error, peer EOF,              peer EOF: replies still sent)
///      over --max-conns: 503)                           |
///                 v                                     v
///              Flushing --(all sent: shut down writing)--> Draining
///                 |        (peer already sent EOF: to Closed)    |
///      (5 s, write error, shutdown failed)       (peer EOF, 1 s, read error)
///                 v                                              v
///               Closed <-----------------------------------------+
///   (also at once from any state on a read or write error)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Hello sent; only `auth` is accepted.
    Greeting,
    /// Authenticated (or `--no-auth`): requests are served.
    Serving,
    /// Closing on our side: no more requests; sending what we owe.
    Flushing,
    /// Our side is shut down; reading and dropping what the peer still sends,
    /// so our last frame is not lost to a TCP reset.
    Draining,
    /// Finished; freed at the end of the turn.
    Closed,
}

impl State {
    /// Whether requests are read and served in this state.
    pub fn takes_requests(self) -> bool {
        matches!(self, State::Greeting | State::Serving)
    }
}

/// A stream connection as the server keeps it in its slab.
#[derive(Debug)]
pub struct Conn {
    pub stream: Stream,
    /// Peer address, for log lines.
    pub peer: String,
    pub state: State,
    pub decoder: Decoder,
    /// What the service layer keeps for this connection (user, request in progress).
    pub session: Session,
    pub out: OutBuf,
    /// Input read from the socket but not processed yet: the connection paused
    /// mid-buffer (backpressure, or a request holding back the ones behind it).
    /// Empty, with no allocation, almost always.
    pub stash: Vec<u8>,
    /// The one live timer (auth, idle or close deadline, per state); others are stale.
    pub timer: Option<TimerId>,
    /// Last time a frame went either way (for the idle timeout).
    pub last_active: Instant,
    /// Interest currently registered with the poller.
    pub interest: Interest,
    /// Reading is paused because pending output went over `--max-outbuf` (or,
    /// for a chat sender, its pushes this visit went over `PUSHES_PER_VISIT`).
    pub backpressured: bool,
    /// A request runs past its frame (a `sum`): the requests behind it wait.
    pub busy: bool,
    /// The peer closed its sending side (read returned 0).
    pub peer_eof: bool,
    /// TCP_CORK is set (while a file body goes out).
    pub corked: bool,
    /// Already in the server's list of connections to flush this turn.
    pub dirty: bool,
    /// Already in the reactor's revisit queue.
    pub revisit_queued: bool,
    /// Counted in `conns_open` (false for a connection refused over `--max-conns`).
    pub counted: bool,
    /// Why the connection is closing, for the close log line.
    pub close_reason: &'static str,
}

impl Conn {
    pub fn new(stream: Stream, peer: String, state: State, decoder: Decoder, now: Instant) -> Conn {
        Conn {
            stream,
            peer,
            state,
            decoder,
            session: Session::default(),
            out: OutBuf::default(),
            stash: Vec::new(),
            timer: None,
            last_active: now,
            interest: Interest::READABLE,
            backpressured: false,
            busy: false,
            peer_eof: false,
            corked: false,
            dirty: false,
            revisit_queued: false,
            counted: false,
            close_reason: "",
        }
    }

    /// The one place the state changes; logged at trace level as `from -> to`.
    pub fn set_state(&mut self, token: Token, to: State) {
        log::trace!(target: TRACE, "  conn {}: {:?} -> {:?}", token.0, self.state, to);
        self.state = to;
    }
}
