//! One-shot mode: one command from the argument list, its reply on stdout, and
//! the exit code it earns (over TCP, a Unix socket or UDP).

use super::commands::{Request, Show, exec_request, parse};
use super::exchange::{Direct, perform};
use super::render::{error_text, json_line, print_success};
use super::{EXIT_FAILED, EXIT_REFUSED, Options, Target, fail, shell};
use crate::client::Frame;
use crate::client::udp::UdpClient;
use serde_json::Value;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `frameloop client COMMAND ARGS...`: one request, its reply on stdout.
pub fn one_shot(opts: &Options, words: &[String]) -> ExitCode {
    if let Some((first, rest)) = words.split_first()
        && first == "chat"
    {
        return shell::chat(opts, rest);
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
            &format!("server: {} {}", reply.status(), error_text(reply)),
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

/// One request over UDP (`--udp`): the stateless ops, with retries on timeout.
fn udp_one_shot(opts: &Options, addr: SocketAddr, request: Request) -> ExitCode {
    if request.transfer.is_some() {
        return fail(EXIT_FAILED, "put and get need --addr or --unix, not --udp");
    }
    let mut client = match UdpClient::connect(addr) {
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
