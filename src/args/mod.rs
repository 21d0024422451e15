//! The command line's shape: one argh struct per subcommand, and their conversion
//! into what the library runs (`Config`, `LoadConfig`, the client's `Options`).
//! This file: the commands, `client` and `keygen`; `serve` and `load` have a
//! file each.

mod load;
mod serve;

pub use load::LoadArgs;
pub use serve::ServeArgs;

use argh::FromArgs;
use frameloop::client::cli::{Options, Target};
use frameloop::client::tls::TlsOptions;
use frameloop::config;
use std::net::SocketAddr;
use std::path::PathBuf;

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

/// Print a users-file line for NAME with a fresh random key.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "keygen")]
pub struct KeygenArgs {
    /// user name (1-64 of A-Za-z0-9_.-)
    #[argh(positional)]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use frameloop::config::Config;

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
