//! The command table shared by one-shot mode and the shell: each command's
//! name, help, and how its words become a request.

use serde_json::{Value, json};
use std::path::PathBuf;

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

pub(super) fn plain(op: &'static str, show: Show) -> Request {
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
pub(super) fn exec_request<S: AsRef<str>>(words: &[S]) -> Result<Request, String> {
    let (cmd, args) = words.split_first().ok_or("usage: exec CMD ARGS...")?;
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    Ok(Request {
        fields: json!({ "cmd": cmd.as_ref(), "args": args }),
        ..plain("exec", Show::Exec)
    })
}

/// A transfer's `FROM [TO]` words; TO defaults to FROM's file name. `from`
/// names FROM in the message when it has none (`put: LOCAL has no file name`).
fn from_and_to<'a>(
    words: &[&'a str],
    op: &str,
    from: &str,
    usage: &str,
) -> Result<(&'a str, &'a str), String> {
    match words {
        [source] => {
            let name = base_name(source).ok_or_else(|| format!("{op}: {from} has no file name"))?;
            Ok((*source, name))
        }
        [source, dest] => Ok((*source, *dest)),
        _ => Err(format!("usage: {usage}")),
    }
}

fn put_request(rest: &str) -> Result<Request, String> {
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    let overwrite = words.first() == Some(&"-f");
    if overwrite {
        words.remove(0);
    }
    let (local, remote) = from_and_to(&words, "put", "LOCAL", "put [-f] LOCAL [REMOTE]")?;
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
    let (remote, local) = from_and_to(&words, "get", "REMOTE", "get REMOTE [LOCAL]")?;
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

pub(super) fn with_room(op: &'static str, rest: &str) -> Result<Request, String> {
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
}
