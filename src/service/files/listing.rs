//! `ls` of contract section 5: a directory's files and subdirectories as a JSON
//! array sorted by the bytes of their names, read on a pool thread.

use super::path::resolve;
use super::{Done, FileSession, Files, beneath};
use crate::outbuf::OutBuf;
use crate::pool::Task;
use crate::proto::header::opt_str;
use crate::proto::{HeadWriter, Header};
use crate::service::ops::OpError;
use serde::Serialize;
use std::os::fd::{AsFd, OwnedFd};

/// One `ls` entry, serialized in the reply body.
#[derive(Serialize)]
struct ListEntry<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mtime: i64,
}

impl Files {
    /// `ls`: opens the directory; reading it (100,000 entries is a long blocking
    /// job) and building the reply body is work for the pool.
    pub fn ls(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
    ) -> Result<Task<Done>, OpError> {
        let target = match opt_str(header.path, "path")? {
            None => session.cwd.clone(),
            Some(text) => resolve(&session.cwd, &text)?,
        };
        let dir = self.open_at(session, user, &target, libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(Box::new(move || Done::Listing(listing(&dir))))
    }
}

/// The `ls` reply body for an open directory. Runs on a pool thread.
fn listing(dir: &OwnedFd) -> Result<Vec<u8>, OpError> {
    let mut entries = beneath::list(dir.as_fd())?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    // Only files and directories with UTF-8 names are listed: those are what a
    // path can name; symlinks and special files are not served at all.
    let listed: Vec<ListEntry> = entries
        .iter()
        .filter_map(|e| {
            let name = std::str::from_utf8(&e.name).ok()?;
            let kind = if beneath::is_dir(&e.stat) {
                "dir"
            } else if beneath::is_file(&e.stat) {
                "file"
            } else {
                return None;
            };
            Some(ListEntry {
                name,
                kind,
                size: beneath::size(&e.stat),
                mtime: e.stat.st_mtime,
            })
        })
        .collect();
    serde_json::to_vec(&listed).map_err(|e| OpError::new(500, e.to_string()))
}

/// The `ls` reply: its header, then the body the pool built.
pub fn write_listing(out: &mut OutBuf, id: Option<u64>, body: Vec<u8>) {
    out.append(|buf| HeadWriter::reply(buf, 200, id).finish(body.len() as u64));
    out.push_body(body);
}
