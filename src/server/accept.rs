//! Accepting stream connections (TCP and Unix alike): a budget per turn,
//! `--max-conns`, and pausing when the process runs out of descriptors.

use super::limits::Place;
use super::{Server, Slot, Source, TLS};
use crate::config::tuning;
use crate::conn::Conn;
use crate::net::{IoClass, Peer, Stream, classify, is_resource_exhaustion};
use crate::reactor::{Reactor, TRACE};
use std::io;

impl Server {
    pub(super) fn accept(&mut self, r: &mut Reactor, i: usize) {
        if self.accept_timer.is_some() {
            return; // paused; the timer resumes accepting
        }
        for _ in 0..tuning::ACCEPTS_PER_TURN {
            let Some(Some(listener)) = self.listeners.get(i) else {
                return; // closed by a shutdown
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.accept_starved {
                        log::warn!("accepting connections again");
                        self.accept_starved = false;
                    }
                    // On the TLS listener, TLS goes between the socket and the machine;
                    // its login binds the MACs to the certificate (contract section 3).
                    let (stream, binding) = match (stream, &self.tls) {
                        (Stream::Tcp(sock), Some(tls)) if i == TLS => match tls.accept(sock) {
                            Ok(s) => (Stream::Tls(Box::new(s)), Some(tls.binding)),
                            Err(e) => {
                                log::warn!("{}: cannot start TLS: {e}", peer.name);
                                continue;
                            }
                        },
                        (stream, _) => (stream, None),
                    };
                    self.open(r, stream, peer, binding);
                }
                Err(e) if classify(&e) == IoClass::WouldBlock => return,
                Err(e) if classify(&e) == IoClass::Retry => continue,
                // The client gave up before we accepted: only that connection is gone.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return self.pause_accepting(r, &e),
            }
        }
        // More may be waiting; give the connections their turn first.
        r.revisit(Source::Listener(i).token());
    }

    /// EMFILE and friends: the connection stays in the kernel's backlog and,
    /// edge-triggered, nothing wakes us for it again. Retrying at once would spin;
    /// exiting would drop every client. Pause and retry on a timer.
    fn pause_accepting(&mut self, r: &mut Reactor, e: &io::Error) {
        if !self.accept_starved {
            let why = if is_resource_exhaustion(e) {
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
        let token = Source::Listener(0).token();
        self.accept_timer = Some(r.add_timer(r.now() + tuning::ACCEPT_PAUSE, token));
    }

    fn open(&mut self, r: &mut Reactor, mut stream: Stream, peer: Peer, binding: Option<[u8; 32]>) {
        // The slot it will take: nothing below adds or removes one before the insert.
        let key = self.conns.vacant_key();
        self.serials += 1;
        let serial = self.serials;
        // Behind a proxy, the client's address comes in the PROXY header: only
        // the place in line for login is taken now, the rest once the header is
        // read (`proxy.rs`).
        let proxied = self.config.proxy_protocol;
        let admitted = if proxied {
            self.take_line(r, key, serial)
        } else {
            self.admit(r, key, serial, &peer)
        };
        let place = match admitted {
            Ok(place) => Some(place),
            Err(why) => {
                log::debug!("{}: refused, {}", peer.name, why.reason());
                None
            }
        };
        // A refused connection still gets its 503 politely, up to a bound; one
        // waiting for its header takes a slot within the same bound.
        if (place.is_none() || proxied)
            && self.conns.len() >= self.config.max_conns.saturating_add(tuning::OVERFLOW_CONNS)
        {
            self.give_back(place, proxied, &peer);
            self.services.stats.refused();
            return; // dropping the stream closes it
        }
        let token = Source::Conn(key).token();
        log::trace!(target: TRACE, "  accept {} as conn {}", peer.name, token.0);
        let interest = stream.read_interest();
        if let Err(e) = r.register(&mut stream, token, interest) {
            log::warn!("register {}: {e}", peer.name);
            return self.give_back(place, proxied, &peer);
        }
        let (services, rules, now) = (&mut self.services, self.rules, r.now());
        let conn = match place {
            Some(_) if proxied => Conn::await_proxy(services, rules, key, token.0, binding, now),
            _ => Conn::open(services, rules, key, token.0, place.is_some(), binding, now),
        };
        self.conns.insert(Slot {
            stream,
            conn,
            peer: peer.name,
            interest,
            timer: None,
            corked: false,
            dirty: false,
            counted: false,
            ip: peer.ip,
            serial,
            unauth: place.flatten(),
            held: 0,
        });
        if !proxied || place.is_none() {
            self.opened(key, place.is_some() && !proxied, None);
        }
        self.touch(key);
    }

    /// Gives back the places a connection took that is not opened after all.
    fn give_back(&self, place: Option<Option<Place>>, proxied: bool, peer: &Peer) {
        if let Some(place) = place {
            if !proxied {
                self.release(peer.ip);
            }
            if let Some(place) = place {
                self.leave_line(place);
            }
        }
    }

    /// A greeted connection is counted: served (its places taken), with the
    /// proxy it came `via` if any, or refused.
    pub(super) fn opened(&mut self, key: usize, served: bool, via: Option<&str>) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if !served {
            self.services.stats.refused();
            return;
        }
        slot.counted = true;
        self.services.stats.opened();
        let via = via.map(|v| format!(" via {v}")).unwrap_or_default();
        let worker = if self.team.hub.workers() > 1 {
            format!(" on worker {}", self.me)
        } else {
            String::new()
        };
        let open = self.services.stats.conns_open();
        log::info!("open {}{via}{worker} ({open} open)", slot.peer);
    }
}
