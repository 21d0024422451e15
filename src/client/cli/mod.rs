//! `frameloop client`: where to connect and as whom, the exit codes, and the two
//! entry points, one-shot mode (`frameloop client echo hi`) and the shell.

mod commands;
mod exchange;
mod lines;
mod oneshot;
mod render;
mod shell;

pub use commands::{COMMANDS, Command, Request, Show, Transfer, help, parse};
pub use oneshot::one_shot;
pub use shell::interactive;

use super::tls::TlsOptions;
use super::{Client, Credentials};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code when the server answered with an error status.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code for usage errors, unreachable servers and failed authentication.
pub const EXIT_FAILED: u8 = 2;

/// Where the client talks to the server.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// Stateless ops only, one-shot only, no authentication.
    Udp(SocketAddr),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "{}", path.display()),
            Target::Udp(addr) => write!(f, "udp {addr}"),
        }
    }
}

/// Where the client connects and who it is.
pub struct Options {
    pub target: Target,
    /// Inside TLS (`--tls`; TCP only).
    pub tls: Option<TlsOptions>,
    pub user: String,
    pub key: Option<String>,
    pub users: PathBuf,
    /// Talk to a `--no-auth` server, as nobody (no key is looked for).
    pub no_auth: bool,
    pub json: bool,
}

impl Options {
    /// Connects and authenticates, or says in one line why not.
    fn connect(&self) -> Result<Client, String> {
        let creds =
            Credentials::from_flags(self.no_auth, &self.user, self.key.as_deref(), &self.users)?;
        let connected = match &self.target {
            Target::Tcp(addr) => match &self.tls {
                Some(tls) => Client::connect_tls(*addr, &creds, tls),
                None => Client::connect(addr, &creds),
            },
            Target::Unix(path) => Client::connect_unix(path, &creds),
            Target::Udp(_) => return Err("UDP has no connection".into()),
        };
        connected.map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => e.to_string(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound => {
                format!("cannot connect to {}: nothing listens there", self.target)
            }
            _ => format!("cannot connect to {}: {e}", self.target),
        })
    }
}

/// Says why on stderr and exits with `code`.
fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("frameloop: {message}");
    ExitCode::from(code)
}
