//! The `frameloop` command: parses the command line (argh) and runs a subcommand.

use argh::FromArgs;
use frameloop::auth::{self, Users};
use frameloop::config::{self, Config};
use frameloop::proto::Limits;
use frameloop::server::Server;
use frameloop::service::Services;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// frameloop: a single-threaded event-loop server and its tools.
#[derive(FromArgs)]
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(ServeArgs),
    Keygen(KeygenArgs),
}

/// Run the server (zero-config: 127.0.0.1:7878, ./frameloop-data).
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct ServeArgs {
    /// TCP address to listen on (default 127.0.0.1:7878; port 0 picks a free one)
    #[argh(
        option,
        default = "config::DEFAULT_ADDR.parse().expect(\"valid default\")"
    )]
    listen: std::net::SocketAddr,
    /// data directory (default ./frameloop-data)
    #[argh(option, default = "PathBuf::from(config::DEFAULT_DATA_DIR)")]
    data_dir: PathBuf,
    /// users file (default <data-dir>/users; created with user guest when missing)
    #[argh(option)]
    users: Option<PathBuf>,
    /// accept clients without authentication, as user anonymous
    #[argh(switch)]
    no_auth: bool,
    /// most open connections; more get 503 (default 10000)
    #[argh(option, default = "10_000")]
    max_conns: usize,
    /// largest frame header in bytes (default 65536)
    #[argh(option, default = "65_536")]
    max_header: u32,
    /// largest buffered body in bytes (default 16777216)
    #[argh(option, default = "16 * 1024 * 1024")]
    max_body: u64,
    /// pending output per connection before its reading pauses (default 8388608)
    #[argh(option, default = "8 * 1024 * 1024")]
    max_outbuf: usize,
    /// seconds an idle connection is kept (default 300)
    #[argh(
        option,
        default = "Duration::from_secs(300)",
        from_str_fn(config::parse_secs)
    )]
    idle_timeout: Duration,
    /// seconds allowed for authentication (default 10)
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(config::parse_secs)
    )]
    auth_timeout: Duration,
}

/// Print a users-file line for NAME with a fresh random key.
#[derive(FromArgs)]
#[argh(subcommand, name = "keygen")]
struct KeygenArgs {
    /// user name (1-64 of A-Za-z0-9_.-)
    #[argh(positional)]
    name: String,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli: Cli = argh::from_env();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Keygen(args) => auth::keygen_line(&args.name)
            .map(|line| println!("{line}"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("frameloop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    if args.max_header == 0 || args.max_conns == 0 {
        return Err("--max-header and --max-conns must be at least 1".into());
    }
    let config = Config {
        listen: args.listen,
        users_file: args.users.unwrap_or_else(|| args.data_dir.join("users")),
        data_dir: args.data_dir,
        no_auth: args.no_auth,
        max_conns: args.max_conns,
        max_header: args.max_header,
        max_body: args.max_body,
        max_outbuf: args.max_outbuf,
        idle_timeout: args.idle_timeout,
        auth_timeout: args.auth_timeout,
    };
    let users = if config.no_auth {
        Users::default()
    } else {
        load_or_create_users(&config)?
    };
    match frameloop::net::raise_fd_limit() {
        Ok(n) if (n as usize) < config.max_conns + 64 => {
            log::warn!(
                "descriptor limit {n} is below --max-conns {}",
                config.max_conns
            )
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the descriptor limit: {e}"),
    }
    let limits = Limits {
        max_header: config.max_header,
        max_body: config.max_body,
        body_allowed: true,
    };
    let services = Services::new(users, config.no_auth, limits, Instant::now());
    let server = Server::bind(config.clone(), services)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    log::info!(
        "listening on {addr} (auth: {})",
        if config.no_auth {
            "none"
        } else {
            "hmac-sha256"
        }
    );
    // The bound address on stdout, for scripts and tests that asked for port 0.
    println!("frameloop listening on {addr}");
    let _ = std::io::stdout().flush();
    server.run().map_err(|e| format!("event loop failed: {e}"))
}

fn load_or_create_users(config: &Config) -> Result<Users, String> {
    let path = &config.users_file;
    if !path.exists() {
        auth::create_users_file(path)
            .map_err(|e| format!("cannot create users file {}: {e}", path.display()))?;
        log::info!(
            "created users file {} with user guest (mode 0600)",
            path.display()
        );
    }
    let users = Users::load(path)?;
    if users.is_empty() {
        log::warn!(
            "users file {} has no users: nobody can authenticate",
            path.display()
        );
    }
    Ok(users)
}
