//! How a request is carried out over a connection: one exchange, or a file
//! transfer's exchanges, whoever reads the replies (one-shot or the shell).

use super::commands::{Request, Transfer};
use super::render::error_text;
use crate::client::transfer::{self, Download};
use crate::client::{BodySink, Client, Frame, Requester};
use serde_json::json;
use std::io;
use std::path::Path;

/// One request's exchange over a connection, however its replies are read (the
/// one-shot client reads them itself; the shell has a reader thread).
pub(super) trait Link {
    /// Sends with `send`, then waits for the reply; a successful reply's body
    /// goes to `sink` when one is given, and the sink comes back with the reply.
    fn exchange(
        &mut self,
        send: &mut dyn FnMut(&mut Requester) -> io::Result<u64>,
        sink: Option<Download>,
    ) -> Result<(Frame, Option<Download>), String>;
}

/// One-shot mode's link: the client reads its replies itself.
pub(super) struct Direct(pub(super) Client);

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
        if !reply.answers(id) {
            return Err(format!("reply id {:?}, expected {id}", reply.id()));
        }
        Ok((reply, sink))
    }
}

/// Runs a request: one exchange, or a transfer's exchanges (a `put` streams the
/// file up with its digest; a `get` streams it down, then asks `sum` to check it).
/// Returns the reply to show, with a line saying what a transfer did.
pub(super) fn perform(
    link: &mut dyn Link,
    request: Request,
) -> Result<(Frame, Option<String>), String> {
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
        }) => put(link, &local, &remote, overwrite),
        Some(Transfer::Get { remote, local }) => get(link, &remote, &local),
    }
}

/// Streams `local` up as `remote`, then checks the digest the server stored.
fn put(
    link: &mut dyn Link,
    local: &Path,
    remote: &str,
    overwrite: bool,
) -> Result<(Frame, Option<String>), String> {
    let cannot = |e: io::Error| format!("cannot read {}: {e}", local.display());
    // The digest goes in the header, so the server refuses a corrupted upload
    // before anything replaces `remote`: the file is read twice.
    let (sha, size) = transfer::hash_file(local).map_err(cannot)?;
    let mut file = std::fs::File::open(local).map_err(cannot)?;
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

/// Streams `remote` down into `local`, then asks `sum` to check it before the
/// file takes its name.
fn get(link: &mut dyn Link, remote: &str, local: &Path) -> Result<(Frame, Option<String>), String> {
    let download =
        Download::create(local).map_err(|e| format!("cannot write {}: {e}", local.display()))?;
    let path = json!({ "path": remote });
    let (reply, download) =
        link.exchange(&mut |r| r.send("get", path.clone(), b""), Some(download))?;
    let Some(download) = download.filter(|_| reply.status() == 200) else {
        return Ok((reply, None));
    };
    let (sum, _) = link.exchange(&mut |r| r.send("sum", path.clone(), b""), None)?;
    let want = sum
        .str("sha256")
        .ok_or_else(|| format!("sum failed: {} {}", sum.status(), error_text(&sum)))?;
    let bytes = download.bytes;
    let sha = download.finish(want)?;
    let note = format!(
        "saved {}: {bytes} bytes, sha256 {sha} (verified)",
        local.display()
    );
    Ok((reply, Some(note)))
}
