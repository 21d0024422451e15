//! How a connection starts: opened and greeted at once, or, behind a proxy
//! (`--proxy-protocol`), after its PROXY header is read and its address admitted.

use super::{Conn, Rules, State};
use crate::outbuf::OutBuf;
use crate::proto::Decoder;
use crate::proto::proxy::{self, Parsed};
use crate::service::{Services, Session};
use std::net::SocketAddr;
use std::time::Instant;

impl Conn {
    /// A new connection: greeted (a hello, or with `--no-auth` straight to
    /// serving), or, when not `admitted` (over `--max-conns`), told 503 and closed.
    /// `key` names it to the chat service; `label` in trace lines; `binding` is
    /// the TLS channel binding its login's MACs take in (contract section 3).
    pub fn open(
        services: &mut Services,
        rules: Rules,
        key: usize,
        label: usize,
        admitted: bool,
        binding: Option<[u8; 32]>,
        now: Instant,
    ) -> Conn {
        let mut conn = Conn::await_proxy(services, rules, key, label, binding, now);
        conn.greet(services, admitted);
        conn
    }

    /// A new connection behind a proxy (`--proxy-protocol`): it says nothing
    /// until the server has read its PROXY header and admitted the address in it.
    pub fn await_proxy(
        services: &mut Services,
        rules: Rules,
        key: usize,
        label: usize,
        binding: Option<[u8; 32]>,
        now: Instant,
    ) -> Conn {
        let mut session = Session::new(key);
        session.binding = binding;
        Conn {
            state: State::Proxy,
            decoder: Decoder::new(services.first_limits()),
            session,
            out: OutBuf::default(),
            stash: Vec::new(),
            rules,
            now,
            since: now,
            last_active: now,
            close_reason: "",
            revisit: false,
            watch: false,
            shutdown: false,
            input_ended: false,
            label,
        }
    }

    /// The first bytes of the input, peeked (at most [`proxy::MAX_LEN`]): the
    /// header's length and the client's address once they hold a whole PROXY
    /// header (the server then takes exactly those bytes from the socket);
    /// `None` while more are needed, or when they are not a header (it is closed).
    pub fn proxy_header(
        &mut self,
        services: &mut Services,
        peeked: &[u8],
        now: Instant,
    ) -> Option<(usize, Option<SocketAddr>)> {
        self.now = now;
        match proxy::parse(peeked) {
            Parsed::Incomplete => None,
            Parsed::Invalid => {
                self.close(services, "bad PROXY header");
                None
            }
            Parsed::Header { len, source } => Some((len, source)),
        }
    }

    /// Greets it, as [`Conn::open`] says (after the PROXY header, if one came).
    pub fn greet(&mut self, services: &mut Services, admitted: bool) {
        // The auth timeout counts from the accept, a PROXY header's wait included.
        let opened = self.since;
        self.set_state(State::Greeting);
        self.since = opened;
        if !admitted {
            services.too_many_conns(&mut self.out);
            self.start_closing(services, "over max-conns", None, true);
        } else if let Err(e) = services.greet(&mut self.session, &mut self.out) {
            log::error!("greeting conn {}: {e}", self.label);
            self.close(services, "server fault");
        } else if self.session.user.is_some() {
            self.set_state(State::Serving); // --no-auth
        }
    }
}
