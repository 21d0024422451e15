//! The handshake of contract section 3 (the hello, the HMAC login) and the
//! frames the server sends on its own: `bye`, the 503 over `--max-conns`, and
//! the error that ends a stream whose framing broke.

use super::jobs::Then;
use super::{Next, Services, Session};
use crate::auth::{self, AUTH_FAILED};
use crate::outbuf::OutBuf;
use crate::proto::header::{FieldError, req_str};
use crate::proto::{FrameError, HeadWriter, Header};

impl Services {
    /// Queues the hello push for a new connection. With `--no-auth` the session starts
    /// authenticated as `anonymous`.
    pub fn greet(&mut self, session: &mut Session, out: &mut OutBuf) -> std::io::Result<()> {
        let server = concat!("frameloop/", env!("CARGO_PKG_VERSION"));
        let (max_header, max_body) = (self.open_limits.max_header, self.open_limits.max_body);
        if self.no_auth {
            session.user = Some("anonymous".to_string());
            self.chat.online(&mut session.chat, "anonymous", 0);
            out.append(|buf| {
                let mut w = HeadWriter::push(buf, "hello");
                w.field("proto", &1)
                    .field("server", server)
                    .field("auth", "none");
                w.field("max_header", &max_header)
                    .field("max_body", &max_body);
                w.finish(0);
            });
        } else {
            session.nonce = auth::random32()?;
            let mut hex = [0u8; 64];
            // 32 bytes always fit 64 hex digits.
            let _ = hex::encode_to_slice(session.nonce, &mut hex);
            let nonce = std::str::from_utf8(&hex).unwrap_or_default();
            out.append(|buf| {
                let mut w = HeadWriter::push(buf, "hello");
                w.field("proto", &1)
                    .field("server", server)
                    .field("auth", "hmac-sha256");
                w.field("nonce", nonce);
                if session.binding.is_some() {
                    w.field("cb", "tls-server-end-point");
                }
                w.field("max_header", &max_header)
                    .field("max_body", &max_body);
                w.finish(0);
            });
        }
        Ok(())
    }

    /// The `auth` request: on success the reply proves the server knows the key
    /// too, and the answer carries the connection's new limits.
    pub(super) fn authenticate(
        &mut self,
        session: &mut Session,
        header: &Header,
        id: Option<u64>,
        out: &mut OutBuf,
    ) -> Next {
        let fields = || -> Result<_, FieldError> {
            Ok((
                req_str(header.user, "user")?,
                req_str(header.cnonce, "cnonce")?,
                req_str(header.mac, "mac")?,
            ))
        };
        let checked = fields().ok().and_then(|(user, cnonce, mac)| {
            let cnonce = auth::hex32(&cnonce)?;
            let mac = auth::hex32(&mac)?;
            // An unknown user costs the same HMAC as a known one, so timing does not tell them apart.
            let key = self.users.key(&user).copied();
            let login = auth::Login {
                nonce: &session.nonce,
                cnonce: &cnonce,
                user: &user,
                cb: session.binding.as_ref(),
            };
            let ok = login.verify_client(&key.unwrap_or_default(), &mac);
            (ok && key.is_some()).then(|| (user, cnonce, key.unwrap_or_default()))
        });
        let Some((user, cnonce, key)) = checked else {
            return self.refuse_login(out, id, "authentication failed");
        };
        // Counted now (across workers too), so two logins cannot both take the last.
        if !self
            .chat
            .online(&mut session.chat, &user, self.max_conns_per_user)
        {
            self.error(out, 503, id, "too many connections for this user");
            return Next::Close("over max-conns-per-user");
        }
        let login = auth::Login {
            nonce: &session.nonce,
            cnonce: &cnonce,
            user: &user,
            cb: session.binding.as_ref(),
        };
        let proof = login.server_mac(&key);
        let mut hex = [0u8; 64];
        let _ = hex::encode_to_slice(proof, &mut hex);
        out.append(|buf| {
            let mut w = HeadWriter::reply(buf, 200, id);
            w.field("user", user.as_ref())
                .field("mac", std::str::from_utf8(&hex).unwrap_or_default());
            w.finish(0);
        });
        // Under --quota, the first login of a user walks their tree (on the pool):
        // their requests wait for it, so they are judged from an exact count.
        let walk = if self.files.needs_walk(&user) {
            Some(self.files.walk_task(&mut session.files, &user))
        } else {
            None
        };
        session.user = Some(user.into_owned());
        match walk {
            Some(Ok(task)) => self.send_to_pool(session, id, task, Then::Login(self.open_limits)),
            // A walk that cannot start now is tried again by the first request
            // that needs the count (on the loop).
            Some(Err(e)) => {
                log::warn!("cannot walk a user's tree for the quota: {}", e.message);
                Next::Authenticated(self.open_limits)
            }
            None => Next::Authenticated(self.open_limits),
        }
    }

    /// A 401 (the one text for every failed login) and a close.
    pub(super) fn refuse_login(
        &mut self,
        out: &mut OutBuf,
        id: Option<u64>,
        why: &'static str,
    ) -> Next {
        self.stats.auth_failed();
        self.error(out, 401, id, AUTH_FAILED);
        Next::Close(why)
    }

    /// A framing error: one reply without id; the connection then closes.
    pub fn framing_error(&mut self, err: &FrameError, out: &mut OutBuf) {
        self.stats.protocol_error();
        self.error(out, err.status(), None, &err.message());
    }

    /// The `bye` push sent before the server closes a connection on its own.
    pub fn bye(&mut self, out: &mut OutBuf, reason: &str) {
        out.append(|buf| {
            let mut w = HeadWriter::push(buf, "bye");
            w.field("reason", reason);
            w.finish(0);
        });
    }

    /// The 503 for a connection over `--max-conns`.
    pub fn too_many_conns(&mut self, out: &mut OutBuf) {
        self.error(out, 503, None, "too many connections");
    }
}
