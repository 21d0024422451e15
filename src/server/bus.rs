//! The chat bus's two connections to Redis (contract section 12): made
//! without blocking, read and written by this loop like any socket, and made
//! again after a loss with a backoff that doubles up to 5 s. A Redis that
//! owes answers and sends nothing for 3 s is lost too. What the bytes mean is
//! the bus node's business (src/bus); chat sees only its events.

use super::{Server, Source};
use crate::bus::{self, Event, LINES, Line};
use crate::net::Stream;
use crate::net::{IoClass, classify};
use crate::reactor::{Reactor, TimerId};
use mio::Interest;
use mio::net::TcpStream;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first wait before connecting again, doubled at each failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long Redis has to answer our hello on new connections.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// While up, the bus's timer ticks this often; a connection that owes answers
/// and neither read nor wrote a byte for `SILENCE` is lost.
const TICK: Duration = Duration::from_secs(1);
const SILENCE: Duration = Duration::from_secs(3);
/// Reads of one connection per visit: the bus is one source among thousands.
const READS_PER_VISIT: usize = 16;
/// Commands waiting to be written past this: Redis does not keep up, and the
/// bus is made again rather than growing without bound.
const MAX_UNWRITTEN: usize = 64 << 20;

pub(super) struct BusLink {
    target: bus::Target,
    /// Plain TCP, or TLS with `rediss://`.
    socks: [Option<Stream>; 2],
    /// Armed while connecting (the hello's deadline), while down (the next
    /// try), and while up (the tick that looks for a silent Redis).
    timer: Option<TimerId>,
    backoff: Duration,
    /// Both connections are in.
    up: bool,
    /// Chat is served through it (subscribed again to everything here): only
    /// then is the backoff reset, so a Redis that takes the hello but refuses
    /// the rest is not tried ten times a second.
    served: bool,
    /// The current outage was logged, and why (a line per outage and reason,
    /// not per try).
    said_lost: Option<String>,
    /// When each connection last read or wrote a byte (a long publish still
    /// being written keeps its connection alive).
    last_io: [Instant; 2],
}

impl BusLink {
    pub(super) fn new(target: bus::Target) -> BusLink {
        BusLink {
            target,
            socks: [None, None],
            timer: None,
            backoff: FIRST_BACKOFF,
            up: false,
            served: false,
            said_lost: None,
            last_io: [Instant::now(); 2],
        }
    }
}

impl BusLink {
    /// A new connection to Redis, being made (non-blocking); with TLS, its
    /// handshake goes on as the loop reads and writes it.
    fn stream(&self) -> std::io::Result<Stream> {
        let sock = TcpStream::connect(self.target.addr)?;
        let session = match &self.target.tls {
            None => None,
            Some((config, name)) => Some(
                rustls::ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(std::io::Error::other)?,
            ),
        };
        Ok(stream(sock, session))
    }

    /// `stream` as `line`, registered with the loop.
    fn register(&mut self, r: &Reactor, line: Line, mut stream: Stream) -> std::io::Result<()> {
        let token = Source::Bus(line as usize).token();
        r.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        self.socks[line as usize] = Some(stream);
        Ok(())
    }
}

/// A bus connection: plain, or inside TLS with `session`.
fn stream(sock: TcpStream, session: Option<rustls::ClientConnection>) -> Stream {
    match session {
        None => Stream::Tcp(sock),
        Some(session) => Stream::Tls(Box::new(crate::tls::TlsStream::new(sock, session.into()))),
    }
}

impl Server {
    /// Before the loop serves anyone: the bus's connections made and greeted,
    /// blocking as the check at start was, so no client meets a bus still
    /// coming up. Should Redis have gone since, the loop makes them as after
    /// a loss.
    pub(super) fn bus_start(&mut self, r: &mut Reactor) {
        for line in LINES {
            let Some(link) = &mut self.bus else {
                return;
            };
            let made = bus::greet(&link.target).and_then(|(sock, session)| {
                sock.set_nonblocking(true).map_err(|e| e.to_string())?;
                let stream = stream(TcpStream::from_std(sock), session);
                link.register(r, line, stream).map_err(|e| e.to_string())
            });
            if let Err(why) = made {
                return self.bus_lost(r, &why);
            }
            let up = self.services.bus_node().and_then(|node| node.greeted(line));
            if let Some(event) = up {
                self.bus_up(r);
                self.services.bus_event(event);
                self.bus_served();
            }
        }
    }

    /// Both connections are in: chat subscribes again to everything here, and
    /// the timer ticks from now on.
    fn bus_up(&mut self, r: &mut Reactor) {
        let Some(link) = &mut self.bus else {
            return;
        };
        link.up = true;
        link.last_io = [r.now(); 2];
        if let Some(timer) = link.timer.take() {
            r.cancel_timer(timer);
        }
        link.timer = Some(r.add_timer(r.now() + TICK, Source::Bus(0).token()));
    }

    /// Once chat is served through the bus again: said, and the backoff reset.
    fn bus_served(&mut self) {
        let Some(link) = &mut self.bus else {
            return;
        };
        if link.up && !link.served && self.services.bus_usable() {
            link.served = true;
            link.backoff = FIRST_BACKOFF;
            link.said_lost = None;
            log::info!("bus up: {}", link.target.url);
        }
    }

    /// Connects the bus's two connections (their hello is already queued).
    pub(super) fn bus_connect(&mut self, r: &mut Reactor) {
        let Some(link) = &mut self.bus else {
            return;
        };
        for line in LINES {
            let made = link
                .stream()
                .and_then(|stream| link.register(r, line, stream));
            if let Err(e) = made {
                return self.bus_lost(r, &format!("cannot connect: {e}"));
            }
        }
        let deadline = r.now() + HELLO_TIMEOUT;
        link.timer = Some(r.add_timer(deadline, Source::Bus(0).token()));
    }

    /// A bus connection is ready: reads what Redis sent (a budget per visit),
    /// hands its events on, and writes what waits.
    pub(super) fn bus_ready(&mut self, r: &mut Reactor, line: usize) {
        let Some(line) = LINES.get(line).copied() else {
            return;
        };
        // Edge-triggered: read until `WouldBlock` (or the end), or revisit. No
        // short-read shortcut: Redis's close may come in the edge that brought
        // its last bytes, and no later edge would tell of it.
        for _ in 0..READS_PER_VISIT {
            let Some(sock) = self
                .bus
                .as_mut()
                .and_then(|l| l.socks[line as usize].as_mut())
            else {
                return;
            };
            let n = match sock.read(&mut self.scratch) {
                Ok(0) => return self.bus_lost(r, "Redis closed the connection"),
                Ok(n) => n,
                Err(e) => match classify(&e) {
                    IoClass::WouldBlock => return self.bus_flush(r),
                    IoClass::Retry => continue,
                    IoClass::Fatal => return self.bus_lost(r, &e.to_string()),
                },
            };
            let Some(node) = self.services.bus_node() else {
                return;
            };
            node.received(line, self.scratch.get(..n).unwrap_or_default());
            if let Some(link) = &mut self.bus {
                link.last_io[line as usize] = r.now();
            }
            if let Err(why) = self.bus_events(r, line) {
                return self.bus_lost(r, why);
            }
        }
        // Budget spent with bytes perhaps left: no new edge will come for them.
        r.revisit(Source::Bus(line as usize).token());
        self.bus_flush(r);
    }

    /// Hands every whole event read on `line` to the services.
    fn bus_events(&mut self, r: &mut Reactor, line: Line) -> Result<(), &'static str> {
        while let Some(event) = self
            .services
            .bus_node()
            .map(|node| node.next_event(line))
            .transpose()
            .map_err(|e| e.0)?
            .flatten()
        {
            match event {
                Event::Up => self.bus_up(r),
                // A join's barrier among the answers: what came before it goes
                // to the members of then, before the joiner is one.
                Event::Answer { .. } => self.pushes_now(r),
                Event::Message { .. } => {}
            }
            self.services.bus_event(event);
        }
        self.bus_served();
        // Answers ready the ops waiting for them; messages queued pushes.
        self.pool_ready(r);
        self.pushes_now(r);
        Ok(())
    }

    /// Writes what the bus has for Redis (end of turn: a turn's publishes
    /// go out together).
    pub(super) fn bus_flush(&mut self, r: &mut Reactor) {
        for line in LINES {
            let (Some(link), Some(node)) = (&mut self.bus, self.services.bus_node()) else {
                return;
            };
            let Some(sock) = link.socks[line as usize].as_mut() else {
                continue;
            };
            let out = node.output(line);
            let mut written = 0;
            let failed = loop {
                let Some(rest) = out.get(written..).filter(|rest| !rest.is_empty()) else {
                    // TLS: the records rustls still holds.
                    break sock
                        .flush()
                        .err()
                        .filter(|e| classify(e) == IoClass::Fatal)
                        .map(|e| e.to_string());
                };
                match sock.write(rest) {
                    Ok(0) => break Some("Redis stopped taking bytes".to_string()),
                    Ok(n) => written += n,
                    Err(e) => match classify(&e) {
                        IoClass::WouldBlock => break None,
                        IoClass::Retry => {}
                        IoClass::Fatal => break Some(e.to_string()),
                    },
                }
            };
            out.drain(..written);
            if written > 0 {
                link.last_io[line as usize] = r.now();
            }
            let failed = failed.or_else(|| {
                (out.len() > MAX_UNWRITTEN).then(|| "Redis does not keep up".to_string())
            });
            if let Some(why) = failed {
                return self.bus_lost(r, &why);
            }
        }
    }

    /// The bus's timer: a tick while up (a Redis silent while it owes answers
    /// is lost), Redis did not answer the hello in time, or it is time to try
    /// again.
    pub(super) fn bus_timer(&mut self, r: &mut Reactor, id: TimerId) {
        let (Some(link), Some(node)) = (&mut self.bus, self.services.bus_node()) else {
            return;
        };
        if link.timer != Some(id) {
            return; // stale
        }
        link.timer = None;
        if link.up {
            let now = r.now();
            let silent = |line: Line| {
                node.owes(line)
                    && now.saturating_duration_since(link.last_io[line as usize]) >= SILENCE
            };
            if LINES.into_iter().any(silent) {
                return self.bus_lost(r, "no answer from Redis for 3 s");
            }
            link.timer = Some(r.add_timer(r.now() + TICK, Source::Bus(0).token()));
        } else if link.socks.iter().all(Option::is_none) {
            self.bus_connect(r);
        } else {
            self.bus_lost(r, "no answer from Redis");
        }
    }

    /// The bus is lost (or a try failed): its connections go, chat answers 503
    /// meanwhile, and a new try is timed.
    fn bus_lost(&mut self, r: &mut Reactor, why: &str) {
        let said = self.services.bus_node().and_then(|node| node.take_error());
        let why = match said {
            Some(e) => format!("{why}: {e}"),
            None => why.to_string(),
        };
        let Some(link) = &mut self.bus else {
            return;
        };
        for sock in &mut link.socks {
            if let Some(mut sock) = sock.take() {
                let _ = r.deregister(&mut sock);
            }
        }
        if link.said_lost.as_deref() != Some(why.as_str()) {
            log::warn!(
                "bus lost ({}: {why}): chat answers 503 until it is back; trying again within {:?}",
                link.target.url,
                MAX_BACKOFF
            );
        }
        link.said_lost = Some(why);
        link.up = false;
        link.served = false;
        if let Some(timer) = link.timer.take() {
            r.cancel_timer(timer);
        }
        link.timer = Some(r.add_timer(r.now() + link.backoff, Source::Bus(0).token()));
        link.backoff = (link.backoff * 2).min(MAX_BACKOFF);
        self.services.bus_lost();
        self.pool_ready(r);
    }
}

/// The node of worker `me`, for `config`'s bus.
pub(super) fn node(config: &crate::config::Config, url: &bus::Url, me: usize) -> bus::Node {
    let origin = bus::origin(crate::service::files::server_id(), me);
    let max_frame = usize::try_from(config.max_body)
        .unwrap_or(usize::MAX)
        .saturating_add(config.max_header as usize);
    bus::Node::new(url, origin, max_frame)
}
