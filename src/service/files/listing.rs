//! `ls` of contract section 5: a directory's files and subdirectories as a JSON
//! array sorted by the bytes of their names.

use super::path::resolve;
use super::{FileSession, Files, beneath};
use crate::outbuf::OutBuf;
use crate::proto::header::opt_str;
use crate::proto::{HeadWriter, Header};
use crate::service::ops::OpError;
use serde::Serialize;
use std::os::fd::AsFd;

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
    pub fn ls(
        &self,
        session: &mut FileSession,
        user: &str,
        header: &Header,
        out: &mut OutBuf,
        id: Option<u64>,
    ) -> Result<(), OpError> {
        let target = match opt_str(header.path, "path")? {
            None => session.cwd.clone(),
            Some(text) => resolve(&session.cwd, &text)?,
        };
        let dir = self.open_at(session, user, &target, libc::O_RDONLY | libc::O_DIRECTORY)?;
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
        let body = serde_json::to_vec(&listed).map_err(|e| OpError::new(500, e.to_string()))?;
        out.append(|buf| HeadWriter::reply(buf, 200, id).finish(body.len() as u64));
        out.push_body(body);
        Ok(())
    }
}
