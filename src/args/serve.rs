//! `serve`'s flags, and the server's `Config` made from them.

use argh::FromArgs;
use frameloop::config::{self, Config};
use frameloop::service::exec::Allowlist;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
