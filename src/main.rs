//! The `frameloop` command: parses the command line (`args`) and runs a subcommand:
//! `serve` (set up here, then `Server::run`), `client`, `load` and `keygen`.

mod args;

use args::{Cli, ClientArgs, Command, LoadArgs, ServeArgs};
use frameloop::auth::{self, Users};
use frameloop::config::Config;
use frameloop::reactor::TRACE;
use frameloop::server::{Server, Team};
use frameloop::service::Services;
use frameloop::service::stats::Stats;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    init_logging(matches!(&cli.command, Command::Serve(args) if args.trace));
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Load(args) => return load(&args),
        Command::Client(args) => return client(&args),
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

/// The client has exit codes of its own (`client::cli`).
fn client(args: &ClientArgs) -> ExitCode {
    use frameloop::client::cli;
    match args.options() {
        Err(e) => {
            eprintln!("frameloop: {e}");
            ExitCode::from(cli::EXIT_FAILED)
        }
        Ok(opts) if args.command.is_empty() => cli::interactive(&opts),
        Ok(opts) => cli::one_shot(&opts, &args.command),
    }
}

/// Runs the load and prints its report (a table, or one JSON line). Exit 1 when
/// any reply was wrong; 2 when authentication failed either way (as the client).
fn load(args: &LoadArgs) -> ExitCode {
    let fail = |code: u8, e: String| {
        eprintln!("frameloop: {e}");
        ExitCode::from(code)
    };
    let config = match args.load_config() {
        Ok(config) => config,
        Err(e) => return fail(1, e),
    };
    let r = match frameloop::load::run(&config) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return fail(frameloop::client::cli::EXIT_FAILED, format!("load: {e}"));
        }
        Err(e) => return fail(1, format!("load: {e}")),
    };
    if args.json {
        match serde_json::to_string(&r) {
            Ok(line) => println!("{line}"),
            Err(e) => return fail(1, e.to_string()),
        }
    } else {
        print!("{r}");
    }
    if r.errors > 0 {
        return fail(1, format!("{} replies were wrong", r.errors));
    }
    ExitCode::SUCCESS
}

/// Prepares the users, descriptors and data directory, binds, says where it listens
/// on stdout, and runs the event loop until a signal stops it.
fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = args.into_config()?;
    if let Some(url) = &config.bus {
        // Checked once, blocking: a server that cannot reach its bus does not start.
        config.bus_target = Some(frameloop::bus::probe(url, config.bus_ca.clone())?);
    }
    frameloop::bufpool::return_large_buffers_to_the_os();
    let allowed = config.allow_exec.names();
    if !allowed.is_empty() {
        log::info!("exec may run: {}", allowed.join(", "));
    }
    let users = if config.no_auth {
        Users::default()
    } else {
        load_or_create_users(&config)?
    };
    // Each connection holds its socket and up to MAX_FILE_BODIES queued `get` files.
    let per_conn = 1 + frameloop::config::tuning::MAX_FILE_BODIES;
    let need = config.max_conns.saturating_mul(per_conn).saturating_add(64);
    match frameloop::net::raise_fd_limit() {
        Ok(n) if (n as usize) < need => {
            log::warn!(
                "descriptor limit {n} is below the {need} that --max-conns {} may use \
                 (a socket and up to {} queued file bodies each)",
                config.max_conns,
                per_conn - 1
            )
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the descriptor limit: {e}"),
    }
    let (server, others) = start_workers(&config, users)?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let workers = match config.workers {
        1 => String::new(),
        n => format!(", {n} workers"),
    };
    log::info!(
        "listening on {addr} (auth: {}{workers})",
        if config.no_auth {
            "none"
        } else {
            "hmac-sha256"
        }
    );
    // The bound addresses on stdout, for scripts and tests that asked for port 0:
    // TCP on the first line, then UDP, the Unix socket and TLS when on.
    let mut said = format!("frameloop listening on {addr}\n");
    if let Some(udp) = server.udp_addr() {
        log::info!("udp on {udp} (stateless ops)");
        said.push_str(&format!("frameloop udp on {udp}\n"));
    }
    if let Some(path) = &config.unix {
        log::info!("unix socket {}", path.display());
        said.push_str(&format!("frameloop unix on {}\n", path.display()));
    }
    if let Some(tls) = server.tls_addr() {
        log::info!("tls on {tls}");
        said.push_str(&format!("frameloop tls on {tls}\n"));
    }
    // One write, and no panic if nobody reads stdout any more (println! would).
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(said.as_bytes())
        .and_then(|_| stdout.flush());
    drop(stdout);
    let mut result = server.run().map_err(|e| format!("event loop failed: {e}"));
    for handle in others {
        let ended = handle
            .join()
            .unwrap_or_else(|_| Err("a worker panicked".to_string()));
        result = result.and(ended);
    }
    result
}

type Worker = std::thread::JoinHandle<Result<(), String>>;

/// Binds the sockets and builds every worker (`--workers`): the first here,
/// the others each on its own thread (a server is not `Send`), which it runs
/// as soon as it is built. Returns once all are ready (signals caught).
fn start_workers(config: &Config, users: Users) -> Result<(Server, Vec<Worker>), String> {
    let started = Instant::now();
    // The first worker's services prepare the data directory, before any serves.
    let services = Services::new(users.clone(), config, started).map_err(|e| {
        format!(
            "cannot prepare data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let mut sockets =
        frameloop::server::bind(config, services.open_limits()).map_err(|e| e.to_string())?;
    // The workers meet at one hub (contract section 12), each counting its own stats.
    let stats = std::iter::once(Arc::clone(&services.stats))
        .chain((1..config.workers).map(|_| Arc::new(Stats::new(started))))
        .collect();
    let team = Team::new(stats);
    let (ready, readies) = std::sync::mpsc::channel();
    let mut others = Vec::new();
    for (i, sockets) in sockets.drain(1..).enumerate() {
        let (config, users, team) = (config.clone(), users.clone(), team.clone());
        let common = services.common();
        let ready = ready.clone();
        let worker = move || -> Result<(), String> {
            let built = Services::for_worker(users, &config, started, i + 1, common)
                .map_err(|e| format!("cannot prepare a worker: {e}"))
                .and_then(|services| {
                    let mut server = Server::new(config, services, sockets, team, i + 1);
                    server.catch_signals().map_err(cannot_catch)?;
                    Ok(server)
                });
            let _ = ready.send(built.as_ref().map(|_| ()).map_err(String::clone));
            built?.run().map_err(|e| format!("event loop failed: {e}"))
        };
        let handle = std::thread::Builder::new()
            .name(format!("worker-{}", i + 1))
            .spawn(worker)
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        others.push(handle);
    }
    let sockets = sockets.pop().ok_or("no sockets bound")?;
    let mut server = Server::new(config.clone(), services, sockets, team, 0);
    server.catch_signals().map_err(cannot_catch)?;
    for _ in 0..others.len() {
        readies
            .recv()
            .map_err(|_| "a worker ended before it was ready".to_string())??;
    }
    Ok((server, others))
}

fn cannot_catch(e: std::io::Error) -> String {
    format!("cannot catch signals: {e}")
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
