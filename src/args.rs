//! The command line's shape: one argh struct per subcommand, and their conversion
//! into what the library runs (`Config`, `LoadConfig`, the client's `Options`).

use argh::FromArgs;
use frameloop::client::Credentials;
use frameloop::client::cli::{Options, Target};
use frameloop::client::tls::TlsOptions;
use frameloop::config::{self, Config};
use frameloop::load::{LoadConfig, Wire};
use frameloop::service::exec::Allowlist;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The user the client and the load tool log in as unless told (the users file
/// the server creates holds it).
const DEFAULT_USER: &str = "guest";

/// frameloop: a single-threaded event-loop server and its tools.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

// One value, parsed once at start: the serve flags' size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(ServeArgs),
    Keygen(KeygenArgs),
    Client(ClientArgs),
    Load(LoadArgs),
}

/// Talk to a server: an interactive shell, or one COMMAND and its reply.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "client")]
pub struct ClientArgs {
    /// server address (default 127.0.0.1:7878)
    #[argh(option)]
    addr: Option<SocketAddr>,
    /// connect to the server's Unix socket at PATH instead
    #[argh(option)]
    unix: Option<PathBuf>,
    /// send one stateless COMMAND over UDP to ADDR instead (no auth; retried on timeout)
    #[argh(option)]
    udp: Option<SocketAddr>,
    /// connect with TLS (to the server's --tls-listen address)
    #[argh(switch)]
    tls: bool,
    /// CA certificates (PEM) to verify the server with (default
    /// ./frameloop-data/tls/cert.pem when it exists, else the system's roots)
    #[argh(option)]
    tls_ca: Option<PathBuf>,
    /// user name (default guest)
    #[argh(option, default = "DEFAULT_USER.into()")]
    user: String,
    /// users file to read the key from (default ./frameloop-data/users)
    #[argh(option, default = "config::default_users_file()")]
    users: PathBuf,
    /// the key as 64 hex digits (visible to every local user: prefer FRAMELOOP_KEY
    /// or the users file, which are read when --key is not given, in that order)
    #[argh(option)]
    key: Option<String>,
    /// talk to a --no-auth server, as anonymous (no key; a server that asks for one is refused)
    #[argh(switch)]
    no_auth: bool,
    /// print each reply header as one JSON line (body as "body")
    #[argh(switch)]
    json: bool,
    /// command and its arguments (none: interactive shell); commands: ping, echo TEXT,
    /// upper TEXT, stamp TEXT, time [FORMAT], stats, files, exec, join ROOM, leave ROOM,
    /// say ROOM TEXT, dm USER TEXT; chat ROOM: a chat session in ROOM
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

impl ClientArgs {
    /// The client's options; an error when more than one of --addr, --unix and --udp is given.
    pub fn options(&self) -> Result<Options, String> {
        let target = match (self.addr, &self.unix, self.udp) {
            (addr, None, None) => Target::Tcp(addr.unwrap_or_else(config::default_addr)),
            (None, Some(path), None) => Target::Unix(path.clone()),
            (None, None, Some(addr)) => Target::Udp(addr),
            _ => return Err("give one of --addr, --unix and --udp".into()),
        };
        let tls = match (self.tls, &target) {
            (false, _) if self.tls_ca.is_some() => return Err("--tls-ca goes with --tls".into()),
            (false, _) => None,
            (true, Target::Tcp(_)) => Some(TlsOptions {
                ca: self.tls_ca.clone(),
            }),
            (true, _) => return Err("--tls goes with --addr, not --unix or --udp".into()),
        };
        Ok(Options {
            target,
            tls,
            user: self.user.clone(),
            key: self.key.clone(),
            users: self.users.clone(),
            no_auth: self.no_auth,
            json: self.json,
        })
    }
}

/// Run the server (zero-config: 127.0.0.1:7878, ./frameloop-data).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// TCP address to listen on (default 127.0.0.1:7878; port 0 picks a free one)
    #[argh(option, default = "Config::default().listen")]
    listen: SocketAddr,
    /// UDP address for the stateless ops, or off (default 127.0.0.1:7878)
    #[argh(
        option,
        default = "Config::default().udp",
        from_str_fn(config::parse_udp)
    )]
    udp: Option<SocketAddr>,
    /// also listen on this Unix socket path (same protocol and auth as TCP)
    #[argh(option)]
    unix: Option<PathBuf>,
    /// also serve TLS on this address (same protocol inside TLS)
    #[argh(option)]
    tls_listen: Option<SocketAddr>,
    /// event loops to run, one thread each, all on the same addresses (default 1)
    #[argh(option, default = "Config::default().workers")]
    workers: usize,
    /// share chat with the other servers on this Redis:
    /// redis://[USER:PASSWORD@]HOST:PORT (rediss:// for TLS)
    #[argh(option)]
    bus: Option<String>,
    /// PEM certificates that verify Redis with rediss:// (default: the
    /// system's roots)
    #[argh(option)]
    bus_ca: Option<PathBuf>,
    /// every stream connection begins with a PROXY protocol header (v1 or v2, as
    /// HAProxy's send-proxy-v2): its client address is the one logged and limited
    #[argh(switch)]
    proxy_protocol: bool,
    /// PEM certificate chain for TLS (default <data-dir>/tls/cert.pem, self-signed on first start)
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (default <data-dir>/tls/key.pem)
    #[argh(option)]
    tls_key: Option<PathBuf>,
    /// data directory (default ./frameloop-data)
    #[argh(option, default = "Config::default().data_dir")]
    data_dir: PathBuf,
    /// users file (default <data-dir>/users; created with user guest when missing)
    #[argh(option)]
    users: Option<PathBuf>,
    /// accept clients without authentication, as user anonymous
    #[argh(switch)]
    no_auth: bool,
    /// most open connections; more get 503 (default 10000)
    #[argh(option, default = "Config::default().max_conns")]
    max_conns: usize,
    /// largest frame header in bytes (default 65536)
    #[argh(option, default = "Config::default().max_header")]
    max_header: u32,
    /// largest buffered body in bytes (default 16777216)
    #[argh(option, default = "Config::default().max_body")]
    max_body: u64,
    /// pending output per connection before its reading pauses (default 8388608)
    #[argh(option, default = "Config::default().max_outbuf")]
    max_outbuf: usize,
    /// connections not logged in yet; past it the oldest waiting over 1 s gives
    /// way, else the new one gets 503 (default 1000)
    #[argh(option, default = "Config::default().max_unauth")]
    max_unauth: usize,
    /// connections from one address; more get 503 (default 0; 0 is no limit)
    #[argh(option, default = "Config::default().max_conns_per_ip")]
    max_conns_per_ip: usize,
    /// connections of one user; a login past it gets 503 (default 0; 0 is no limit)
    #[argh(option, default = "Config::default().max_conns_per_user")]
    max_conns_per_user: usize,
    /// bytes all connections may hold (output, bodies); past it the biggest
    /// holders are closed (default 1073741824)
    #[argh(option, default = "Config::default().max_memory")]
    max_memory: u64,
    /// seconds an idle connection is kept (default 300)
    #[argh(
        option,
        default = "Config::default().idle_timeout",
        from_str_fn(config::parse_secs)
    )]
    idle_timeout: Duration,
    /// seconds allowed for authentication (default 10)
    #[argh(
        option,
        default = "Config::default().auth_timeout",
        from_str_fn(config::parse_secs)
    )]
    auth_timeout: Duration,
    /// programs `exec` may run, comma-separated names found on PATH (default none)
    #[argh(option, default = "String::new()")]
    allow_exec: String,
    /// seconds an exec may run before it is killed (default 10)
    #[argh(
        option,
        default = "Config::default().exec_timeout",
        from_str_fn(config::parse_secs)
    )]
    exec_timeout: Duration,
    /// execs running at once; more get 503 (default 16)
    #[argh(option, default = "Config::default().exec_max")]
    exec_max: usize,
    /// execs running at once per user; more get 503 (default 4)
    #[argh(option, default = "Config::default().exec_max_per_user")]
    exec_max_per_user: usize,
    /// address space per exec process in bytes (default 536870912)
    #[argh(option, default = "Config::default().exec_memory")]
    exec_memory: u64,
    /// run exec even where Landlock or a pids cgroup is missing (with a warning)
    #[argh(switch)]
    exec_unconfined: bool,
    /// bytes each user may store in their file root (default unlimited)
    #[argh(option)]
    quota: Option<u64>,
    /// log one line per loop turn and per event, to watch the loop work
    #[argh(switch)]
    pub trace: bool,
}

impl ServeArgs {
    /// The server's settings, with `--allow-exec` resolved on `PATH`.
    pub fn into_config(self) -> Result<Config, String> {
        if self.max_header == 0 || self.max_conns == 0 || self.max_unauth == 0 {
            return Err("--max-header, --max-conns and --max-unauth must be at least 1".into());
        }
        if !(1..=frameloop::hub::MAX_WORKERS).contains(&self.workers) {
            return Err(format!(
                "--workers must be 1 to {}",
                frameloop::hub::MAX_WORKERS
            ));
        }
        let allow_exec: Vec<String> = self.allow_exec.split(',').map(String::from).collect();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let allow_exec = Allowlist::resolve(&allow_exec, &path)?;
        if !allow_exec.is_empty() {
            frameloop::service::exec::confine::check(self.exec_unconfined)?;
        }
        Ok(Config {
            listen: self.listen,
            udp: self.udp,
            unix: self.unix,
            tls_listen: self.tls_listen,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            proxy_protocol: self.proxy_protocol,
            workers: self.workers,
            bus: self
                .bus
                .or_else(|| {
                    std::env::var("FRAMELOOP_BUS")
                        .ok()
                        .filter(|b| !b.is_empty())
                })
                .as_deref()
                .map(frameloop::bus::Url::parse)
                .transpose()?,
            bus_ca: self.bus_ca,
            bus_target: None,
            users_file: self.users.unwrap_or_else(|| self.data_dir.join("users")),
            data_dir: self.data_dir,
            no_auth: self.no_auth,
            max_conns: self.max_conns,
            max_header: self.max_header,
            max_body: self.max_body,
            max_outbuf: self.max_outbuf,
            max_unauth: self.max_unauth,
            max_conns_per_ip: self.max_conns_per_ip,
            max_conns_per_user: self.max_conns_per_user,
            max_memory: self.max_memory,
            idle_timeout: self.idle_timeout,
            auth_timeout: self.auth_timeout,
            quota: self.quota,
            allow_exec,
            exec_timeout: self.exec_timeout,
            exec_max: self.exec_max,
            exec_max_per_user: self.exec_max_per_user,
            exec_memory: self.exec_memory,
        })
    }
}

/// Print a users-file line for NAME with a fresh random key.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "keygen")]
pub struct KeygenArgs {
    /// user name (1-64 of A-Za-z0-9_.-)
    #[argh(positional)]
    pub name: String,
}

/// Drive a server with N connections and report throughput and latency.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "load")]
pub struct LoadArgs {
    /// server address (default 127.0.0.1:7878)
    #[argh(option, default = "config::default_addr()")]
    addr: SocketAddr,
    /// connections (default 50)
    #[argh(option, default = "50")]
    conns: usize,
    /// requests in flight per connection, closed loop (default 1)
    #[argh(option, default = "1")]
    pipeline: usize,
    /// total requests per second, open loop: latency counts from when each request was due
    #[argh(option, from_str_fn(config::parse_rate))]
    rate: Option<f64>,
    /// op to send: ping, echo, upper, stamp, time (default echo)
    #[argh(option, default = "String::from(\"echo\")")]
    op: String,
    /// body size in bytes for echo, upper, stamp (default 64)
    #[argh(option, default = "64")]
    size: usize,
    /// measured seconds (default 5)
    #[argh(
        option,
        default = "Duration::from_secs(5)",
        from_str_fn(config::parse_secs)
    )]
    duration: Duration,
    /// seconds run before measuring (default 1)
    #[argh(
        option,
        default = "Duration::from_secs(1)",
        from_str_fn(config::parse_secs_or_zero)
    )]
    warmup: Duration,
    /// user name (default guest)
    #[argh(option, default = "DEFAULT_USER.into()")]
    user: String,
    /// users file to read the key from (default ./frameloop-data/users)
    #[argh(option, default = "config::default_users_file()")]
    users: PathBuf,
    /// the key as 64 hex digits (visible to every local user: prefer FRAMELOOP_KEY
    /// or the users file, which are read when --key is not given, in that order)
    #[argh(option)]
    key: Option<String>,
    /// connect without authentication (for --no-auth servers)
    #[argh(switch)]
    no_auth: bool,
    /// print one JSON line instead of a table
    #[argh(switch)]
    pub json: bool,
    /// a server process on this machine: report its CPU per request over the measured window
    #[argh(option)]
    server_pid: Option<u32>,
    /// drive a Redis server instead: ECHO of --size bytes (--op echo) or PING (--op ping)
    /// over RESP, every reply checked; no login
    #[argh(switch)]
    resp: bool,
    /// send an echo frame and expect the same bytes back, for a server that parses
    /// nothing (examples/floor.rs, the floor the comparisons quote); no login
    #[argh(switch)]
    raw: bool,
    /// connect with TLS (to the server's --tls-listen address)
    #[argh(switch)]
    tls: bool,
    /// CA certificates (PEM) to verify the server with (default
    /// ./frameloop-data/tls/cert.pem when it exists, else the system's roots)
    #[argh(option)]
    tls_ca: Option<PathBuf>,
}

impl LoadArgs {
    /// The load run's settings, with the user's key read.
    pub fn load_config(&self) -> Result<LoadConfig, String> {
        if self.conns == 0 || self.pipeline == 0 {
            return Err("--conns and --pipeline must be at least 1".into());
        }
        let wire = match (self.resp, self.raw) {
            (false, false) => Wire::Frames,
            (true, false) => Wire::Resp,
            (false, true) => Wire::Raw,
            (true, true) => return Err("give --resp or --raw, not both".into()),
        };
        if !wire.ops().contains(&self.op.as_str()) {
            return Err(format!(
                "with {wire} --op must be one of {}",
                wire.ops().join(", ")
            ));
        }
        let tls = match (self.tls, wire) {
            (false, _) if self.tls_ca.is_some() => return Err("--tls-ca goes with --tls".into()),
            (false, _) => None,
            (true, Wire::Frames) => Some(TlsOptions {
                ca: self.tls_ca.clone(),
            }),
            (true, _) => return Err(format!("--tls is for frameloop, not with {wire}")),
        };
        // RESP and raw runs log in to nothing: no key is read.
        let creds = match wire {
            Wire::Frames => {
                Credentials::from_flags(self.no_auth, &self.user, self.key.as_deref(), &self.users)?
            }
            Wire::Resp | Wire::Raw => Credentials::Anonymous,
        };
        Ok(LoadConfig {
            addr: self.addr,
            wire,
            creds,
            conns: self.conns,
            pipeline: self.pipeline,
            rate: self.rate,
            op: self.op.clone(),
            size: self.size,
            duration: self.duration,
            warmup: self.warmup,
            progress: !self.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            server_pid: self.server_pid,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags whose "(default ...)" in the help describes what leaving them out
    /// means rather than a value the flag takes.
    const DESCRIBED: [(&str, &str); 8] = [
        ("client", "--addr"),
        ("client", "--tls-ca"),
        ("load", "--tls-ca"),
        ("serve", "--users"),
        ("serve", "--allow-exec"),
        ("serve", "--quota"),
        ("serve", "--tls-cert"),
        ("serve", "--tls-key"),
    ];

    fn parse(args: &[&str]) -> Result<Cli, argh::EarlyExit> {
        Cli::from_args(&["frameloop"], args)
    }

    /// `(flag, default)` for every option whose help says "(default X...)".
    fn stated_defaults(help: &str) -> Vec<(String, String)> {
        let mut entries: Vec<String> = Vec::new();
        for line in help.lines().skip_while(|l| !l.starts_with("Options:")) {
            match (line.trim_start().starts_with("--"), entries.last_mut()) {
                (true, _) | (false, None) => entries.push(line.trim().to_string()),
                (false, Some(entry)) => entry.push_str(&format!(" {}", line.trim())),
            }
        }
        entries
            .iter()
            .filter_map(|entry| {
                let flag = entry.split_whitespace().next()?;
                let (_, rest) = entry.split_once("(default ")?;
                let value = rest.split([';', ')']).next()?;
                Some((flag.to_string(), value.to_string()))
            })
            .collect()
    }

    /// The defaults the help states are the ones the flags really have: giving
    /// `--flag X` parses the same as leaving the flag out.
    #[test]
    fn the_help_states_the_real_defaults() {
        let mut checked = 0;
        for sub in ["serve", "client", "load"] {
            let help = parse(&[sub, "--help"]).expect_err("help").output;
            let absent = format!("{:?}", parse(&[sub]).expect("no flags"));
            for (flag, value) in stated_defaults(&help) {
                if DESCRIBED.contains(&(sub, flag.as_str())) {
                    continue;
                }
                let given = parse(&[sub, &flag, &value])
                    .unwrap_or_else(|e| panic!("{sub} {flag} {value}: {}", e.output));
                assert_eq!(format!("{given:?}"), absent, "{sub} {flag} {value}");
                checked += 1;
            }
        }
        assert_eq!(checked, 29, "every stated default was found and checked");
    }

    /// `serve`'s description names the default address and data directory.
    #[test]
    fn serve_is_described_with_its_defaults() {
        let help = parse(&["--help"]).expect_err("help").output;
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let defaults = Config::default();
        let said = format!("{}, {}", defaults.listen, defaults.data_dir.display());
        assert!(help.contains(&format!("zero-config: {said})")), "{help}");
    }
}
