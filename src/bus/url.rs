//! The `--bus` address: `redis://[USER:PASSWORD@]HOST:PORT`, or `rediss://`
//! for TLS to Redis. USER and PASSWORD may be percent-encoded.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    /// A name or an address (an IPv6 one without its brackets).
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `rediss://`: TLS to Redis.
    pub tls: bool,
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
fn unescape(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = tail.get(2..)?;
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let bad = |why: &str| format!("--bus {why}: want redis://[USER:PASSWORD@]HOST:PORT");
        let (tls, rest) = if let Some(rest) = text.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(bad("must start with redis:// or rediss://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (login, place) = match rest.rsplit_once('@') {
            Some((login, place)) => (Some(login), place),
            None => (None, rest),
        };
        let (user, password) = match login.map(|l| l.split_once(':')) {
            None => (None, None),
            Some(None) => return Err(bad("has a login without a ':' before the password")),
            Some(Some((user, password))) => {
                let user = unescape(user).ok_or_else(|| bad("has a bad %-escape"))?;
                let password = unescape(password).ok_or_else(|| bad("has a bad %-escape"))?;
                ((!user.is_empty()).then_some(user), Some(password))
            }
        };
        let (host, port) = place.rsplit_once(':').ok_or_else(|| bad("needs a port"))?;
        let port = port.parse().map_err(|_| bad("has a bad port"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || host.contains(['/', '@', '[', ']']) {
            return Err(bad("has a bad host"));
        }
        Ok(Url {
            host: host.to_string(),
            port,
            user,
            password,
            tls,
        })
    }
}

/// Shown without the password (logs, errors).
impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}", self.port)
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let u = Url::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 6379, false));
        assert_eq!((u.user, u.password), (None, None));
        let u = Url::parse("rediss://ann:p%40ss:w@[::1]:7000/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 7000, true));
        assert_eq!(u.user.as_deref(), Some("ann"));
        assert_eq!(u.password.as_deref(), Some("p@ss:w"));
        assert_eq!(u.to_string(), "rediss://[::1]:7000", "no password shown");
        let u = Url::parse("redis://:secret@localhost:1").unwrap();
        assert_eq!((u.user, u.password.as_deref()), (None, Some("secret")));
        for bad in [
            "http://h:1",
            "redis://h",
            "redis://h:x",
            "redis://:1",
            "redis://a@h:1",
            "redis://a:%zz@h:1",
            "redis://h:99999",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
