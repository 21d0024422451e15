//! `frameloop client`: one table of commands, used by both one-shot mode
//! (`frameloop client echo hi`) and the interactive shell (line editing, history,
//! pushes printed live above the prompt).

use super::{Client, Credentials, Frame, read_frame};
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
    text.push_str(&format!("  {:<16} {}\n", "help", "this list"));
    text.push_str(&format!(
        "  {:<16} {}\n",
        "quit", "leave (also exit, Ctrl-D)"
    ));
    text
}

/// Where the client connects and who it is.
pub struct Options {
    pub addr: SocketAddr,
    pub user: String,
    pub key: Option<String>,
    pub users: PathBuf,
    pub json: bool,
}

impl Options {
    /// Connects and authenticates, or says in one line why not.
    fn connect(&self) -> Result<Client, String> {
        let creds = Credentials::for_user(&self.user, self.key.as_deref(), &self.users)?;
        Client::connect(self.addr, &creds).map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => e.to_string(),
            io::ErrorKind::ConnectionRefused => {
                format!("cannot connect to {}: nothing listens there", self.addr)
            }
            _ => format!("cannot connect to {}: {e}", self.addr),
        })
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("frameloop: {message}");
    ExitCode::from(code)
}

/// `frameloop client COMMAND ARGS...`: one request, its reply on stdout.
pub fn one_shot(opts: &Options, words: &[String]) -> ExitCode {
    let (_, request) = match parse(&words.join(" ")) {
        Ok(parsed) => parsed,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    let mut client = match opts.connect() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    let start = Instant::now();
    let reply = match client.request(request.op, request.fields, &request.body) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_FAILED, &format!("no reply: {e}")),
    };
    let mut out = io::stdout().lock();
    let printed = if opts.json {
        writeln!(out, "{}", json_line(&reply))
    } else if reply.status() == 200 {
        out.write_all(render(&reply, request.show, start.elapsed()).as_bytes())
    } else {
        Ok(())
    };
    if printed.and_then(|_| out.flush()).is_err() {
        return ExitCode::from(EXIT_FAILED);
    }
    if reply.status() == 200 {
        ExitCode::SUCCESS
    } else {
        fail(
            EXIT_REFUSED,
            &format!("server: {} {}", reply.status(), reply.error().unwrap_or("")),
        )
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

/// A successful reply as the user sees it, ending in a newline.
fn render(reply: &Frame, show: Show, took: Duration) -> String {
    let mut text = match show {
        Show::RoundTrip => format!("pong in {:.3} ms", took.as_secs_f64() * 1000.0),
        Show::PrettyJson => serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).into_owned()),
        Show::Body => String::from_utf8_lossy(&reply.body).into_owned(),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A push as one line (`bye` and, later, chat messages).
fn render_push(push: &Frame) -> String {
    match push.op() {
        Some("bye") => format!(
            "[server closed the connection: {}]",
            push.str("reason").unwrap_or("")
        ),
        _ => format!("[push] {}", json_line(push)),
    }
}

/// The interactive shell.
pub fn interactive(opts: &Options) -> ExitCode {
    let client = match opts.connect() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_FAILED, &e),
    };
    match shell(client, opts) {
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
    fn next(&mut self) -> Result<Option<String>, String> {
        use rustyline::error::ReadlineError;
        match self {
            Lines::Editor(editor, _) => loop {
                match editor.readline("frameloop> ") {
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

fn shell(client: Client, opts: &Options) -> Result<(), String> {
    use rustyline::ExternalPrinter;
    use std::io::{BufRead, IsTerminal};

    println!(
        "connected to {} as {} (help lists the commands)",
        opts.addr, client.user
    );
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
    let (replies, replies_rx) = mpsc::channel::<io::Result<Frame>>();
    std::thread::spawn(move || {
        loop {
            match read_frame(&mut reader) {
                Ok(frame) if frame.is_push() => print_push(render_push(&frame)),
                other => {
                    let end = other.is_err();
                    if replies.send(other).is_err() || end {
                        return;
                    }
                }
            }
        }
    });
    while let Some(line) = lines.next()? {
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
        let request = match parse(line) {
            Ok((_, request)) => request,
            Err(e) => {
                println!("{e}");
                continue;
            }
        };
        let start = Instant::now();
        requester
            .send(request.op, request.fields, &request.body)
            .map_err(|e| format!("connection lost: {e}"))?;
        let reply = match replies_rx.recv_timeout(REPLY_TIMEOUT) {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err("connection lost: the server closed it".into());
            }
            Ok(Err(e)) => return Err(format!("connection lost: {e}")),
            Err(_) => return Err("no reply from the server".into()),
        };
        if opts.json {
            println!("{}", json_line(&reply));
        } else if reply.status() == 200 {
            print!("{}", render(&reply, request.show, start.elapsed()));
        } else {
            println!("error {}: {}", reply.status(), reply.error().unwrap_or(""));
        }
    }
    Ok(())
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
}
