//! The `frameloop` command: parses the command line (argh) and runs a subcommand.

use argh::FromArgs;
use frameloop::auth::{self, Users};
use frameloop::client::Credentials;
use frameloop::config::{self, Config};
use frameloop::load::LoadConfig;
use frameloop::reactor::TRACE;
use frameloop::server::Server;
use frameloop::service::Services;
use frameloop::service::exec::Allowlist;
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
    Client(ClientArgs),
    Load(LoadArgs),
}

/// Talk to a server: an interactive shell, or one COMMAND and its reply.
#[derive(FromArgs)]
#[argh(subcommand, name = "client")]
struct ClientArgs {
    /// server address (default 127.0.0.1:7878)
    #[argh(option)]
    addr: Option<std::net::SocketAddr>,
    /// connect to the server's Unix socket at PATH instead
    #[argh(option)]
    unix: Option<PathBuf>,
    /// send one stateless COMMAND over UDP to ADDR instead (no auth; retried on timeout)
    #[argh(option)]
    udp: Option<std::net::SocketAddr>,
    /// user name (default guest)
    #[argh(option, default = "String::from(\"guest\")")]
    user: String,
    /// users file to read the key from (default ./frameloop-data/users)
    #[argh(
        option,
        default = "PathBuf::from(config::DEFAULT_DATA_DIR).join(\"users\")"
    )]
    users: PathBuf,
    /// the key as 64 hex digits (instead of reading the users file)
    #[argh(option)]
    key: Option<String>,
    /// print each reply header as one JSON line (body as "body")
    #[argh(switch)]
    json: bool,
    /// command and its arguments (none: interactive shell); commands: ping, echo TEXT,
    /// upper TEXT, stamp TEXT, time [FORMAT], stats, files, exec, join ROOM, leave ROOM,
    /// say ROOM TEXT, dm USER TEXT; chat ROOM: a chat session in ROOM
    #[argh(positional, greedy)]
    command: Vec<String>,
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
    /// UDP address for the stateless ops, or off (default 127.0.0.1:7878)
    #[argh(
        option,
        default = "config::parse_udp(config::DEFAULT_ADDR).expect(\"valid default\")",
        from_str_fn(config::parse_udp)
    )]
    udp: Option<std::net::SocketAddr>,
    /// also listen on this Unix socket path (same protocol and auth as TCP)
    #[argh(option)]
    unix: Option<PathBuf>,
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
    /// programs `exec` may run, comma-separated names found on PATH (default none)
    #[argh(option, default = "String::new()")]
    allow_exec: String,
    /// seconds an exec may run before it is killed (default 10)
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(config::parse_secs)
    )]
    exec_timeout: Duration,
    /// bytes each user may store in their file root (default unlimited)
    #[argh(option)]
    quota: Option<u64>,
    /// log one line per loop turn and per event, to watch the loop work
    #[argh(switch)]
    trace: bool,
}

/// Print a users-file line for NAME with a fresh random key.
#[derive(FromArgs)]
#[argh(subcommand, name = "keygen")]
struct KeygenArgs {
    /// user name (1-64 of A-Za-z0-9_.-)
    #[argh(positional)]
    name: String,
}

/// Drive a server with N connections and report throughput and latency.
#[derive(FromArgs)]
#[argh(subcommand, name = "load")]
struct LoadArgs {
    /// server address (default 127.0.0.1:7878)
    #[argh(
        option,
        default = "config::DEFAULT_ADDR.parse().expect(\"valid default\")"
    )]
    addr: std::net::SocketAddr,
    /// connections (default 50)
    #[argh(option, default = "50")]
    conns: usize,
    /// requests in flight per connection, closed loop (default 1)
    #[argh(option, default = "1")]
    pipeline: usize,
    /// total requests per second, open loop: latency counts from when each request was due
    #[argh(option, from_str_fn(parse_rate))]
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
        from_str_fn(parse_secs_or_zero)
    )]
    warmup: Duration,
    /// user name (default guest)
    #[argh(option, default = "String::from(\"guest\")")]
    user: String,
    /// users file to read the key from (default ./frameloop-data/users)
    #[argh(
        option,
        default = "PathBuf::from(config::DEFAULT_DATA_DIR).join(\"users\")"
    )]
    users: PathBuf,
    /// the key as 64 hex digits (instead of reading the users file)
    #[argh(option)]
    key: Option<String>,
    /// connect without authentication (for --no-auth servers)
    #[argh(switch)]
    no_auth: bool,
    /// print one JSON line instead of a table
    #[argh(switch)]
    json: bool,
    /// a server process on this machine: report its CPU per request over the measured window
    #[argh(option)]
    server_pid: Option<u32>,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a positive rate")),
    }
}

fn parse_secs_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    config::parse_secs(text)
}

fn load(args: LoadArgs) -> Result<(), String> {
    if args.conns == 0 || args.pipeline == 0 {
        return Err("--conns and --pipeline must be at least 1".into());
    }
    if !frameloop::load::OPS.contains(&args.op.as_str()) {
        return Err(format!(
            "--op must be one of {}",
            frameloop::load::OPS.join(", ")
        ));
    }
    let creds = if args.no_auth {
        Credentials::Anonymous
    } else {
        Credentials::for_user(&args.user, args.key.as_deref(), &args.users)?
    };
    let cfg = LoadConfig {
        addr: args.addr,
        creds,
        conns: args.conns,
        pipeline: args.pipeline,
        rate: args.rate,
        op: args.op,
        size: args.size,
        duration: args.duration,
        warmup: args.warmup,
        progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        server_pid: args.server_pid,
    };
    let r = frameloop::load::run(&cfg).map_err(|e| format!("load: {e}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
    } else {
        let shape = match r.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => format!("pipeline {}", r.pipeline),
        };
        println!(
            "{} x {} conns, {shape}, {:.1} s measured",
            r.op, r.conns, r.seconds
        );
        println!("  requests   {:>12}   ({} B bodies)", r.requests, r.size);
        println!("  req/s      {:>12.0}", r.rps);
        println!("  errors     {:>12}", r.errors);
        println!(
            "  latency    p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us",
            r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us
        );
        println!("  load CPU   {:>11.0}% of one core", r.client_cpu * 100.0);
        if let Some(us) = r.server_cpu_us_per_req {
            println!("  server CPU {us:>12.2} us per request");
        }
    }
    if r.errors > 0 {
        return Err(format!("{} replies were wrong", r.errors));
    }
    Ok(())
}

/// Logs go to stderr, `info` by default (`RUST_LOG` overrides). `--trace` adds the
/// loop trace: compact lines, milliseconds since start, no level or module.
fn init_logging(trace: bool) {
    let started = Instant::now();
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    builder.target(env_logger::Target::Stderr);
    if trace {
        builder.filter_module(TRACE, log::LevelFilter::Trace);
    }
    builder.format(move |buf, record| {
        if record.target() == TRACE {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            writeln!(buf, "{ms:9.3} ms {}", record.args())
        } else {
            let ts = buf.timestamp();
            writeln!(
                buf,
                "[{ts} {} {}] {}",
                record.level(),
                record.target(),
                record.args()
            )
        }
    });
    builder.init();
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    init_logging(matches!(&cli.command, Command::Serve(args) if args.trace));
    if let Command::Client(args) = &cli.command {
        use frameloop::client::cli::Target;
        let target = match (args.addr, &args.unix, args.udp) {
            (addr, None, None) => Target::Tcp(
                addr.unwrap_or_else(|| config::DEFAULT_ADDR.parse().expect("valid default")),
            ),
            (None, Some(path), None) => Target::Unix(path.clone()),
            (None, None, Some(addr)) => Target::Udp(addr),
            _ => {
                eprintln!("frameloop: give one of --addr, --unix and --udp");
                return ExitCode::from(frameloop::client::cli::EXIT_FAILED);
            }
        };
        let opts = frameloop::client::cli::Options {
            target,
            user: args.user.clone(),
            key: args.key.clone(),
            users: args.users.clone(),
            json: args.json,
        };
        return if args.command.is_empty() {
            frameloop::client::cli::interactive(&opts)
        } else {
            frameloop::client::cli::one_shot(&opts, &args.command)
        };
    }
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Load(args) => load(args),
        Command::Client(_) => Ok(()), // handled above
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
        udp: args.udp,
        unix: args.unix,
        users_file: args.users.unwrap_or_else(|| args.data_dir.join("users")),
        data_dir: args.data_dir,
        no_auth: args.no_auth,
        max_conns: args.max_conns,
        max_header: args.max_header,
        max_body: args.max_body,
        max_outbuf: args.max_outbuf,
        idle_timeout: args.idle_timeout,
        auth_timeout: args.auth_timeout,
        quota: args.quota,
        allow_exec: Allowlist::resolve(
            &args
                .allow_exec
                .split(',')
                .map(String::from)
                .collect::<Vec<_>>(),
            &std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )?,
        exec_timeout: args.exec_timeout,
    };
    let allowed = config.allow_exec.names();
    if !allowed.is_empty() {
        log::info!("exec may run: {}", allowed.join(", "));
    }
    let users = if config.no_auth {
        Users::default()
    } else {
        load_or_create_users(&config)?
    };
    match frameloop::net::raise_fd_limit() {
        Ok(n) if (n as usize) < config.max_conns.saturating_add(64) => {
            log::warn!(
                "descriptor limit {n} is below --max-conns {}",
                config.max_conns
            )
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the descriptor limit: {e}"),
    }
    let services = Services::new(users, &config, Instant::now()).map_err(|e| {
        format!(
            "cannot prepare data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let mut server = Server::bind(config.clone(), services).map_err(|e| e.to_string())?;
    server
        .catch_signals()
        .map_err(|e| format!("cannot catch signals: {e}"))?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    log::info!(
        "listening on {addr} (auth: {})",
        if config.no_auth {
            "none"
        } else {
            "hmac-sha256"
        }
    );
    // The bound addresses on stdout, for scripts and tests that asked for port 0:
    // TCP on the first line, then UDP and the Unix socket when on.
    let mut said = format!("frameloop listening on {addr}\n");
    if let Some(udp) = server.udp_addr() {
        log::info!("udp on {udp} (stateless ops)");
        said.push_str(&format!("frameloop udp on {udp}\n"));
    }
    if let Some(path) = &config.unix {
        log::info!("unix socket {}", path.display());
        said.push_str(&format!("frameloop unix on {}\n", path.display()));
    }
    // One write, and no panic if nobody reads stdout any more (println! would).
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(said.as_bytes())
        .and_then(|_| stdout.flush());
    drop(stdout);
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
