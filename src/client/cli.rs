//! `frameloop client`: one table of commands, used by both one-shot mode
//! (`frameloop client echo hi`) and the interactive shell (line editing, history,
//! pushes printed live above the prompt); and `frameloop client chat ROOM`, the
//! same shell where every line is said to one room.

use super::transfer::{self, Download};
use super::{BodySink, Client, Credentials, Frame, Requester, read_body, read_head};
use serde_json::{Map, Value, json};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Exit code when the server answered with an error status.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code for usage errors, unreachable servers and failed authentication.
pub const EXIT_FAILED: u8 = 2;

/// How long a command waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the user asked for, ready to send.
pub struct Request {
    pub op: &'static str,
    pub fields: Value,
    pub body: Vec<u8>,
    pub show: Show,
    /// A file to stream up or down instead of `body`.
    pub transfer: Option<Transfer>,
}

/// A file transfer: `put` streams a local file up, `get` streams one down.
pub enum Transfer {
    Put {
        local: PathBuf,
        remote: String,
        overwrite: bool,
    },
    Get {
        remote: String,
        local: PathBuf,
    },
}

/// How a successful reply is printed.
#[derive(Clone, Copy)]
pub enum Show {
    /// The body as text.
    Body,
    /// The body is JSON: pretty-print it.
    PrettyJson,
    /// No body: print the round-trip time.
    RoundTrip,
    /// Print one string field of the reply header.
    Field(&'static str),
    /// Nothing to show but success.
    Done,
    /// An `ls` body: one line per entry.
    Listing,
    /// A `sum` reply: digest and size.
    Sum,
    /// An `exec` reply: the child's stdout and stderr to ours, its exit code as ours.
    Exec,
    /// Nothing at all on success (a chat line: the others see it, we typed it).
    Silent,
}

/// One command of the shell and of one-shot mode. Adding an op's command is one
/// entry here.
pub struct Command {
    pub name: &'static str,
    pub usage: &'static str,
    pub help: &'static str,
    /// Builds the request from the rest of the line (after the command word).
    pub build: fn(&str) -> Result<Request, String>,
}

fn plain(op: &'static str, show: Show) -> Request {
    Request {
        op,
        fields: json!({}),
        body: Vec::new(),
        show,
        transfer: None,
    }
}

/// An op taking one `path` field: required, or optional when `rest` may be empty.
fn with_path(op: &'static str, rest: &str, show: Show, required: bool) -> Result<Request, String> {
    let mut req = plain(op, show);
    match rest.trim() {
        "" if required => return Err(format!("usage: {op} PATH")),
        "" => {}
        path => req.fields = json!({ "path": path }),
    }
    Ok(req)
}

/// The last `/`-separated part of a path: the default name on the other side.
fn base_name(path: &str) -> Option<&str> {
    path.rsplit('/')
        .find(|part| !part.is_empty() && *part != "." && *part != "..")
}

/// `exec CMD ARGS...`; one-shot mode passes its own argv here, so an argument
/// may hold spaces (`frameloop client exec sh -c 'exit 3'`).
fn exec_request<S: AsRef<str>>(words: &[S]) -> Result<Request, String> {
    let (cmd, args) = words.split_first().ok_or("usage: exec CMD ARGS...")?;
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    Ok(Request {
        fields: json!({ "cmd": cmd.as_ref(), "args": args }),
        ..plain("exec", Show::Exec)
    })
}

fn put_request(rest: &str) -> Result<Request, String> {
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    let overwrite = words.first() == Some(&"-f");
    if overwrite {
        words.remove(0);
    }
    let (local, remote) = match words.as_slice() {
        [local] => (
            *local,
            base_name(local).ok_or("put: LOCAL has no file name")?,
        ),
        [local, remote] => (*local, *remote),
        _ => return Err("usage: put [-f] LOCAL [REMOTE]".into()),
    };
    Ok(Request {
        transfer: Some(Transfer::Put {
            local: local.into(),
            remote: remote.into(),
            overwrite,
        }),
        ..plain("put", Show::Done)
    })
}

fn get_request(rest: &str) -> Result<Request, String> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let (remote, local) = match words.as_slice() {
        [remote] => (
            *remote,
            base_name(remote).ok_or("get: REMOTE has no file name")?,
        ),
        [remote, local] => (*remote, *local),
        _ => return Err("usage: get REMOTE [LOCAL]".into()),
    };
    Ok(Request {
        transfer: Some(Transfer::Get {
            remote: remote.into(),
            local: local.into(),
        }),
        ..plain("get", Show::Done)
    })
}

/// `say ROOM TEXT` and `dm USER TEXT`: the first word names where, the rest is said.
fn chat_message(op: &'static str, field: &str, rest: &str) -> Result<Request, String> {
    let rest = rest.trim_start();
    let (target, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if target.is_empty() || text.is_empty() {
        return Err(format!("usage: {op} {} TEXT", field.to_uppercase()));
    }
    Ok(Request {
        fields: json!({ field: target }),
        body: text.as_bytes().to_vec(),
        ..plain(op, Show::Silent)
    })
}

fn with_room(op: &'static str, rest: &str) -> Result<Request, String> {
    match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
        [room] => Ok(Request {
            fields: json!({ "room": room }),
            ..plain(op, Show::Done)
        }),
        _ => Err(format!("usage: {op} ROOM")),
    }
}

fn with_body(op: &'static str, rest: &str) -> Result<Request, String> {
    Ok(Request {
        body: rest.as_bytes().to_vec(),
        ..plain(op, Show::Body)
    })
}

pub const COMMANDS: &[Command] = &[
    Command {
        name: "ping",
        usage: "ping",
        help: "round trip to the server",
        build: |_| Ok(plain("ping", Show::RoundTrip)),
    },
    Command {
        name: "echo",
        usage: "echo TEXT",
        help: "the server sends TEXT back",
        build: |rest| with_body("echo", rest),
    },
    Command {
        name: "upper",
        usage: "upper TEXT",
        help: "TEXT with ASCII letters made upper case",
        build: |rest| with_body("upper", rest),
    },
    Command {
        name: "stamp",
        usage: "stamp TEXT",
        help: "TEXT prefixed with the server's local time",
        build: |rest| with_body("stamp", rest),
    },
    Command {
        name: "time",
        usage: "time [FORMAT]",
        help: "the server's local time, strftime FORMAT (default %Y-%m-%d %X)",
        build: |rest| {
            let mut req = plain("time", Show::Body);
            if !rest.is_empty() {
                req.fields = json!({ "format": rest });
            }
            Ok(req)
        },
    },
    Command {
        name: "stats",
        usage: "stats",
        help: "the server's counters",
        build: |_| Ok(plain("stats", Show::PrettyJson)),
    },
    Command {
        name: "pwd",
        usage: "pwd",
        help: "the current remote directory",
        build: |_| Ok(plain("pwd", Show::Field("path"))),
    },
    Command {
        name: "cd",
        usage: "cd PATH",
        help: "change the remote directory",
        build: |rest| with_path("cd", rest, Show::Field("path"), true),
    },
    Command {
        name: "ls",
        usage: "ls [PATH]",
        help: "list a remote directory",
        build: |rest| with_path("ls", rest, Show::Listing, false),
    },
    Command {
        name: "mkdir",
        usage: "mkdir [-p] PATH",
        help: "make a remote directory (-p: and its parents)",
        build: |rest| {
            let (parents, path) = match rest.trim().strip_prefix("-p ") {
                Some(path) => (true, path),
                None => (false, rest),
            };
            let mut req = with_path("mkdir", path, Show::Done, true)?;
            req.fields["parents"] = parents.into();
            Ok(req)
        },
    },
    Command {
        name: "rm",
        usage: "rm PATH",
        help: "remove a remote file or empty directory",
        build: |rest| with_path("rm", rest, Show::Done, true),
    },
    Command {
        name: "sum",
        usage: "sum PATH",
        help: "the SHA-256 of a remote file",
        build: |rest| with_path("sum", rest, Show::Sum, true),
    },
    Command {
        name: "put",
        usage: "put [-f] LOCAL [REMOTE]",
        help: "upload a file, checked by SHA-256 (-f: replace REMOTE)",
        build: put_request,
    },
    Command {
        name: "get",
        usage: "get REMOTE [LOCAL]",
        help: "download a file, checked by SHA-256",
        build: get_request,
    },
    Command {
        name: "exec",
        usage: "exec CMD ARGS...",
        help: "run an allowed program on the server (arguments split at spaces)",
        build: |rest| exec_request(&rest.split_whitespace().collect::<Vec<_>>()),
    },
    Command {
        name: "join",
        usage: "join ROOM",
        help: "join a chat room (its messages are printed as they come)",
        build: |rest| with_room("join", rest),
    },
    Command {
        name: "leave",
        usage: "leave ROOM",
        help: "leave a chat room",
        build: |rest| with_room("leave", rest),
    },
    Command {
        name: "say",
        usage: "say ROOM TEXT",
        help: "send TEXT to the room's other members",
        build: |rest| chat_message("say", "room", rest),
    },
    Command {
        name: "dm",
        usage: "dm USER TEXT",
        help: "send TEXT to every connection of USER",
        build: |rest| chat_message("dm", "to", rest),
    },
];

/// Finds the command for the first word of `line`; returns it with the rest.
pub fn parse(line: &str) -> Result<(&'static Command, Request), String> {
    let line = line.trim_start();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let command = COMMANDS
        .iter()
        .find(|c| c.name == word)
        .ok_or_else(|| format!("unknown command {word:?} (try help)"))?;
    Ok((command, (command.build)(rest)?))
}

/// The help text: one line per command, plus the shell's own.
pub fn help() -> String {
    let mut text = String::new();
    for c in COMMANDS {
        text.push_str(&format!("  {:<16} {}\n", c.usage, c.help));
    }
    text.push_str(&format!(
        "  {:<16} {}\n",
        "(chat ROOM)", "frameloop client chat ROOM: every line typed is said to ROOM"
    ));
    text.push_str(&format!("  {:<16} {}\n", "help", "this list"));
    text.push_str(&format!(
        "  {:<16} {}\n",
        "quit", "leave (also exit, Ctrl-D)"
    ));
    text
}

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
    pub user: String,
    pub key: Option<String>,
    pub users: PathBuf,
    pub json: bool,
}

impl Options {
    /// Connects and authenticates, or says in one line why not.
    fn connect(&self) -> Result<Client, String> {
        let creds = Credentials::for_user(&self.user, self.key.as_deref(), &self.users)?;
        let connected = match &self.target {
            Target::Tcp(addr) => Client::connect(addr, &creds),
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

/// One request over UDP (`--udp`): the stateless ops, with retries on timeout.
fn udp_one_shot(opts: &Options, addr: SocketAddr, request: Request) -> ExitCode {
    if request.transfer.is_some() {
        return fail(EXIT_FAILED, "put and get need --addr or --unix, not --udp");
    }
    let mut client = match super::udp::UdpClient::connect(addr) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_FAILED, &format!("cannot use udp {addr}: {e}")),
    };
    let start = Instant::now();
    let reply = match client.request(request.op, request.fields, &request.body) {
        Ok(reply) => reply,
        Err(e) => return fail(EXIT_FAILED, &format!("udp {addr}: {e}")),
    };
    finish_one_shot(opts, &reply, request.show, start.elapsed(), None)
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("frameloop: {message}");
    ExitCode::from(code)
}

/// One request's exchange over a connection, however its replies are read (the
/// one-shot client reads them itself; the shell has a reader thread).
trait Link {
    /// Sends with `send`, then waits for the reply; a successful reply's body
    /// goes to `sink` when one is given, and the sink comes back with the reply.
    fn exchange(
        &mut self,
        send: &mut dyn FnMut(&mut Requester) -> io::Result<u64>,
        sink: Option<Download>,
    ) -> Result<(Frame, Option<Download>), String>;
}

struct Direct(Client);

impl Link for Direct {
    fn exchange(
        &mut self,
        send: &mut dyn FnMut(&mut Requester) -> io::Result<u64>,
        mut sink: Option<Download>,
    ) -> Result<(Frame, Option<Download>), String> {
        let id = send(self.0.requester()).map_err(|e| format!("cannot send: {e}"))?;
        let reply = self
            .0
            .read_reply_into(sink.as_mut().map(|d| d as &mut dyn BodySink))
            .map_err(|e| format!("no reply: {e}"))?;
        // An error without id (a framing error such as 431) answers this request too.
        if reply.id() != Some(id) && !(reply.id().is_none() && reply.status() >= 400) {
            return Err(format!("reply id {:?}, expected {id}", reply.id()));
        }
        Ok((reply, sink))
    }
}

/// Runs a request: one exchange, or a transfer's exchanges (a `put` streams the
/// file up with its digest; a `get` streams it down, then asks `sum` to check it).
/// Returns the reply to show, with a line saying what a transfer did.
fn perform(link: &mut dyn Link, request: Request) -> Result<(Frame, Option<String>), String> {
    let Request {
        op,
        fields,
        body,
        transfer,
        ..
    } = request;
    match transfer {
        None => {
            let (reply, _) = link.exchange(&mut |r| r.send(op, fields.clone(), &body), None)?;
            Ok((reply, None))
        }
        Some(Transfer::Put {
            local,
            remote,
            overwrite,
        }) => {
            let cannot = |e: io::Error| format!("cannot read {}: {e}", local.display());
            // The digest goes in the header, so the server refuses a corrupted upload
            // before anything replaces `remote`: the file is read twice.
            let (sha, size) = transfer::hash_file(&local).map_err(cannot)?;
            let mut file = std::fs::File::open(&local).map_err(cannot)?;
            let bar = transfer::progress(size, "put");
            let fields = json!({ "path": remote, "sha256": sha, "overwrite": overwrite });
            let mut body = bar.wrap_read(&mut file);
            let (reply, _) = link.exchange(
                &mut |r| r.send_stream("put", fields.clone(), size, &mut body),
                None,
            )?;
            bar.finish_and_clear();
            if reply.status() != 200 {
                return Ok((reply, None));
            }
            if reply.str("sha256") != Some(sha.as_str()) {
                return Err(format!(
                    "the server stored sha256 {:?}, we sent {sha}",
                    reply.str("sha256")
                ));
            }
            let note = format!("stored {remote}: {size} bytes, sha256 {sha} (verified)");
            Ok((reply, Some(note)))
        }
        Some(Transfer::Get { remote, local }) => {
            let download = Download::create(&local)
                .map_err(|e| format!("cannot write {}: {e}", local.display()))?;
            let path = json!({ "path": remote });
            let (reply, download) =
                link.exchange(&mut |r| r.send("get", path.clone(), b""), Some(download))?;
            let Some(download) = download.filter(|_| reply.status() == 200) else {
                return Ok((reply, None));
            };
            let (sum, _) = link.exchange(&mut |r| r.send("sum", path.clone(), b""), None)?;
            let want = sum.str("sha256").ok_or_else(|| {
                format!("sum failed: {} {}", sum.status(), sum.error().unwrap_or(""))
            })?;
            let bytes = download.bytes;
            let sha = download.finish(want)?;
            let note = format!(
                "saved {}: {bytes} bytes, sha256 {sha} (verified)",
                local.display()
            );
            Ok((reply, Some(note)))
        }
    }
}

/// `frameloop client COMMAND ARGS...`: one request, its reply on stdout.
pub fn one_shot(opts: &Options, words: &[String]) -> ExitCode {
    if let Some((first, rest)) = words.split_first()
        && first == "chat"
    {
        return chat(opts, rest);
    }
    let parsed = match words.split_first() {
        Some((first, rest)) if first == "exec" => exec_request(rest),
        _ => parse(&words.join(" ")).map(|(_, request)| request),
    };
    let request = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    if let Target::Udp(addr) = opts.target {
        return udp_one_shot(opts, addr, request);
    }
    let mut link = match opts.connect() {
        Ok(c) => Direct(c),
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    let show = request.show;
    let start = Instant::now();
    let (reply, note) = match perform(&mut link, request) {
        Ok(done) => done,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    finish_one_shot(opts, &reply, show, start.elapsed(), note.as_deref())
}

/// Prints a one-shot reply and picks the exit code.
fn finish_one_shot(
    opts: &Options,
    reply: &Frame,
    show: Show,
    took: Duration,
    note: Option<&str>,
) -> ExitCode {
    let printed = if opts.json {
        writeln!(io::stdout(), "{}", json_line(reply))
    } else if reply.status() == 200 {
        print_success(reply, show, took, note)
    } else {
        Ok(())
    };
    if printed.and_then(|_| io::stdout().flush()).is_err() {
        return ExitCode::from(EXIT_FAILED);
    }
    if reply.status() != 200 {
        return fail(
            EXIT_REFUSED,
            &format!("server: {} {}", reply.status(), reply.error().unwrap_or("")),
        );
    }
    match show {
        Show::Exec => ExitCode::from(exec_exit_code(reply)),
        _ => ExitCode::SUCCESS,
    }
}

/// An exec's exit code as ours; killed by a signal: 128 + the signal, as shells do.
fn exec_exit_code(reply: &Frame) -> u8 {
    let field = |key| reply.header.get(key).and_then(Value::as_u64);
    match (field("exit"), field("signal")) {
        (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_REFUSED),
        (None, Some(signal)) => u8::try_from(128 + signal.min(127)).unwrap_or(EXIT_REFUSED),
        (None, None) => EXIT_REFUSED,
    }
}

/// The reply header as one JSON line, with the body as `body` (UTF-8) or `body_hex`.
fn json_line(reply: &Frame) -> String {
    let mut header: Map<String, Value> = reply.header.clone();
    if !reply.body.is_empty() {
        match std::str::from_utf8(&reply.body) {
            Ok(text) => header.insert("body".into(), text.into()),
            Err(_) => header.insert("body_hex".into(), hex::encode(&reply.body).into()),
        };
    }
    Value::Object(header).to_string()
}

/// Prints a successful reply as the user sees it (an exec's stderr to our stderr).
fn print_success(reply: &Frame, show: Show, took: Duration, note: Option<&str>) -> io::Result<()> {
    if let Show::Exec = show {
        let stdout_len = reply
            .header
            .get("stdout")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let split = usize::try_from(stdout_len)
            .unwrap_or(usize::MAX)
            .min(reply.body.len());
        let (out, err) = reply.body.split_at(split);
        io::stdout().write_all(out)?;
        io::stdout().flush()?;
        return io::stderr().write_all(err);
    }
    io::stdout().write_all(render(reply, show, took, note).as_bytes())
}

/// A successful reply as text, ending in a newline.
fn render(reply: &Frame, show: Show, took: Duration, note: Option<&str>) -> String {
    let body = || String::from_utf8_lossy(&reply.body).into_owned();
    let mut text = match (note, show) {
        (Some(note), _) => note.to_string(),
        (None, Show::RoundTrip) => format!("pong in {:.3} ms", took.as_secs_f64() * 1000.0),
        (None, Show::PrettyJson) => serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(body),
        (None, Show::Body | Show::Exec) => body(),
        (None, Show::Field(key)) => reply.str(key).unwrap_or("").to_string(),
        (None, Show::Done) => "ok".to_string(),
        (None, Show::Silent) => return String::new(),
        (None, Show::Sum) => format!(
            "{}  {} bytes",
            reply.str("sha256").unwrap_or("?"),
            reply
                .header
                .get("total")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        ),
        (None, Show::Listing) => listing(&reply.body).unwrap_or_else(body),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// An `ls` body as lines of type, size, modification time and name (dirs end in `/`).
fn listing(body: &[u8]) -> Option<String> {
    let entries: Vec<Value> = serde_json::from_slice(body).ok()?;
    let mut text = String::new();
    for e in &entries {
        let name = e.get("name")?.as_str()?;
        let dir = e.get("type")?.as_str()? == "dir";
        let size = e.get("size").and_then(Value::as_u64).unwrap_or(0);
        let mtime = e
            .get("mtime")
            .and_then(Value::as_i64)
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        let slash = if dir { "/" } else { "" };
        text.push_str(&format!("{size:>12}  {mtime}  {name}{slash}\n"));
    }
    if entries.is_empty() {
        text.push_str("(empty)\n");
    }
    Some(text)
}

/// Text from the network made safe for a terminal: control characters (an
/// escape sequence could rewrite the screen) become U+FFFD; newlines and tabs stay.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// A push as one line: `[room] user: text`, `[dm] user: text`, `[room] * user joined`.
fn render_push(push: &Frame) -> String {
    let field = |key| printable(push.str(key).unwrap_or("?"));
    match push.op() {
        Some("bye") => format!("[server closed the connection: {}]", field("reason")),
        Some("msg") => {
            let text = String::from_utf8_lossy(&push.body);
            let text = printable(text.trim_end_matches(['\n', '\r']));
            match push.str("room") {
                Some(_) => format!("[{}] {}: {text}", field("room"), field("from")),
                None => format!("[dm] {}: {text}", field("from")),
            }
        }
        Some(op @ ("joined" | "left")) => {
            format!("[{}] * {} {op}", field("room"), field("user"))
        }
        _ => format!("[push] {}", printable(&json_line(push))),
    }
}

/// The shell's link: replies come from its reader thread.
struct ShellLink<'a> {
    requester: &'a mut Requester,
    plans: mpsc::Sender<Option<Download>>,
    replies: mpsc::Receiver<io::Result<(Frame, Option<Download>)>>,
}

impl Link for ShellLink<'_> {
    fn exchange(
        &mut self,
        send: &mut dyn FnMut(&mut Requester) -> io::Result<u64>,
        sink: Option<Download>,
    ) -> Result<(Frame, Option<Download>), String> {
        // A transfer's reply may take long to stream; a plain reply is bounded.
        let streaming = sink.is_some();
        self.plans
            .send(sink)
            .map_err(|_| "connection lost: the server closed it".to_string())?;
        send(self.requester).map_err(|e| format!("connection lost: {e}"))?;
        let got = if streaming {
            self.replies
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            self.replies.recv_timeout(REPLY_TIMEOUT)
        };
        match got {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err("connection lost: the server closed it".into())
            }
            Ok(Err(e)) => Err(format!("connection lost: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => Err("no reply from the server".into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err("connection lost: the server closed it".into())
            }
        }
    }
}

/// What the shell's lines are.
enum Mode {
    /// Commands from the table (`frameloop client`).
    Commands,
    /// Text said to this room (`frameloop client chat ROOM`).
    Chat(String),
}

/// The interactive shell.
pub fn interactive(opts: &Options) -> ExitCode {
    if let Target::Udp(_) = opts.target {
        return fail(
            EXIT_FAILED,
            "--udp takes a COMMAND (the shell runs over --addr or --unix)",
        );
    }
    let client = match opts.connect() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    match shell(client, opts, Mode::Commands) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILED, &e),
    }
}

/// `frameloop client chat ROOM`: joins ROOM, then says each line typed to it,
/// printing the room's messages live; Ctrl-D (or `/quit`) leaves.
fn chat(opts: &Options, words: &[String]) -> ExitCode {
    let [room] = words else {
        return fail(EXIT_FAILED, "usage: chat ROOM");
    };
    let client = match opts.connect() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    match shell(client, opts, Mode::Chat(room.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILED, &e),
    }
}

/// Where shell lines come from: rustyline on a terminal (editing, history, live
/// pushes above the prompt), plain lines otherwise (`printf 'echo hi\n' | frameloop client`).
enum Lines {
    Editor(Box<rustyline::DefaultEditor>, Option<PathBuf>),
    Plain(io::Lines<io::StdinLock<'static>>),
}

impl Lines {
    /// The next line, or `None` at the end of input.
    fn next(&mut self, prompt: &str) -> Result<Option<String>, String> {
        use rustyline::error::ReadlineError;
        match self {
            Lines::Editor(editor, _) => loop {
                match editor.readline(prompt) {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.trim());
                        return Ok(Some(line));
                    }
                    Err(ReadlineError::Interrupted) => continue, // Ctrl-C clears the line
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                }
            },
            Lines::Plain(lines) => lines.next().transpose().map_err(|e| e.to_string()),
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if let Lines::Editor(editor, Some(path)) = self {
            let _ = editor.save_history(path);
        }
    }
}

fn shell(client: Client, opts: &Options, mode: Mode) -> Result<(), String> {
    use rustyline::ExternalPrinter;
    use std::io::{BufRead, IsTerminal};

    let (prompt, hint) = match &mode {
        Mode::Commands => ("frameloop> ".to_string(), "help lists the commands"),
        Mode::Chat(room) => (
            format!("{room}> "),
            "lines are said to the room; Ctrl-D leaves",
        ),
    };
    println!("connected to {} as {} ({hint})", opts.target, client.user);
    let (mut requester, mut reader, early_pushes) = client.split();
    for push in early_pushes {
        println!("{}", render_push(&push));
    }
    // Pushes are printed by the reader thread: above the line being typed on a
    // terminal (rustyline's external printer, so the line is not mangled).
    let mut print_push: Box<dyn FnMut(String) + Send>;
    let mut lines = if io::stdin().is_terminal() {
        let mut editor = rustyline::DefaultEditor::new().map_err(|e| e.to_string())?;
        let history =
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".frameloop_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        let mut printer = editor
            .create_external_printer()
            .map_err(|e| e.to_string())?;
        print_push = Box::new(move |line| {
            let _ = printer.print(line);
        });
        Lines::Editor(Box::new(editor), history)
    } else {
        print_push = Box::new(|line| println!("{line}"));
        Lines::Plain(io::stdin().lock().lines())
    };
    // The shell may sit idle for long: the reader thread waits without a timeout
    // (the prompt loop bounds each reply wait itself).
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| e.to_string())?;
    // Each request first sends its plan for the reply (a download to stream the
    // body into, or none) to the reader thread; a reply always answers the one
    // request in flight, so the plan is there when its header arrives.
    let (plans, plans_rx) = mpsc::channel::<Option<Download>>();
    let (replies, replies_rx) = mpsc::channel::<io::Result<(Frame, Option<Download>)>>();
    // Set (before the `bye` is printed) when the server says it is closing.
    let said_bye = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bye_seen = std::sync::Arc::clone(&said_bye);
    std::thread::spawn(move || {
        loop {
            let frame = read_head(&mut reader).and_then(|(header, size)| {
                if header.contains_key("status") {
                    let mut sink = plans_rx.recv().ok().flatten();
                    let sink_ref = sink.as_mut().map(|d| d as &mut dyn BodySink);
                    return read_body(&mut reader, header, size, sink_ref).map(|f| Some((f, sink)));
                }
                let push = read_body(&mut reader, header, size, None)?;
                if push.op() == Some("bye") {
                    bye_seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                print_push(render_push(&push));
                Ok(None)
            });
            match frame {
                Ok(None) => {}
                Ok(Some(reply)) => {
                    if replies.send(Ok(reply)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = replies.send(Err(e));
                    return;
                }
            }
        }
    });
    let mut link = ShellLink {
        requester: &mut requester,
        plans,
        replies: replies_rx,
    };
    if let Mode::Chat(room) = &mode {
        let (reply, _) = perform(&mut link, with_room("join", room)?)?;
        if reply.status() != 200 {
            return Err(format!(
                "cannot join {room}: {} {}",
                reply.status(),
                reply.error().unwrap_or("")
            ));
        }
    }
    while let Some(line) = lines.next(&prompt)? {
        let request = match &mode {
            Mode::Chat(room) => match line.trim() {
                "" => continue,
                "/quit" => break,
                _ => Request {
                    fields: json!({ "room": room }),
                    body: line.into_bytes(),
                    ..plain("say", Show::Silent)
                },
            },
            Mode::Commands => {
                let line = line.trim();
                match line {
                    "" => continue,
                    "quit" | "exit" => break,
                    "help" => {
                        print!("{}", help());
                        continue;
                    }
                    _ => {}
                }
                match parse(line) {
                    Ok((_, request)) => request,
                    Err(e) => {
                        println!("{e}");
                        continue;
                    }
                }
            }
        };
        let show = request.show;
        let start = Instant::now();
        let (reply, note) = match perform(&mut link, request) {
            Ok(done) => done,
            Err(e) if e.starts_with("connection lost") || e.starts_with("no reply") => {
                return Err(e);
            }
            Err(e) => {
                println!("{e}");
                continue;
            }
        };
        if opts.json {
            println!("{}", json_line(&reply));
        } else if reply.status() == 200 {
            print_success(&reply, show, start.elapsed(), note.as_deref())
                .map_err(|e| e.to_string())?;
        } else {
            println!("error {}: {}", reply.status(), reply.error().unwrap_or(""));
        }
    }
    // Input ended. If the server closed the connection meanwhile (a shutdown, an
    // idle timeout), say so and exit 2, as the next command would have. The `bye`
    // flag covers the moment between the server's bye and the reader's EOF.
    match link.replies.try_recv() {
        Ok(Err(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            Err(format!("connection lost: {e}"))
        }
        Ok(Err(_)) => Err("connection lost: the server closed it".into()),
        _ if said_bye.load(std::sync::atomic::Ordering::SeqCst) => {
            Err("connection lost: the server closed it".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_rest_of_line() {
        let (c, r) = parse("echo  two  spaces ").unwrap();
        assert_eq!(
            (c.name, r.op, r.body.as_slice()),
            ("echo", "echo", &b" two  spaces "[..])
        );
        let (_, r) = parse("time %H:%M").unwrap();
        assert_eq!(r.fields, json!({"format": "%H:%M"}));
        let (_, r) = parse("time").unwrap();
        assert_eq!(r.fields, json!({}));
        assert!(parse("frob x").is_err());
        assert!(help().contains("echo TEXT"));
    }

    #[test]
    fn chat_commands_parse() {
        let (_, r) = parse("say lobby hello  there ").unwrap();
        assert_eq!((r.op, &r.fields), ("say", &json!({"room": "lobby"})));
        assert_eq!(r.body, b"hello  there ");
        let (_, r) = parse("dm bob hi").unwrap();
        assert_eq!(
            (r.op, &r.fields, &r.body[..]),
            ("dm", &json!({"to": "bob"}), &b"hi"[..])
        );
        let (_, r) = parse("join lobby").unwrap();
        assert_eq!((r.op, &r.fields), ("join", &json!({"room": "lobby"})));
        for bad in ["say lobby", "say", "dm bob", "join", "join a b", "leave"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    fn push(header: Value, body: &[u8]) -> Frame {
        let Value::Object(header) = header else {
            panic!()
        };
        Frame {
            header,
            body: body.to_vec(),
        }
    }

    #[test]
    fn chat_pushes_render_as_one_safe_line() {
        let msg = push(
            json!({"op":"msg","room":"lobby","from":"bob","size":3}),
            b"hi\n",
        );
        assert_eq!(render_push(&msg), "[lobby] bob: hi");
        let dm = push(json!({"op":"msg","from":"carol","size":2}), b"yo");
        assert_eq!(render_push(&dm), "[dm] carol: yo");
        let joined = push(json!({"op":"joined","room":"lobby","user":"bob"}), b"");
        assert_eq!(render_push(&joined), "[lobby] * bob joined");
        let left = push(json!({"op":"left","room":"lobby","user":"bob"}), b"");
        assert_eq!(render_push(&left), "[lobby] * bob left");
        // A terminal escape sequence from the network is not passed through.
        let evil = push(
            json!({"op":"msg","room":"r","from":"x","size":6}),
            b"\x1b[2Jok",
        );
        assert_eq!(render_push(&evil), "[r] x: \u{fffd}[2Jok");
    }
}
