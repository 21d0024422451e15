//! What each poll token names: the server's own sources (listeners, UDP,
//! signals, orphans, the waker) and each connection's two tokens.

use mio::Token;

/// What a token names: decoded in one place ([`Source::of`]). The connection in
/// slab slot `k` owns two tokens, `FIRST_CONN + 2k` for its socket and the next
/// for its exec child's descriptors (stdout, stderr and pidfd share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A stream listener (TCP, or `--unix`); also the timer that resumes accepting.
    Listener(usize),
    /// The UDP socket (`--udp`).
    Udp,
    /// SIGINT and SIGTERM (a self-pipe signal-hook writes to); also the shutdown's deadline.
    Signals,
    /// Pidfds of killed children whose connection is gone (reaped when they exit).
    Orphans,
    /// The loop's waker: the blocking-work pool has results, or another
    /// worker posted mail (mio allows one waker per poller).
    Woken,
    /// The chat bus's connections to Redis (`bus::Line` as number); the
    /// first also names the bus's timer.
    Bus(usize),
    /// A connection's socket (and its one timer).
    Conn(usize),
    /// A connection's exec child.
    Child(usize),
}

/// Tokens below this name the server's own sources; listeners take 0 to 2.
const FIRST_CONN: usize = 16;
const LISTENERS: usize = 3;
/// The listeners' places (and tokens): plain TCP, `--unix` at 1, `--tls-listen`.
pub(super) const TCP: usize = 0;
pub(super) const TLS: usize = 2;

impl Source {
    pub(super) fn token(self) -> Token {
        Token(match self {
            Source::Listener(i) => i,
            Source::Udp => LISTENERS,
            Source::Signals => LISTENERS + 1,
            Source::Orphans => LISTENERS + 2,
            Source::Woken => LISTENERS + 3,
            Source::Bus(line) => LISTENERS + 4 + line,
            Source::Conn(key) => FIRST_CONN + 2 * key,
            Source::Child(key) => FIRST_CONN + 2 * key + 1,
        })
    }

    pub(super) fn of(token: Token) -> Option<Source> {
        Some(match token.0 {
            i if i < LISTENERS => Source::Listener(i),
            i if i == LISTENERS => Source::Udp,
            i if i == LISTENERS + 1 => Source::Signals,
            i if i == LISTENERS + 2 => Source::Orphans,
            i if i == LISTENERS + 3 => Source::Woken,
            i if i == LISTENERS + 4 || i == LISTENERS + 5 => Source::Bus(i - LISTENERS - 4),
            i if i >= FIRST_CONN => {
                let n = i - FIRST_CONN;
                if n.is_multiple_of(2) {
                    Source::Conn(n / 2)
                } else {
                    Source::Child(n / 2)
                }
            }
            _ => return None,
        })
    }
}
