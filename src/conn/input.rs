//! The connection machine's inputs and its transition function: each input
//! (bytes, EOF, a timer, a job step, bytes written, a push) moves the state.

use super::{Conn, Pause, Pushed, State};
use crate::proto::{Event, Header};
use crate::reactor::TRACE;
use crate::service::{Next, Services, Wait};
use std::rc::Rc;
use std::time::Instant;

impl Conn {
    /// Serves `input` (or, with `None`, the stash first). Returns the bytes of
    /// `input` used: fewer when it stopped at a frame boundary, because it paused,
    /// a request runs on, or the frame queued chat pushes that the server must
    /// carry out before the next frame (it then calls again with the rest); all
    /// of them once it is closing (the rest is dropped).
    pub fn receive(
        &mut self,
        services: &mut Services,
        input: Option<&[u8]>,
        now: Instant,
    ) -> usize {
        self.now = now;
        let Some(input) = input else {
            let mut stash = std::mem::take(&mut self.stash);
            let used = self.decode(services, &stash);
            if self.is_open() && used < stash.len() {
                stash.drain(..used);
                self.stash = stash;
            }
            return 0;
        };
        self.decode(services, input)
    }

    /// Stashes input for when it can be served: what the last [`Conn::receive`]
    /// did not use, or what was read ahead while a request runs
    /// ([`super::Reading::Ahead`]).
    pub fn keep_input(&mut self, bytes: &[u8]) {
        if self.is_open() {
            self.stash.extend_from_slice(bytes);
        }
    }

    fn decode(&mut self, services: &mut Services, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            if !self.is_open() {
                return input.len();
            }
            // Hold back the next frame; the frame in hand is finished first. Also
            // stop after a frame that queued chat pushes (`pos > 0`: this call
            // served it), so the server carries them out before the next frame:
            // a room's members are looked up then, and a `leave` must come after.
            let holds = matches!(self.state, State::Paused(_) | State::Working(_));
            if self.decoder.at_boundary() && (holds || (pos > 0 && services.has_pushes())) {
                return pos;
            }
            let rest = input.get(pos..).unwrap_or_default();
            let mut header = Header::default();
            let next = match self.decoder.decode(rest, &mut header) {
                Err(e) => {
                    services.framing_error(&e, &mut self.out);
                    Next::Close("framing error")
                }
                Ok((n, event)) => {
                    pos += n;
                    match event {
                        None => return pos,
                        Some(Event::Head { oversized }) => {
                            log::trace!(target: TRACE, "  conn {}: frame op={} id={} size={}",
                                self.label, header.op().as_deref().unwrap_or("-"),
                                header.id.map_or("-", |id| id.get()), header.size);
                            services.head(&mut self.session, &header, oversized, &mut self.out)
                        }
                        Some(Event::Body(chunk)) => {
                            services.body(&mut self.session, chunk);
                            Next::Continue
                        }
                        Some(Event::End) => services.end(&mut self.session, &mut self.out),
                    }
                }
            };
            // Activity for the idle timeout is frame progress, not raw bytes: a peer
            // trickling an unfinished header does not keep its connection alive.
            self.last_active = self.now;
            if next == Next::Job(Wait::Child) {
                self.watch = true;
            }
            self.answered(services, next);
        }
    }

    /// The transition for what the services answered.
    pub(super) fn answered(&mut self, services: &mut Services, next: Next) {
        match next {
            Next::Continue => {}
            Next::Authenticated(limits) => {
                self.decoder.set_limits(limits);
                self.set_state(State::Serving);
            }
            Next::Job(wait) => {
                // A sum's next chunk: no event will come for it, so ask for a revisit.
                self.revisit |= wait == Wait::NextTurn;
                self.set_state(State::Working(wait));
            }
            Next::Close(reason) => self.start_closing(services, reason, None, true),
        }
        if self.state == State::Serving && self.output_full() {
            self.set_state(State::Paused(Pause::Output));
        }
    }

    /// The running request's next step (its child's descriptors are ready, or
    /// its turn came). When it ends, the requests behind it are served: stashed
    /// ones first, on the revisit it asks for.
    pub fn resume(&mut self, services: &mut Services, now: Instant) {
        self.now = now;
        if !matches!(self.state, State::Working(_)) {
            return;
        }
        self.last_active = now;
        match services.resume(&mut self.session, &mut self.out) {
            Next::Job(wait) => self.answered(services, Next::Job(wait)),
            Next::Close(reason) => self.start_closing(services, reason, None, true),
            done @ (Next::Continue | Next::Authenticated(_)) => {
                // A login that waited for its work (the quota walk) is complete now:
                // its limits hold before anything stashed is decoded.
                if let Next::Authenticated(limits) = done {
                    self.decoder.set_limits(limits);
                }
                // Input may wait in the stash or the kernel, with no new edge to come.
                self.revisit = true;
                self.set_state(State::Serving);
                self.answered(services, Next::Continue);
            }
        }
    }

    /// Its timer fired. Only a deadline that has come counts: one moved on by
    /// activity since the timer was armed is not due (lazy re-arming).
    pub fn timer(&mut self, services: &mut Services, now: Instant) {
        self.now = now;
        if self.deadline().is_none_or(|due| due > now) {
            return;
        }
        match self.state {
            State::Proxy => self.close(services, "no PROXY header in time"),
            State::Greeting => {
                self.start_closing(services, "auth timeout", Some("auth timeout"), true)
            }
            State::Working(_) if self.session.job_deadline().is_some() => {
                // An exec's timeout: kill the child; its exit finishes the reply.
                // The kill counts as activity: the idle timeout starts again now.
                services.expire(&mut self.session);
                self.last_active = now;
                self.revisit = true;
            }
            State::Serving | State::Paused(_) | State::Working(_) => {
                self.start_closing(services, "idle timeout", Some("idle timeout"), true)
            }
            State::Flushing { .. } => self.close(services, "flush timeout"),
            State::Draining => self.close(services, self.close_reason),
            State::Closed => {}
        }
    }

    /// The server wrote `n` bytes of the output (maybe 0); `held_below`: the
    /// transport still holds some of it (TLS records the socket has not taken,
    /// a handshake still under way), so it is not all sent yet. Once everything
    /// owed is sent while flushing, it asks for the write side to be shut down
    /// ([`Conn::take_shutdown`]) and drains, or closes if the peer is gone.
    pub fn written(&mut self, services: &mut Services, n: usize, held_below: bool, now: Instant) {
        self.now = now;
        if n > 0 {
            self.last_active = now;
        }
        let low = self.output_low();
        match self.state {
            State::Paused(_) if low => {
                // Resume reading. Bytes already in the kernel buffer raise no new
                // readable edge, so the revisit must bring the connection back.
                self.set_state(State::Serving);
                self.revisit = true;
            }
            State::Flushing { drain } if self.out.is_empty() && !held_below => {
                if drain {
                    self.set_state(State::Draining);
                    self.shutdown = true;
                    // Bytes already buffered raise no new edge: look at them next turn.
                    self.revisit = true;
                } else {
                    self.close(services, self.close_reason);
                }
            }
            _ => {}
        }
    }

    /// The peer closed its sending side. Replies already owed are still sent.
    /// A request running on the pool (`ls`, `sum`, a `put`'s flush, a login's
    /// quota walk) is bounded work: it ends, the stashed requests behind it are
    /// served, and then the connection closes (the next read sees the EOF again).
    /// An exec is dropped with the rest of the input: a client that only
    /// half-closed cannot be told from one that left, and one that left must not
    /// keep a child running.
    pub fn peer_closed(&mut self, services: &mut Services, now: Instant) {
        self.now = now;
        match self.state {
            State::Draining => return self.close(services, self.close_reason),
            State::Proxy => return self.close(services, "peer closed"),
            _ => {}
        }
        if matches!(self.state, State::Working(_)) && !self.session.runs_child() {
            self.input_ended = true;
            return;
        }
        let reason = if self.decoder.is_idle() {
            "peer closed"
        } else {
            "peer closed mid-frame"
        };
        self.start_closing(services, reason, None, false);
    }

    /// The chat pushes this connection's requests caused in this visit went over
    /// the budget: it stops at the next frame boundary until its output is written.
    pub fn pause_for_pushes(&mut self) {
        if self.state == State::Serving {
            self.set_state(State::Paused(Pause::Pushes));
        }
    }

    /// Offers a chat push. A member whose unsent output is still over
    /// `--max-outbuf` is a slow consumer: told `bye` and closed, never waited for.
    pub fn push(&mut self, services: &mut Services, frame: &Rc<[u8]>) -> Pushed {
        if !matches!(
            self.state,
            State::Serving | State::Paused(_) | State::Working(_)
        ) {
            return Pushed::Skipped;
        }
        if self.out.mem_len() > self.rules.max_outbuf {
            services.stats.slow_consumer();
            self.start_closing(services, "slow consumer", Some("slow consumer"), true);
            return Pushed::SlowConsumer;
        }
        self.out.push_shared(frame);
        Pushed::Queued
    }

    /// Closes politely (the server shutting down): stop serving, queue the
    /// `bye` (if any), send what is owed (within `FLUSH_LIMIT`), then shut down
    /// and drain.
    pub fn close_politely(
        &mut self,
        services: &mut Services,
        reason: &'static str,
        bye: Option<&str>,
        now: Instant,
    ) {
        self.now = now;
        self.start_closing(services, reason, bye, true);
    }

    /// Into `Flushing`, once: chat rooms left at once, stashed input dropped.
    pub(super) fn start_closing(
        &mut self,
        services: &mut Services,
        reason: &'static str,
        bye: Option<&str>,
        drain: bool,
    ) {
        if self.state == State::Proxy {
            return self.close(services, reason); // it was never greeted: nothing owed
        }
        if !self.is_open() {
            return;
        }
        if let Some(bye) = bye {
            services.bye(&mut self.out, bye);
        }
        services.leave_chat(&mut self.session);
        self.close_reason = reason;
        self.stash = Vec::new();
        self.set_state(State::Flushing { drain });
    }

    /// Evicted to bring the memory all connections hold under `--max-memory`:
    /// what it holds is dropped at once (output, stash, a body being buffered)
    /// and it is closed politely with a `bye`.
    pub fn evict(&mut self, services: &mut Services, now: Instant) {
        self.now = now;
        self.out.clear();
        self.stash = Vec::new();
        self.session.drop_body();
        self.start_closing(services, "memory limit", Some("memory limit"), true);
    }

    /// Closes at once (an I/O error, or the polite close is over): the server
    /// frees it at the end of the turn. The first reason given is kept.
    pub fn close(&mut self, services: &mut Services, reason: &'static str) {
        if self.is_closed() {
            return;
        }
        services.leave_chat(&mut self.session);
        if self.close_reason.is_empty() {
            self.close_reason = reason;
        }
        self.stash = Vec::new();
        self.set_state(State::Closed);
    }
}
