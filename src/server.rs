//! The server: the reactor's [`Handler`]. It accepts connections (TCP and Unix),
//! reads and decodes their frames, hands them to the services, writes replies and
//! closes; it hands UDP datagrams to [`crate::udp`] and shuts down on SIGINT/SIGTERM.

use crate::config::{Config, tuning};
use crate::conn::{Conn, State};
use crate::net::{self, IoClass, Listener, Stream, classify, is_resource_exhaustion};
use crate::proto::{Decoder, Event};
use crate::reactor::{Handler, Reactor, Readiness, TRACE, TimerId};
use crate::service::exec::ChildIo;
use crate::service::{Next, Services};
use crate::udp::Udp;
use mio::net::TcpListener;
use mio::{Interest, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// Token of the TCP listener (and of the timer that resumes accepting on every
/// listener). Tokens below `FIRST_CONN` name the server's own sources. The
/// connection in slab slot `key` owns four tokens from `FIRST_CONN + 4 * key`:
/// its socket, then its exec child's stdout, stderr and pidfd.
const LISTENER: Token = Token(0);
/// Pidfds of killed children whose connection is gone (reaped when they exit).
const ORPHANS: Token = Token(1);
/// The Unix socket listener (`--unix`), served by the same accept code as TCP.
const UNIX_LISTENER: Token = Token(2);
/// The UDP socket (`--udp`).
const UDP: Token = Token(3);
/// SIGINT and SIGTERM (a self-pipe that signal-hook writes to), and the
/// shutdown's deadline timer.
const SIGNALS: Token = Token(4);
const FIRST_CONN: usize = 16;
const PER_CONN: usize = 4;

fn conn_token(key: usize) -> Token {
    Token(FIRST_CONN + PER_CONN * key)
}

/// The tokens of a connection's exec child: stdout, stderr, pidfd.
fn child_tokens(key: usize) -> [Token; 3] {
    let base = FIRST_CONN + PER_CONN * key;
    [Token(base + 1), Token(base + 2), Token(base + 3)]
}

/// The slab key of a connection token (`None` for the server's own tokens), and
/// whether the token is the socket's (not one of its child's).
fn conn_key(token: Token) -> Option<(usize, bool)> {
    let n = token.0.checked_sub(FIRST_CONN)?;
    Some((n / PER_CONN, n % PER_CONN == 0))
}

/// Arms the connection's one timer, cancelling the one it replaces.
fn arm(r: &mut Reactor, conn: &mut Conn, key: usize, deadline: Instant) {
    if let Some(old) = conn.timer.replace(r.add_timer(deadline, conn_token(key))) {
        r.cancel_timer(old);
    }
}

/// Corks a TCP connection while a file body is pending and uncorks it once the
/// body is out. Corked, each `sendfile` fills whole segments instead of pushing
/// a short one at the end of every call (nginx's `tcp_nopush`; measured on
/// loopback: about 15% less server CPU per GiB of `get`). Uncorking pushes the
/// tail at once, so the end of a body and the replies behind it are not delayed.
fn cork_for_files(conn: &mut Conn) {
    let want = conn.out.has_file();
    if want != conn.corked && conn.stream.set_cork(want).is_ok() {
        conn.corked = want;
    }
}

/// A stream listener and its token.
struct Listening {
    token: Token,
    socket: Listener,
    /// Already in the revisit queue (its accept budget ran out).
    revisit_queued: bool,
}

pub struct Server {
    config: Config,
    /// TCP first, then Unix with `--unix`; emptied (closed) when shutting down.
    listeners: Vec<Listening>,
    udp: Option<Udp>,
    /// SIGINT and SIGTERM, when [`Server::catch_signals`] was called.
    signals: Option<Signals>,
    /// A signal came: no more accepting; exit once every connection is closed.
    stopping: bool,
    /// Exit now: a second signal, or the shutdown's time is up.
    abort: bool,
    conns: Slab<Conn>,
    services: Services,
    /// One read buffer for every connection: bytes are decoded straight out of it.
    scratch: Vec<u8>,
    /// Connections with output queued this turn, written at the end of the turn.
    to_flush: Vec<usize>,
    /// Connections closed this turn, freed at the end of the turn (two-phase
    /// close: a slab key is not reused while events for it may still be in hand).
    to_free: Vec<usize>,
    /// Scratch list of a push's recipients (reused: no allocation per push).
    push_keys: Vec<usize>,
    /// Chat pushes the connection being read has caused in this visit (fairness).
    visit_pushes: usize,
    /// Set while accepting is paused after running out of descriptors.
    accept_timer: Option<TimerId>,
    /// Whether the current out-of-descriptors episode was logged.
    accept_starved: bool,
}

/// An error that says which socket it is about.
fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Server {
    /// Binds the listeners and the UDP socket. The server starts serving in
    /// [`Server::run`]. Errors say which address failed.
    pub fn bind(config: Config, services: Services) -> io::Result<Server> {
        // mio sets SO_REUSEADDR, so a restart right after a stop binds at once.
        let tcp = TcpListener::bind(config.listen)
            .map_err(|e| context(e, format!("cannot listen on {}", config.listen)))?;
        let mut listeners = vec![Listening {
            token: LISTENER,
            socket: Listener::Tcp(tcp),
            revisit_queued: false,
        }];
        if let Some(path) = &config.unix {
            let unix = net::bind_unix(path).map_err(|e| {
                context(
                    e,
                    format!("cannot listen on Unix socket {}", path.display()),
                )
            })?;
            listeners.push(Listening {
                token: UNIX_LISTENER,
                socket: unix,
                revisit_queued: false,
            });
        }
        let udp = match config.udp {
            None => None,
            Some(addr) => Some(Udp::bind(addr, config.max_header, config.max_body).map_err(
                |e| {
                    context(
                        e,
                        format!("cannot bind UDP {addr} (--udp ADDR, or --udp off)"),
                    )
                },
            )?),
        };
        Ok(Server {
            config,
            listeners,
            udp,
            signals: None,
            stopping: false,
            abort: false,
            conns: Slab::new(),
            services,
            scratch: vec![0; tuning::READ_CHUNK],
            to_flush: Vec::new(),
            to_free: Vec::new(),
            push_keys: Vec::new(),
            visit_pushes: 0,
            accept_timer: None,
            accept_starved: false,
        })
    }

    /// The TCP listener's address (the port, when port 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self.listeners.first().map(|l| &l.socket) {
            Some(Listener::Tcp(l)) => l.local_addr(),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The UDP socket's address, when UDP is on.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|u| u.socket.local_addr().ok())
    }

    /// From now on SIGINT and SIGTERM shut the server down gracefully (a second
    /// one: at once) instead of killing the process. Called before the server says
    /// it is listening, so a signal sent right after that is never lost to the
    /// default action.
    pub fn catch_signals(&mut self) -> io::Result<()> {
        self.signals = Some(Signals::new([SIGINT, SIGTERM])?);
        Ok(())
    }

    /// Serves until a signal's shutdown is done (or forever without
    /// [`Server::catch_signals`]).
    pub fn run(mut self) -> io::Result<()> {
        let mut reactor = Reactor::new()?;
        for l in &mut self.listeners {
            reactor.register(&mut l.socket, l.token, Interest::READABLE)?;
        }
        if let Some(udp) = &mut self.udp {
            reactor.register(&mut udp.socket, UDP, Interest::READABLE)?;
        }
        if let Some(signals) = &mut self.signals {
            reactor.register(signals, SIGNALS, Interest::READABLE)?;
        }
        reactor.run(&mut self)?;
        // Connections still open after the shutdown's time: their jobs end here
        // (uploads' temp files go, exec children are killed).
        let open: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in open {
            self.free(&mut reactor, key);
        }
        log::info!("shut down");
        Ok(())
    }

    // ----- accepting -------------------------------------------------------

    fn accept(&mut self, r: &mut Reactor, token: Token) {
        if self.accept_timer.is_some() {
            return; // paused; the timer resumes accepting
        }
        let Some(i) = self.listeners.iter().position(|l| l.token == token) else {
            return; // closed by a shutdown
        };
        for _ in 0..tuning::ACCEPTS_PER_TURN {
            let Some(listening) = self.listeners.get(i) else {
                return;
            };
            match listening.socket.accept() {
                Ok((stream, peer)) => {
                    if self.accept_starved {
                        log::warn!("accepting connections again");
                        self.accept_starved = false;
                    }
                    self.open(r, stream, peer);
                }
                Err(e) if classify(&e) == IoClass::WouldBlock => return,
                Err(e) if classify(&e) == IoClass::Retry => continue,
                // The client gave up before we accepted: only that connection is gone.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the kernel's backlog and,
                    // edge-triggered, nothing wakes us for it again. Retrying at once would
                    // spin; exiting would drop every client. Pause and retry on a timer.
                    if !self.accept_starved {
                        let why = if is_resource_exhaustion(&e) {
                            "out of descriptors"
                        } else {
                            "error"
                        };
                        log::warn!(
                            "accept: {e} ({why}); pausing accepts, retrying every {:?}",
                            tuning::ACCEPT_PAUSE
                        );
                        self.accept_starved = true;
                    }
                    self.accept_timer = Some(r.add_timer(r.now() + tuning::ACCEPT_PAUSE, LISTENER));
                    return;
                }
            }
        }
        // More may be waiting; give the connections their turn first.
        if let Some(listening) = self.listeners.get_mut(i)
            && !listening.revisit_queued
        {
            listening.revisit_queued = true;
            r.revisit(token);
        }
    }

    fn open(&mut self, r: &mut Reactor, stream: Stream, peer: String) {
        let now = r.now();
        let over_limit = self.services.stats.conns_open as usize >= self.config.max_conns;
        if over_limit
            && self.conns.len() >= self.config.max_conns.saturating_add(tuning::OVERFLOW_CONNS)
        {
            self.services.stats.conns_refused += 1;
            return; // dropping the stream closes it
        }
        let authenticated = self.services.no_auth();
        let decoder = Decoder::new(self.services.limits(authenticated));
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let conn = entry.insert(Conn::new(stream, peer, State::Greeting, decoder, now));
        conn.session.set_key(key);
        log::trace!(target: TRACE, "  accept {} as conn {}", conn.peer, conn_token(key).0);
        if let Err(e) = r.register(&mut conn.stream, conn_token(key), Interest::READABLE) {
            log::warn!("register {}: {e}", conn.peer);
            self.conns.remove(key);
            return;
        }
        if over_limit {
            // Over --max-conns: a 503 and a polite close, never served.
            self.services.stats.conns_refused += 1;
            self.services.busy(&mut conn.out);
            self.close_politely(r, key, "over max-conns", None);
            return;
        }
        conn.counted = true;
        self.services.stats.conns_open += 1;
        self.services.stats.conns_total += 1;
        log::info!(
            "open {} ({} open)",
            conn.peer,
            self.services.stats.conns_open
        );
        if let Err(e) = self.services.greet(&mut conn.session, &mut conn.out) {
            log::error!("greeting {}: {e}", conn.peer);
            self.close_now(key, "server fault");
            return;
        }
        if authenticated {
            conn.set_state(conn_token(key), State::Serving);
            arm(r, conn, key, now + self.config.idle_timeout);
        } else {
            arm(r, conn, key, now + self.config.auth_timeout);
        }
        self.mark_flush(key);
    }

    // ----- reading and decoding ---------------------------------------------

    /// Serves a connection's input: stashed bytes first, then the socket.
    fn read_requests(&mut self, r: &mut Reactor, key: usize) {
        self.visit_pushes = 0;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.backpressured {
            return; // flush() queues a revisit once the output drains below half
        }
        if conn.busy {
            return self.read_ahead(r, key); // resume() reads on once the request ends
        }
        if !conn.stash.is_empty() {
            let mut stash = std::mem::take(&mut conn.stash);
            let used = self.feed(r, key, &stash);
            if used < stash.len() {
                stash.drain(..used);
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.stash = stash;
                }
                self.mark_flush(key);
                return;
            }
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        self.read_socket(r, key, &mut scratch);
        self.scratch = scratch;
        self.mark_flush(key);
    }

    /// Reads until `WouldBlock` (edge-triggered readiness fires once per arrival,
    /// so stopping early would strand bytes), within a per-turn budget (fairness).
    fn read_socket(&mut self, r: &mut Reactor, key: usize, scratch: &mut [u8]) {
        for _ in 0..tuning::READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if !conn.state.takes_requests() || conn.backpressured {
                return;
            }
            match conn.stream.read(scratch) {
                Ok(0) => {
                    log::trace!(target: TRACE, "  conn {}: read 0 B (peer closed its side)", conn_token(key).0);
                    return self.peer_eof(r, key);
                }
                Ok(n) => {
                    log::trace!(target: TRACE, "  conn {}: read {n} B", conn_token(key).0);
                    self.services.stats.bytes_in += n as u64;
                    let input = scratch.get(..n).unwrap_or_default();
                    let used = self.feed(r, key, input);
                    if used < n {
                        // Paused mid-buffer: keep the rest for when it resumes.
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.stash
                                .extend_from_slice(input.get(used..).unwrap_or_default());
                        }
                        return;
                    }
                }
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => return,
                    IoClass::Retry => continue,
                    IoClass::Fatal => return self.close_now(key, "read error"),
                },
            }
        }
        // Budget spent and the socket may hold more: no new edge will come for
        // those bytes, so ask to be revisited in the next turn, after the others.
        self.queue_revisit(r, key);
    }

    /// Runs `input` through the connection's decoder and the services. Returns the
    /// bytes used: fewer than `input.len()` when the connection paused at a frame
    /// boundary (output over the limit), all of them when it started closing.
    fn feed(&mut self, r: &mut Reactor, key: usize, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            // The last frame's chat pushes go out before the next frame is served.
            self.visit_pushes += self.deliver(r);
            let Some(conn) = self.conns.get_mut(key) else {
                return input.len();
            };
            if !conn.state.takes_requests() {
                return input.len();
            }
            if self.visit_pushes > tuning::PUSHES_PER_VISIT {
                // One `say` costs a push per member: a sender pipelining to a big room
                // pauses until the end of the turn has written them (fairness, and
                // bounded memory); flush() resumes it at once, through the revisit queue.
                conn.backpressured = true;
            }
            // A paused connection stops at the next frame boundary: the frame in
            // hand is finished (its body consumed), the next one waits.
            if (conn.backpressured || conn.busy) && conn.decoder.at_boundary() {
                return pos;
            }
            let rest = input.get(pos..).unwrap_or_default();
            let next = match conn.decoder.decode(rest) {
                Err(e) => {
                    self.services.framing_error(&e, &mut conn.out);
                    Next::Close("framing error")
                }
                Ok((n, event)) => {
                    pos += n;
                    match event {
                        None => return pos,
                        Some(Event::Head { header, oversized }) => {
                            log::trace!(target: TRACE, "  conn {}: frame op={} id={} size={}",
                                conn_token(key).0, header.op().as_deref().unwrap_or("-"),
                                header.id.map_or("-", |id| id.get()), header.size);
                            let io = ChildIo {
                                registry: r.registry(),
                                tokens: child_tokens(key),
                            };
                            self.services.head(
                                &mut conn.session,
                                &header,
                                oversized,
                                &mut conn.out,
                                &io,
                            )
                        }
                        Some(Event::Body(chunk)) => {
                            self.services.body(&mut conn.session, chunk);
                            Next::Continue
                        }
                        Some(Event::End) => self.services.end(&mut conn.session, &mut conn.out),
                    }
                }
            };
            // Activity for the idle timeout is frame progress, not raw bytes: a peer
            // trickling an unfinished header does not keep its connection alive.
            conn.last_active = r.now();
            if conn.out.len() > self.config.max_outbuf as u64 {
                // Stop reading this connection until its output drains below half.
                conn.backpressured = true;
            }
            match next {
                Next::Continue => {}
                Next::Busy => {
                    // The request goes on (a sum): the ones behind it wait, in order.
                    conn.busy = true;
                    self.queue_revisit(r, key);
                }
                Next::Waiting => {
                    // An exec: its child's events resume it; its timeout is the
                    // connection's one timer while it runs (it is not idle).
                    conn.busy = true;
                    if let Some(due) = self.services.job_deadline(&conn.session) {
                        arm(r, conn, key, due);
                    }
                }
                Next::Authenticated => {
                    conn.decoder.set_limits(self.services.limits(true));
                    conn.set_state(conn_token(key), State::Serving);
                    arm(r, conn, key, r.now() + self.config.idle_timeout);
                }
                Next::Close(reason) => {
                    self.close_politely(r, key, reason, None);
                    return input.len();
                }
            }
        }
    }

    /// Runs the next step of the request holding the connection; when it ends,
    /// the requests behind it are served (stashed ones first).
    fn resume(&mut self, r: &mut Reactor, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let next = self.services.resume(&mut conn.session, &mut conn.out);
        conn.last_active = r.now();
        if conn.out.len() > self.config.max_outbuf as u64 {
            conn.backpressured = true;
        }
        self.mark_flush(key);
        match next {
            Next::Busy => self.queue_revisit(r, key),
            Next::Waiting => {}
            Next::Close(reason) => self.close_politely(r, key, reason, None),
            Next::Continue | Next::Authenticated => {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.busy = false;
                    if conn.state == State::Serving {
                        // The job may have borrowed the timer for its deadline.
                        arm(r, conn, key, r.now() + self.config.idle_timeout);
                    }
                }
                self.read_requests(r, key);
            }
        }
    }

    /// While a request holds the connection, input is only read ahead into the
    /// stash, up to a bound: enough to notice the peer leaving (its job is then
    /// dropped: a sum stops, an upload's temp file goes) without buffering a
    /// pipelining client without limit. Beyond the bound the kernel holds the
    /// bytes; `resume` reads them once the request ends.
    fn read_ahead(&mut self, r: &mut Reactor, key: usize) {
        for _ in 0..tuning::READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.stash.len() >= tuning::READ_AHEAD_MAX || !conn.state.takes_requests() {
                return;
            }
            let room = tuning::READ_AHEAD_MAX - conn.stash.len();
            let buf = self
                .scratch
                .get_mut(..room.min(tuning::READ_CHUNK))
                .unwrap_or_default();
            match conn.stream.read(buf) {
                Ok(0) => return self.peer_eof(r, key),
                Ok(n) => {
                    self.services.stats.bytes_in += n as u64;
                    conn.stash
                        .extend_from_slice(buf.get(..n).unwrap_or_default());
                }
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => return,
                    IoClass::Retry => continue,
                    IoClass::Fatal => return self.close_now(key, "read error"),
                },
            }
        }
    }

    /// The peer closed its sending side. Replies already owed are still sent.
    fn peer_eof(&mut self, r: &mut Reactor, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.peer_eof = true;
        let reason = if conn.decoder.is_idle() {
            "peer closed"
        } else {
            "peer closed mid-frame"
        };
        self.close_politely(r, key, reason, None);
    }

    // ----- writing -----------------------------------------------------------

    fn mark_flush(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.to_flush.push(key);
        }
    }

    fn queue_revisit(&mut self, r: &mut Reactor, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.revisit_queued
        {
            conn.revisit_queued = true;
            r.revisit(conn_token(key));
        }
    }

    /// Writes what the connection owes, then sets its interest from its state.
    fn flush(&mut self, r: &mut Reactor, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        if conn.state == State::Closed {
            return;
        }
        if !conn.out.is_empty() {
            cork_for_files(conn);
            match conn
                .out
                .write_to(&mut conn.stream, tuning::FILE_SEND_PER_TURN)
            {
                Ok(done) => {
                    cork_for_files(conn);
                    let n = done.bytes;
                    log::trace!(target: TRACE, "  conn {}: wrote {n} B, {} B pending", conn_token(key).0, conn.out.len());
                    if n > 0 {
                        self.services.stats.bytes_out += n as u64;
                        conn.last_active = r.now();
                    }
                    if !done.blocked && !conn.out.is_empty() {
                        // Stopped by the per-turn file budget, not a full socket: no
                        // writable edge will come, so come back next turn.
                        self.queue_revisit(r, key);
                    }
                }
                Err(_) => return self.close_now(key, "write error"),
            }
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.backpressured && conn.out.len() <= self.config.max_outbuf as u64 / 2 {
            // Resume reading. Bytes already in the kernel buffer raise no new
            // readable edge, so the revisit queue must bring the connection back.
            conn.backpressured = false;
            self.queue_revisit(r, key);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state == State::Flushing && conn.out.is_empty() {
            return self.start_draining(r, key);
        }
        // Interest follows from state: WRITABLE only while output is left over.
        let want = if conn.out.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if want != conn.interest {
            match r
                .registry()
                .reregister(&mut conn.stream, conn_token(key), want)
            {
                Ok(()) => {
                    log::trace!(target: TRACE, "  conn {}: interest {want:?}", conn_token(key).0);
                    conn.interest = want;
                }
                Err(_) => self.close_now(key, "reregister failed"),
            }
        }
    }

    // ----- chat pushes -------------------------------------------------------

    /// Carries out the chat service's pushes: each frame is queued on its
    /// connection and written at the end of the turn. Returns how many were queued.
    fn deliver(&mut self, r: &mut Reactor) -> usize {
        let mut queued = 0;
        loop {
            let mut batch = self.services.take_pushes();
            if batch.is_empty() {
                self.services.return_pushes(batch);
                return queued;
            }
            let mut keys = std::mem::take(&mut self.push_keys);
            for push in batch.drain(..) {
                // Members are looked up now: one closed on the way (a slow
                // consumer) has left and is not pushed to.
                self.services.recipients(&push.to, &mut keys);
                for &to in &keys {
                    queued += usize::from(self.push_to(r, to, &push.frame));
                }
            }
            self.push_keys = keys;
            // A slow member closed on the way queued `left` pushes: go round again.
            self.services.return_pushes(batch);
        }
    }

    /// Queues one push. A connection that is closing is skipped. One whose unsent
    /// output is over `--max-outbuf` is written to at once (what it owes may have
    /// been queued this very turn); if it is still over, it is a slow consumer:
    /// closed politely with a `bye`, and the sender and the other members never
    /// wait for it. A push is queued whole, so a member's output stays within
    /// `--max-outbuf` plus one message.
    fn push_to(&mut self, r: &mut Reactor, to: usize, frame: &Rc<[u8]>) -> bool {
        let max = self.config.max_outbuf;
        if self.conns.get(to).is_some_and(|c| c.out.mem_len() > max) {
            self.flush(r, to);
        }
        let Some(conn) = self.conns.get_mut(to) else {
            return false;
        };
        if conn.state != State::Serving {
            return false;
        }
        let pending = conn.out.mem_len();
        if pending > max {
            self.services.stats.slow_consumers += 1;
            log::warn!(
                "{}: slow consumer ({pending} B unsent), disconnecting",
                conn.peer
            );
            self.close_politely(r, to, "slow consumer", Some("slow consumer"));
            return false;
        }
        conn.out.push_shared(frame);
        self.services.stats.frames_out += 1;
        self.mark_flush(to);
        true
    }

    // ----- closing -----------------------------------------------------------

    /// Closing politely, step 1: stop serving, queue the `bye` (if any) and send
    /// everything owed, within `FLUSH_LIMIT`.
    fn close_politely(
        &mut self,
        r: &mut Reactor,
        key: usize,
        reason: &'static str,
        bye: Option<&str>,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.state.takes_requests() {
            return;
        }
        if let Some(bye) = bye {
            self.services.bye(&mut conn.out, bye);
        }
        self.services.leave_chat(&mut conn.session);
        conn.close_reason = reason;
        conn.stash = Vec::new();
        conn.set_state(conn_token(key), State::Flushing);
        arm(r, conn, key, r.now() + tuning::FLUSH_LIMIT);
        self.mark_flush(key);
    }

    /// Step 2: everything is sent. Shut down our side and read-and-drop for up to
    /// `DRAIN_LIMIT`, so unread client bytes do not turn our close into a reset
    /// that destroys the last frame before the client reads it.
    fn start_draining(&mut self, r: &mut Reactor, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.peer_eof || conn.stream.shutdown_write().is_err() {
            let reason = conn.close_reason;
            return self.close_now(key, reason);
        }
        conn.set_state(conn_token(key), State::Draining);
        arm(r, conn, key, r.now() + tuning::DRAIN_LIMIT);
        // Bytes already buffered raise no new edge: look at them next turn.
        self.queue_revisit(r, key);
    }

    /// Reads and drops until the peer's EOF (then closes) or `WouldBlock`.
    fn drain(&mut self, r: &mut Reactor, key: usize) {
        for _ in 0..tuning::READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => {
                    let reason = conn.close_reason;
                    return self.close_now(key, reason);
                }
                Ok(n) => self.services.stats.bytes_in += n as u64,
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => return,
                    IoClass::Retry => continue,
                    IoClass::Fatal => {
                        let reason = conn.close_reason;
                        return self.close_now(key, reason);
                    }
                },
            }
        }
        self.queue_revisit(r, key);
    }

    /// Step 3 (or at once, after an I/O error): mark closed; freed at end of turn.
    fn close_now(&mut self, key: usize, reason: &'static str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state == State::Closed {
            return;
        }
        self.services.leave_chat(&mut conn.session);
        if conn.close_reason.is_empty() {
            conn.close_reason = reason;
        }
        conn.set_state(conn_token(key), State::Closed);
        self.to_free.push(key);
    }

    fn free(&mut self, r: &mut Reactor, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        if let Some(timer) = conn.timer {
            r.cancel_timer(timer);
        }
        // A running exec's child is killed; it is reaped when its pidfd fires on ORPHANS.
        self.services
            .release(&mut conn.session, r.registry(), ORPHANS);
        let _ = r.registry().deregister(&mut conn.stream);
        if conn.counted {
            self.services.stats.conns_open -= 1;
            log::info!(
                "close {} ({}), {} open",
                conn.peer,
                conn.close_reason,
                self.services.stats.conns_open
            );
        }
        // Dropping the stream closes the descriptor.
    }

    // ----- timers ------------------------------------------------------------

    /// The connection's one timer fired; what it means depends on the state.
    fn deadline(&mut self, r: &mut Reactor, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let now = r.now();
        match conn.state {
            State::Greeting => self.close_politely(r, key, "auth timeout", Some("auth timeout")),
            State::Serving if conn.busy && self.services.job_deadline(&conn.session).is_some() => {
                // An exec's timeout: kill the child; its exit (pidfd) finishes the reply.
                self.services.expire(&mut conn.session);
                arm(r, conn, key, now + self.config.idle_timeout);
                self.resume(r, key);
            }
            State::Serving => {
                let due = conn.last_active + self.config.idle_timeout;
                if due <= now {
                    self.close_politely(r, key, "idle timeout", Some("idle timeout"));
                } else {
                    // Activity since the timer was armed: lazily re-arm for the new deadline.
                    arm(r, conn, key, due);
                }
            }
            State::Flushing => self.close_now(key, "flush timeout"),
            State::Draining => {
                let reason = conn.close_reason;
                self.close_now(key, reason);
            }
            State::Closed => {}
        }
    }
}

impl Server {
    // ----- UDP ---------------------------------------------------------------

    fn serve_udp(&mut self, r: &mut Reactor) {
        let Some(udp) = &mut self.udp else {
            return; // closed by a shutdown
        };
        // Budget spent with datagrams perhaps left: no new edge will come for them.
        if udp.serve(&mut self.services.stats) && !udp.revisit_queued {
            udp.revisit_queued = true;
            r.revisit(UDP);
        }
    }

    // ----- shutting down -----------------------------------------------------

    /// SIGINT or SIGTERM arrived (signal-hook's handler wrote to its pipe).
    fn signalled(&mut self, r: &mut Reactor) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let caught: Vec<i32> = signals.pending().collect();
        for signal in caught {
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if self.stopping {
                log::warn!("{name} again: exiting now");
                self.abort = true;
                return;
            }
            self.shut_down(r, name);
        }
    }

    /// Stops accepting (the Unix socket file goes with its listener) and closes
    /// every connection politely: what it is owed, a `bye` (reason `shutdown`),
    /// then the close. A request still running (an exec, an upload, a sum) gets
    /// no reply: it is dropped when its connection is freed. The loop ends when
    /// the last connection is gone, or after `SHUTDOWN_LIMIT`.
    fn shut_down(&mut self, r: &mut Reactor, why: &str) {
        self.stopping = true;
        log::info!(
            "{why}: shutting down; {} connection(s) have {:?} to finish (a second signal exits at once)",
            self.conns.len(),
            tuning::SHUTDOWN_LIMIT
        );
        for mut l in self.listeners.drain(..) {
            let _ = r.registry().deregister(&mut l.socket);
        }
        if let Some(mut udp) = self.udp.take() {
            let _ = r.registry().deregister(&mut udp.socket);
        }
        if let Some(timer) = self.accept_timer.take() {
            r.cancel_timer(timer);
        }
        let open: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in open {
            self.close_politely(r, key, "shutdown", Some("shutdown"));
        }
        r.add_timer(r.now() + tuning::SHUTDOWN_LIMIT, SIGNALS);
    }
}

impl Handler for Server {
    fn ready(&mut self, r: &mut Reactor, token: Token, readiness: Readiness) {
        match token {
            LISTENER | UNIX_LISTENER => return self.accept(r, token),
            ORPHANS => return self.services.reap_orphans(),
            UDP => return self.serve_udp(r),
            SIGNALS => return self.signalled(r),
            _ => {}
        }
        let Some((key, socket)) = conn_key(token) else {
            return;
        };
        let Some((state, busy)) = self.conns.get(key).map(|c| (c.state, c.busy)) else {
            return;
        };
        if !socket {
            // The exec child's pipes or pidfd.
            if busy && state.takes_requests() {
                self.resume(r, key);
            }
            return;
        }
        if readiness.readable {
            match state {
                State::Greeting | State::Serving => self.read_requests(r, key),
                State::Draining => self.drain(r, key),
                // Flushing: input waits in the kernel until we drain it.
                State::Flushing | State::Closed => {}
            }
        }
        if readiness.writable {
            self.mark_flush(key);
        }
    }

    fn timer(&mut self, r: &mut Reactor, token: Token, id: TimerId) {
        if token == LISTENER {
            if self.accept_timer == Some(id) {
                self.accept_timer = None;
                // Paused accepting holds for every listener: resume them all.
                self.accept(r, LISTENER);
                self.accept(r, UNIX_LISTENER);
            }
            return;
        }
        if token == SIGNALS {
            // The shutdown's time is up (its only timer).
            log::warn!(
                "shutdown: {} connections still open after {:?}; exiting",
                self.conns.len(),
                tuning::SHUTDOWN_LIMIT
            );
            self.abort = true;
            return;
        }
        let Some((key, _)) = conn_key(token) else {
            return;
        };
        // Only the connection's current timer counts; any other is stale (lazy cancel).
        if let Some(conn) = self.conns.get_mut(key)
            && conn.timer == Some(id)
        {
            conn.timer = None;
            self.deadline(r, key);
        }
    }

    fn revisit(&mut self, r: &mut Reactor, token: Token) {
        match token {
            LISTENER | UNIX_LISTENER => {
                if let Some(l) = self.listeners.iter_mut().find(|l| l.token == token) {
                    l.revisit_queued = false;
                }
                return self.accept(r, token);
            }
            UDP => {
                if let Some(udp) = &mut self.udp {
                    udp.revisit_queued = false;
                }
                return self.serve_udp(r);
            }
            _ => {}
        }
        let Some((key, _)) = conn_key(token) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.revisit_queued = false;
        let (state, busy) = (conn.state, conn.busy);
        match state {
            State::Greeting | State::Serving if busy => self.resume(r, key),
            State::Greeting | State::Serving => self.read_requests(r, key),
            State::Draining => self.drain(r, key),
            State::Flushing | State::Closed => {}
        }
        // A revisit may also be owed to output held back by the file budget.
        if state == State::Flushing || state == State::Serving {
            self.mark_flush(key);
        }
    }

    fn end_of_turn(&mut self, r: &mut Reactor) {
        // Chat pushes not yet queued (a member's close sent its rooms `left`).
        self.deliver(r);
        // Write at the end of the turn: replies produced by several events go out in one writev.
        while !self.to_flush.is_empty() {
            let mut to_flush = std::mem::take(&mut self.to_flush);
            for key in to_flush.drain(..) {
                self.flush(r, key);
            }
            if self.to_flush.is_empty() {
                self.to_flush = to_flush; // keep the allocation
            }
            // A write error closed a chat member: the rest of its rooms hear `left`.
            self.deliver(r);
        }
        let mut to_free = std::mem::take(&mut self.to_free);
        for key in to_free.drain(..) {
            self.free(r, key);
        }
        self.to_free = to_free;
    }

    fn is_done(&self) -> bool {
        self.abort || (self.stopping && self.conns.is_empty())
    }
}
