//! The server's settings: `Config` (the `serve` flags) with its defaults, the flag-value
//! parsers, and the loop's fixed `tuning`; limits of one op or layer live with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens (TCP and UDP) and the tools connect, unless told.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";
pub const DEFAULT_DATA_DIR: &str = "./frameloop-data";

/// The default address, parsed.
pub fn default_addr() -> SocketAddr {
    DEFAULT_ADDR.parse().expect("DEFAULT_ADDR is an address")
}

/// The users file when none is named: `users` in the default data directory.
pub fn default_users_file() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR).join("users")
}

/// The settings of a server. Their defaults are written once, in `Config::default()`:
/// the `serve` flags take theirs from it.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// UDP address for the stateless ops (`--udp`); `None`: `--udp off`.
    pub udp: Option<SocketAddr>,
    /// Unix socket path (`--unix`); `None`: no Unix listener.
    pub unix: Option<PathBuf>,
    /// TLS listener (`--tls-listen`, contract section 11); `None`: no TLS.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and key (`--tls-cert`, `--tls-key`); `None`: the
    /// data dir's, self-signed on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Stream connections begin with a PROXY header (`--proxy-protocol`,
    /// contract section 12): its address counts, not the proxy's.
    pub proxy_protocol: bool,
    /// Event loops, one thread each (`--workers`, contract section 12).
    pub workers: usize,
    /// The Redis that chat spans servers through (`--bus`, contract section 12).
    pub bus: Option<crate::bus::Url>,
    /// Certificates that verify Redis with `rediss://` (`--bus-ca`; `None`:
    /// the system's roots).
    pub bus_ca: Option<PathBuf>,
    /// Where the bus is, as the check at start found it.
    pub bus_target: Option<crate::bus::Target>,
    pub data_dir: PathBuf,
    /// Users file; `<data-dir>/users` unless given.
    pub users_file: PathBuf,
    pub no_auth: bool,
    pub max_conns: usize,
    pub max_header: u32,
    pub max_body: u64,
    pub max_outbuf: usize,
    /// Connections not yet authenticated (`--max-unauth`): past it, the oldest
    /// one waiting over `UNAUTH_GRACE` gives way, else the new one gets 503.
    pub max_unauth: usize,
    /// Connections from one address (`--max-conns-per-ip`); 0: no limit.
    pub max_conns_per_ip: usize,
    /// Connections of one user (`--max-conns-per-user`); 0: no limit.
    pub max_conns_per_user: usize,
    /// Bytes all connections together may hold in output queues and bodies
    /// being buffered (`--max-memory`); past it the biggest holders are closed.
    pub max_memory: u64,
    pub idle_timeout: Duration,
    pub auth_timeout: Duration,
    /// Bytes each user may store (`--quota`); `None`: unlimited.
    pub quota: Option<u64>,
    /// Programs `exec` may run (`--allow-exec`), resolved at start.
    pub allow_exec: crate::service::exec::Allowlist,
    pub exec_timeout: Duration,
    // Exec limits and confinement (contract section 6).
    /// Execs running at once (`--exec-max`); past it, 503.
    pub exec_max: usize,
    /// Execs running at once per user (`--exec-max-per-user`); past it, 503.
    pub exec_max_per_user: usize,
    /// Address space per exec process, bytes (`--exec-memory`).
    pub exec_memory: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: default_addr(),
            udp: Some(default_addr()),
            unix: None,
            tls_listen: None,
            proxy_protocol: false,
            workers: 1,
            bus: None,
            bus_ca: None,
            bus_target: None,
            tls_cert: None,
            tls_key: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            users_file: default_users_file(),
            no_auth: false,
            max_conns: 10_000,
            max_header: 65_536,
            max_body: 16 * 1024 * 1024,
            max_outbuf: 8 * 1024 * 1024,
            max_unauth: 1000,
            max_conns_per_ip: 0,
            max_conns_per_user: 0,
            max_memory: 1 << 30,
            idle_timeout: Duration::from_secs(300),
            auth_timeout: Duration::from_secs(10),
            quota: None,
            allow_exec: Default::default(),
            exec_timeout: Duration::from_secs(10),
            exec_max: 16,
            exec_max_per_user: 4,
            exec_memory: 512 * 1024 * 1024,
        }
    }
}

/// Longest time any flag accepts (deadlines must stay far from `Instant`'s range).
const MAX_SECS: Duration = Duration::from_secs(365 * 24 * 3600);

/// Seconds as given on the command line ("times are seconds, fractions allowed").
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero() && *d <= MAX_SECS)
        .ok_or_else(|| format!("{text:?} is not a number of seconds between 0 and one year"))
}

/// `--udp ADDR|off`.
pub fn parse_udp(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is not an address (IP:PORT) or off"))
}

/// Fixed tuning of the loop, with the reason for each value.
pub mod tuning {
    /// Bytes read per `read` call, into one buffer shared by all connections
    /// (an idle connection holds no read buffer at all).
    pub const READ_CHUNK: usize = 64 * 1024;
    /// Reads per connection per turn before others get their turn (fairness);
    /// a connection with more to read is revisited next turn.
    pub const READS_PER_TURN: usize = 4;
    /// Chat pushes one connection's requests may queue per visit (a `say` to a
    /// room of 1,000 costs 1,000): beyond it the sender waits for the next turn,
    /// so the members' queues are written before they grow further.
    pub const PUSHES_PER_VISIT: usize = 32 * 1024;
    /// Accepts per turn before the rest of the loop runs.
    pub const ACCEPTS_PER_TURN: usize = 256;
    /// How long accepting pauses after running out of descriptors.
    pub const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
    /// How long a closing connection may take to send what it owes.
    pub const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
    /// How long a closing connection reads and drops after shutting down writing.
    pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);
    /// Connections beyond `--max-conns` still get their 503 politely, up to this many at once.
    pub const OVERFLOW_CONNS: usize = 1024;
    /// File bytes (`get`) sent per connection per turn: big downloads take turns
    /// with everything else (nginx's `sendfile_max_chunk` defaults to 2 MiB too).
    pub const FILE_SEND_PER_TURN: usize = 2 * 1024 * 1024;
    /// Input read ahead into the stash while a request holds the connection
    /// (enough to notice the peer leave; beyond it the kernel buffers).
    pub const READ_AHEAD_MAX: usize = 64 * 1024;
    /// Datagrams served per turn before the rest of the loop runs (fairness,
    /// like `READS_PER_TURN`); the UDP socket is revisited when more may wait.
    pub const DATAGRAMS_PER_TURN: usize = 64;
    /// How long an unauthenticated connection is safe from giving its slot to a
    /// newcomer over `--max-unauth` (a real client logs in well within it).
    pub const UNAUTH_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
    /// File bodies (`get`) one connection may have queued; past it, its reading
    /// pauses like any backpressure: each holds a descriptor until sent.
    pub const MAX_FILE_BODIES: usize = 16;
    /// How long a shutdown (SIGINT, SIGTERM) waits for connections to get what
    /// they are owed before the process exits anyway.
    pub const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
}

/// A load's `--rate`: a positive number of requests per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a positive rate")),
    }
}

/// Seconds, or 0 for none (a load's `--warmup`).
pub fn parse_secs_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_secs(text)
}
