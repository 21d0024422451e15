//! `load`'s flags, and the load run's `LoadConfig` made from them.

use super::DEFAULT_USER;
use argh::FromArgs;
use frameloop::client::Credentials;
use frameloop::client::tls::TlsOptions;
use frameloop::config;
use frameloop::load::{LoadConfig, Wire};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
