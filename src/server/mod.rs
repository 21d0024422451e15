//! The server: the reactor's [`Handler`]. It owns the sockets, their tokens and
//! the slab of connections, and carries out what each connection machine
//! ([`crate::conn::Conn`]) wants. This file: the sources and their tokens,
//! setup, and the dispatch of events; accepting, connection I/O, chat pushes
//! and shutting down have a file each.

mod accept;
mod bus;
mod io;
mod limits;
mod proxy;
mod push;
mod shutdown;
mod sockets;
mod source;

pub use limits::Counts;
pub use sockets::{Sockets, bind};

use crate::config::{Config, tuning};
use crate::conn::{Conn, Rules};
use crate::hub::{Hub, Mail};
use crate::net::{Listener, Stream};
use crate::reactor::{Handler, Reactor, Readiness, TimerId};
use crate::service::Services;
use crate::tls::Tls;
use crate::udp::Udp;
use mio::{Interest, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use source::{Source, TLS};
use std::sync::Arc;
use std::time::Instant;

/// A connection's slot: its socket and what the loop keeps for it; the
/// protocol's state is in `conn`.
struct Slot {
    stream: Stream,
    conn: Conn,
    /// Peer address, for log lines.
    peer: String,
    /// Interest registered with the poller now.
    interest: Interest,
    /// The armed timer and when it fires; the machine's deadline may be later
    /// (it is re-armed when it fires early) but never earlier.
    timer: Option<(TimerId, Instant)>,
    /// TCP_CORK is set (while a file body goes out).
    corked: bool,
    /// Already in the list of connections to settle at the end of the turn.
    dirty: bool,
    /// Counted in `conns_open` (false for a connection refused with 503).
    counted: bool,
    /// The peer's address (`--max-conns-per-ip`; none for a Unix socket).
    ip: Option<std::net::IpAddr>,
    /// Numbers the connection among all this worker accepted, so a reused
    /// slot is not mistaken for the connection an old entry names.
    serial: u64,
    /// Its place in line as not yet authenticated (`--max-unauth`).
    unauth: Option<limits::Place>,
    /// Bytes it held when last settled (`--max-memory`).
    held: usize,
}

/// What the workers of one server share: the hub they meet at (chat, mail,
/// counters) and the section 9 counts. One worker has its own.
#[derive(Debug, Clone)]
pub struct Team {
    pub hub: Arc<Hub>,
    pub counts: Arc<Counts>,
}

impl Team {
    /// The team of workers whose counters are `stats`.
    pub fn new(stats: Vec<Arc<crate::service::stats::Stats>>) -> Team {
        Team {
            counts: Arc::new(Counts::new(stats.len())),
            hub: Arc::new(Hub::new(stats)),
        }
    }
}

pub struct Server {
    config: Config,
    /// Which worker this is (0 with one), and what it shares with the others.
    me: usize,
    team: Team,
    rules: Rules,
    /// At `TCP`, 1 (Unix) and `TLS`; `None` when not on, or once closed by a shutdown.
    listeners: Vec<Option<Listener>>,
    /// What the TLS listener's connections are served with.
    tls: Option<Tls>,
    udp: Option<Udp>,
    /// SIGINT and SIGTERM, when [`Server::catch_signals`] was called.
    signals: Option<Signals>,
    /// A signal came: no more accepting; exit once every connection is closed.
    stopping: bool,
    /// Exit now: a second signal, or the shutdown's time is up.
    abort: bool,
    conns: Slab<Slot>,
    services: Services,
    /// One read buffer for every connection: bytes are decoded straight out of it.
    scratch: Vec<u8>,
    /// Connections touched this turn, settled (written, re-armed, freed) at its end.
    to_settle: Vec<usize>,
    /// Scratch list of a push's recipients (reused: no allocation per push).
    push_keys: Vec<usize>,
    /// Chat pushes the connection being read has caused in this visit (fairness).
    visit_pushes: usize,
    /// Set while accepting is paused after running out of descriptors.
    accept_timer: Option<TimerId>,
    /// Whether the current out-of-descriptors episode was logged.
    accept_starved: bool,
    /// Connections accepted so far (numbers them: `Slot::serial`).
    serials: u64,
    /// Mail from other workers, taken when woken (reused).
    mail: Vec<Mail>,
    /// The chat bus's connections to Redis (`--bus`).
    bus: Option<bus::BusLink>,
}

/// An error that says which socket it is about.
fn context(e: std::io::Error, what: String) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Server {
    /// A lone server (one worker): binds its sockets. The server starts
    /// serving in [`Server::run`]. Errors say which address failed.
    pub fn bind(config: Config, services: Services) -> std::io::Result<Server> {
        let mut config = config;
        config.workers = 1;
        let sockets = bind(&config, services.open_limits())?
            .pop()
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let team = Team::new(vec![Arc::clone(&services.stats)]);
        Ok(Server::new(config, services, sockets, team, 0))
    }

    /// Worker `me` of `team`, on `sockets` (see [`bind`]).
    pub fn new(
        config: Config,
        mut services: Services,
        sockets: Sockets,
        team: Team,
        me: usize,
    ) -> Server {
        services.join(Arc::clone(&team.hub), me);
        let bus = config.bus_target.clone().map(|target| {
            services.use_bus(bus::node(&config, &target.url, me));
            bus::BusLink::new(target)
        });
        Server {
            bus,
            rules: Rules {
                idle_timeout: config.idle_timeout,
                auth_timeout: config.auth_timeout,
                max_outbuf: config.max_outbuf,
            },
            config,
            me,
            team,
            listeners: sockets.listeners,
            tls: sockets.tls,
            udp: sockets.udp,
            signals: None,
            stopping: false,
            abort: false,
            conns: Slab::new(),
            services,
            scratch: vec![0; tuning::READ_CHUNK],
            to_settle: Vec::new(),
            push_keys: Vec::new(),
            visit_pushes: 0,
            accept_timer: None,
            accept_starved: false,
            serials: 0,
            mail: Vec::new(),
        }
    }

    /// From now on SIGINT and SIGTERM shut the server down gracefully (a second
    /// one: at once) instead of killing the process. Called before the server says
    /// it is listening, so a signal sent right after that is never lost to the
    /// default action.
    pub fn catch_signals(&mut self) -> std::io::Result<()> {
        self.signals = Some(Signals::new([SIGINT, SIGTERM])?);
        Ok(())
    }

    /// Serves until a signal's shutdown is done (or forever without
    /// [`Server::catch_signals`]).
    pub fn run(mut self) -> std::io::Result<()> {
        let mut reactor = Reactor::new()?;
        for (i, listener) in self.listeners.iter_mut().enumerate() {
            if let Some(l) = listener {
                reactor.register(l, Source::Listener(i).token(), Interest::READABLE)?;
            }
        }
        if let Some(udp) = &mut self.udp {
            reactor.register(&mut udp.socket, Source::Udp.token(), Interest::READABLE)?;
        }
        if let Some(signals) = &mut self.signals {
            reactor.register(signals, Source::Signals.token(), Interest::READABLE)?;
        }
        // Blocking file work runs on a few threads, and other workers post
        // mail: either wakes the loop through its one waker.
        let waker = Arc::new(reactor.waker(Source::Woken.token())?);
        self.team.hub.set_waker(self.me, Arc::clone(&waker));
        self.services.start_pool(Arc::new(move || {
            let _ = waker.wake();
        }))?;
        self.bus_start(&mut reactor);
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

    /// Remembers to settle the connection at the end of the turn.
    fn touch(&mut self, key: usize) {
        if let Some(slot) = self.conns.get_mut(key)
            && !slot.dirty
        {
            slot.dirty = true;
            self.to_settle.push(key);
        }
    }

    /// Carries out pushes a connection's event left behind (its close sent its
    /// rooms `left`) before the next event: a room's members are looked up when
    /// a push is carried out, so one who joins later must not get it.
    fn pushes_now(&mut self, r: &mut Reactor) {
        if self.services.has_pushes() {
            self.send_pushes(r);
        }
    }

    /// Blocking work is done: its connections take their next step.
    fn pool_ready(&mut self, r: &mut Reactor) {
        let mut ready = Vec::new();
        self.services.pool_ready(&mut ready);
        for key in ready {
            self.resume(r, key);
        }
    }

    /// What other workers posted: chat pushes for members here, and
    /// unauthenticated connections that give way to newer ones elsewhere.
    fn read_mail(&mut self, r: &mut Reactor) {
        let mut mail = std::mem::take(&mut self.mail);
        self.team.hub.take(self.me, &mut mail);
        for m in mail.drain(..) {
            match m {
                Mail::GiveWay { key, serial } => self.give_way(r, key, serial),
                Mail::OverMemory => {
                    self.evict_over_memory(r);
                }
                Mail::Chat(delivery) => self.services.deliver(delivery),
            }
        }
        self.mail = mail;
        self.pushes_now(r);
    }

    fn serve_udp(&mut self, r: &mut Reactor) {
        let Some(udp) = &mut self.udp else {
            return; // closed by a shutdown
        };
        // Budget spent with datagrams perhaps left: no new edge will come for them.
        if udp.serve(&self.services.stats) {
            r.revisit(Source::Udp.token());
        }
    }
}

impl Handler for Server {
    fn ready(&mut self, r: &mut Reactor, token: Token, readiness: Readiness) {
        match Source::of(token) {
            Some(Source::Listener(i)) => self.accept(r, i),
            Some(Source::Udp) => self.serve_udp(r),
            Some(Source::Signals) => self.signalled(r),
            Some(Source::Orphans) => self.services.reap_orphans(),
            Some(Source::Woken) => {
                self.pool_ready(r);
                self.read_mail(r);
            }
            Some(Source::Conn(key)) => {
                if readiness.readable {
                    self.read(r, key, !readiness.read_all);
                }
                // Writable: the end of the turn writes what is owed.
                self.touch(key);
                self.pushes_now(r);
            }
            Some(Source::Child(key)) => self.resume(r, key),
            Some(Source::Bus(line)) => self.bus_ready(r, line),
            None => {}
        }
    }

    fn timer(&mut self, r: &mut Reactor, token: Token, id: TimerId) {
        match Source::of(token) {
            Some(Source::Listener(_)) if self.accept_timer == Some(id) => {
                self.accept_timer = None;
                // Paused accepting holds for every listener: resume them all.
                for i in 0..self.listeners.len() {
                    self.accept(r, i);
                }
            }
            Some(Source::Signals) => self.shutdown_overdue(),
            Some(Source::Bus(_)) => self.bus_timer(r, id),
            Some(Source::Conn(key)) => {
                // Only the slot's current timer counts; any other is stale (lazy cancel).
                let Some(slot) = self.conns.get_mut(key) else {
                    return;
                };
                if slot.timer.is_some_and(|(armed, _)| armed == id) {
                    slot.timer = None;
                    slot.conn.timer(&mut self.services, r.now());
                    self.touch(key);
                    self.pushes_now(r);
                }
            }
            _ => {}
        }
    }

    fn revisit(&mut self, r: &mut Reactor, token: Token) {
        match Source::of(token) {
            Some(Source::Listener(i)) => self.accept(r, i),
            Some(Source::Udp) => self.serve_udp(r),
            Some(Source::Bus(line)) => self.bus_ready(r, line),
            Some(Source::Conn(key)) => {
                // A job's next step (if one runs; it may end it), then the input
                // as the machine wants it now (read ahead, serve, or drain).
                self.resume(r, key);
                self.read(r, key, false);
                // Output held back by the file budget goes out now too.
                self.touch(key);
                self.pushes_now(r);
            }
            _ => {}
        }
    }

    fn end_of_turn(&mut self, r: &mut Reactor) {
        // Chat pushes not yet carried out (a member's close sent its rooms `left`).
        self.send_pushes(r);
        // The turn's publishes go to Redis before the settling: a bus found
        // lost here answers its waiting ops 503 in this turn's writes.
        self.bus_flush(r);
        loop {
            // Write at the end of the turn: replies produced by several events go
            // out in one writev.
            while !self.to_settle.is_empty() {
                let mut to_settle = std::mem::take(&mut self.to_settle);
                for key in to_settle.drain(..) {
                    self.settle(r, key);
                }
                if self.to_settle.is_empty() {
                    self.to_settle = to_settle; // keep the allocation
                }
                // A write error closed a chat member: the rest of its rooms hear `left`.
                self.send_pushes(r);
            }
            // Settling brought the memory total up to date; the evicted are settled again.
            if !self.evict_over_memory(r) {
                break;
            }
        }
        // And what the settling published (a member closed by a write error).
        self.bus_flush(r);
    }

    fn is_done(&self) -> bool {
        self.abort || (self.stopping && self.conns.is_empty())
    }
}
