//! The event loop: one `mio::Poll`, a timer heap and a queue of tokens to revisit.
//! It dispatches readiness, timers and revisits to a [`Handler`]; it knows nothing
//! of connections, frames or ops (Redis's `ae.c` in spirit, libuv's phases in order).

mod timer;

pub use timer::{TimerId, Timers};

use mio::event::{Event, Source};
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashSet, VecDeque};
use std::io;
use std::time::{Duration, Instant};

/// What the loop calls back. One method per phase of a turn.
pub trait Handler {
    /// A source became ready (edge-triggered: drain it, or revisit it later).
    fn ready(&mut self, reactor: &mut Reactor, token: Token, readiness: Readiness);
    /// A timer armed with [`Reactor::add_timer`] is due.
    fn timer(&mut self, reactor: &mut Reactor, token: Token, id: TimerId);
    /// A token queued with [`Reactor::revisit`] gets its turn.
    fn revisit(&mut self, reactor: &mut Reactor, token: Token);
    /// Last phase of every turn, before sleeping: flush output, apply interest, free what closed.
    fn end_of_turn(&mut self, reactor: &mut Reactor);
    /// Checked before each turn; true ends [`Reactor::run`].
    fn is_done(&self) -> bool;
}

/// Readiness of one event, with hang-ups and errors folded in: both show up as
/// readable or writable, and the next read or write reports what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer closed its side, the socket failed, or urgent data is pending,
    /// as of the poll: none of them raises a later edge, so read on until
    /// `WouldBlock` or the end of file, not only until a short read.
    pub read_all: bool,
}

impl Readiness {
    fn of(event: &Event) -> Readiness {
        Readiness {
            readable: event.is_readable()
                || event.is_read_closed()
                || event.is_error()
                || event.is_priority(),
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
            read_all: event.is_read_closed() || event.is_error() || event.is_priority(),
        }
    }
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.readable, self.writable) {
            (true, true) => f.write_str("readable+writable"),
            (true, false) => f.write_str("readable"),
            (false, true) => f.write_str("writable"),
            (false, false) => f.write_str("none"),
        }
    }
}

/// Log target of the loop trace (`frameloop serve --trace`): one line per turn and
/// per event. Off by default; a disabled `log::trace!` costs one comparison.
pub const TRACE: &str = "frameloop::trace";

/// Readiness events fetched per poll; more wait for the next turn.
const EVENTS_PER_POLL: usize = 1024;

pub struct Reactor {
    poll: Poll,
    timers: Timers,
    revisits: VecDeque<Token>,
    /// The tokens in `revisits`: a token is queued at most once.
    queued: HashSet<Token>,
    now: Instant,
    turns: u64,
}

impl Reactor {
    pub fn new() -> io::Result<Reactor> {
        Ok(Reactor {
            poll: Poll::new()?,
            timers: Timers::default(),
            revisits: VecDeque::new(),
            queued: HashSet::new(),
            now: Instant::now(),
            turns: 0,
        })
    }

    /// Runs turns until the handler is done. Each turn, in order:
    /// poll -> timers -> I/O events -> revisits -> end of turn.
    pub fn run<H: Handler>(&mut self, handler: &mut H) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        while !handler.is_done() {
            self.poll_once(&mut events)?;
            // Revisits queued from now on wait for the next turn, after a fresh poll.
            let revisits = self.revisits.len();
            log::trace!(target: TRACE, "turn {}: {} events, {} revisits queued, {} timers armed",
                self.turns, events.iter().count(), self.revisits.len(), self.timers.len());
            self.fire_timers(handler);
            for event in events.iter() {
                let readiness = Readiness::of(event);
                log::trace!(target: TRACE, "  token {}: {readiness}", event.token().0);
                handler.ready(self, event.token(), readiness);
            }
            self.run_revisits(handler, revisits);
            handler.end_of_turn(self);
        }
        Ok(())
    }

    /// Phase 1: sleep until an event or the nearest timer; not at all while
    /// tokens wait for a revisit (their bytes will raise no new edge).
    fn poll_once(&mut self, events: &mut Events) -> io::Result<()> {
        let timeout = if self.revisits.is_empty() {
            self.timers.until_next(Instant::now())
        } else {
            Some(Duration::ZERO)
        };
        match self.poll.poll(events, timeout) {
            Ok(()) => {}
            // A signal interrupted the wait: just start the turn.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => events.clear(),
            Err(e) => return Err(e),
        }
        // One clock reading per turn: every deadline this turn is measured from it.
        self.now = Instant::now();
        self.turns += 1;
        Ok(())
    }

    /// Phase 2: every timer due by `now`.
    fn fire_timers<H: Handler>(&mut self, handler: &mut H) {
        while let Some((id, token)) = self.timers.pop_due(self.now) {
            log::trace!(target: TRACE, "  timer {} due for token {}", id.0, token.0);
            handler.timer(self, token, id);
        }
    }

    /// Phase 4: the tokens that were queued before this turn's poll. A token
    /// queued during this turn (its read budget ran out) waits for the next one,
    /// after a poll that does not sleep: everyone else's events come first.
    fn run_revisits<H: Handler>(&mut self, handler: &mut H, count: usize) {
        for _ in 0..count {
            if let Some(token) = self.revisits.pop_front() {
                self.queued.remove(&token);
                log::trace!(target: TRACE, "  revisit token {}", token.0);
                handler.revisit(self, token);
            }
        }
    }

    /// The time this turn started.
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn register<S: Source + ?Sized>(
        &self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.poll.registry().register(source, token, interest)
    }

    pub fn reregister<S: Source + ?Sized>(
        &self,
        source: &mut S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.poll.registry().reregister(source, token, interest)
    }

    /// A waker for `token`: another thread calls `wake` to make `token` ready in
    /// this loop (the blocking-work pool's results).
    pub fn waker(&self, token: Token) -> io::Result<mio::Waker> {
        mio::Waker::new(self.poll.registry(), token)
    }

    /// Stops watching `source`. (Closing a descriptor also does, when it is the
    /// last one open for its file: child pipes at EOF rely on that.)
    pub fn deregister<S: Source + ?Sized>(&self, source: &mut S) -> io::Result<()> {
        self.poll.registry().deregister(source)
    }

    /// Arms a one-shot timer.
    pub fn add_timer(&mut self, deadline: Instant, token: Token) -> TimerId {
        self.timers.add(deadline, token)
    }

    /// Cancels a timer that has not fired.
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.timers.cancel(id);
    }

    /// Asks for `token` to be handed back next turn without waiting for an
    /// event. Asking again before it is handed back changes nothing.
    pub fn revisit(&mut self, token: Token) {
        if self.queued.insert(token) {
            self.revisits.push_back(token);
        }
    }
}
