//! The interactive shell (`frameloop client`) and chat mode (`frameloop client
//! chat ROOM`): a prompt loop sending requests, a reader thread printing pushes live.

use super::commands::{Request, Show, help, parse, plain, with_room};
use super::exchange::{Link, perform};
use super::lines::{Lines, PushPrinter};
use super::render::{error_text, json_line, print_success, render_push};
use super::{EXIT_FAILED, Options, Target, fail};
use crate::client::transfer::Download;
use crate::client::{BodySink, Client, Frame, Requester, Stream, read_body, read_head};
use serde_json::json;
use std::io::{self, BufReader};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a command waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the shell ends when the server hung up.
const CLOSED: &str = "connection lost: the server closed it";

/// What the reader thread hands the prompt loop: a reply, with the download
/// its body was streamed into, if one was planned.
type Reply = io::Result<(Frame, Option<Download>)>;

/// A read error as the shell reports it (the end of the stream: the server closed it).
fn lost(e: io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        CLOSED.into()
    } else {
        format!("connection lost: {e}")
    }
}

/// The shell's link: replies come from its reader thread.
struct ShellLink<'a> {
    requester: &'a mut Requester,
    plans: mpsc::Sender<Option<Download>>,
    replies: mpsc::Receiver<Reply>,
}

impl Link for ShellLink<'_> {
    fn exchange(
        &mut self,
        send: &mut dyn FnMut(&mut Requester) -> io::Result<u64>,
        sink: Option<Download>,
    ) -> Result<(Frame, Option<Download>), String> {
        // A transfer's reply may take long to stream; a plain reply is bounded.
        let streaming = sink.is_some();
        self.plans.send(sink).map_err(|_| CLOSED.to_string())?;
        send(self.requester).map_err(|e| format!("connection lost: {e}"))?;
        let got = if streaming {
            self.replies
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            self.replies.recv_timeout(REPLY_TIMEOUT)
        };
        match got {
            Ok(reply) => reply.map_err(lost),
            Err(mpsc::RecvTimeoutError::Timeout) => Err("no reply from the server".into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CLOSED.into()),
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
    run(opts, Mode::Commands)
}

/// `frameloop client chat ROOM`: joins ROOM, then says each line typed to it,
/// printing the room's messages live; Ctrl-D (or `/quit`) leaves.
pub(super) fn chat(opts: &Options, words: &[String]) -> ExitCode {
    let [room] = words else {
        return fail(EXIT_FAILED, "usage: chat ROOM");
    };
    run(opts, Mode::Chat(room.clone()))
}

/// Connects and runs the shell in `mode`; whatever ends it early exits 2.
fn run(opts: &Options, mode: Mode) -> ExitCode {
    match opts.connect().and_then(|client| shell(client, opts, mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_FAILED, &e),
    }
}

/// The reader thread: prints pushes as they arrive and hands each reply to the
/// prompt loop, a successful reply's body streamed into the download planned
/// for it. A reply always answers the one request in flight, whose plan was
/// sent before the request, so the plan is there when the reply's header arrives.
/// Returns the flag set (before the `bye` is printed) when the server says it is closing.
fn spawn_reader(
    mut reader: BufReader<Stream>,
    plans: mpsc::Receiver<Option<Download>>,
    replies: mpsc::Sender<Reply>,
    mut print_push: PushPrinter,
) -> Arc<AtomicBool> {
    let said_bye = Arc::new(AtomicBool::new(false));
    let bye_seen = Arc::clone(&said_bye);
    std::thread::spawn(move || {
        loop {
            let frame = read_head(&mut reader).and_then(|(header, size)| {
                if header.contains_key("status") {
                    let mut sink = plans.recv().ok().flatten();
                    let sink_ref = sink.as_mut().map(|d| d as &mut dyn BodySink);
                    return read_body(&mut reader, header, size, sink_ref).map(|f| Some((f, sink)));
                }
                let push = read_body(&mut reader, header, size, None)?;
                if push.op() == Some("bye") {
                    bye_seen.store(true, Ordering::SeqCst);
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
    said_bye
}

/// What one typed line asks the shell to do.
enum Step {
    Send(Request),
    /// Nothing to send (an empty line, `help`, a mistake already told).
    Skip,
    Quit,
}

fn step(mode: &Mode, line: String) -> Step {
    match mode {
        Mode::Chat(room) => match line.trim() {
            "" => Step::Skip,
            "/quit" => Step::Quit,
            _ => Step::Send(Request {
                fields: json!({ "room": room }),
                body: line.into_bytes(),
                ..plain("say", Show::Silent)
            }),
        },
        Mode::Commands => match line.trim() {
            "" => Step::Skip,
            "quit" | "exit" => Step::Quit,
            "help" => {
                print!("{}", help());
                Step::Skip
            }
            line => match parse(line) {
                Ok((_, request)) => Step::Send(request),
                Err(e) => {
                    println!("{e}");
                    Step::Skip
                }
            },
        },
    }
}

fn shell(client: Client, opts: &Options, mode: Mode) -> Result<(), String> {
    let (prompt, hint) = match &mode {
        Mode::Commands => ("frameloop> ".to_string(), "help lists the commands"),
        Mode::Chat(room) => (
            format!("{room}> "),
            "lines are said to the room; Ctrl-D leaves",
        ),
    };
    println!("connected to {} as {} ({hint})", opts.target, client.user);
    let (mut requester, reader, early_pushes) = client.split();
    for push in early_pushes {
        println!("{}", render_push(&push));
    }
    let (mut lines, print_push) = Lines::open()?;
    // The shell may sit idle for long: the reader thread waits without a timeout
    // (the prompt loop bounds each reply wait itself).
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| e.to_string())?;
    let (plans, plans_rx) = mpsc::channel();
    let (replies, replies_rx) = mpsc::channel();
    let said_bye = spawn_reader(reader, plans_rx, replies, print_push);
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
                error_text(&reply)
            ));
        }
    }
    while let Some(line) = lines.next(&prompt)? {
        let request = match step(&mode, line) {
            Step::Send(request) => request,
            Step::Skip => continue,
            Step::Quit => break,
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
            println!("error {}: {}", reply.status(), error_text(&reply));
        }
    }
    // Input ended. If the server closed the connection meanwhile (a shutdown, an
    // idle timeout), say so and exit 2, as the next command would have. The `bye`
    // flag covers the moment between the server's bye and the reader's EOF.
    match link.replies.try_recv() {
        Ok(Err(e)) => Err(lost(e)),
        _ if said_bye.load(Ordering::SeqCst) => Err(CLOSED.into()),
        _ => Ok(()),
    }
}
