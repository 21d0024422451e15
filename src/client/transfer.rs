//! File transfers for the CLI client: uploads and downloads streamed through
//! SHA-256 and a progress bar (on a terminal only), never held whole in memory.

use super::BodySink;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A bar with bytes, rate and ETA on stderr when it is a terminal; hidden otherwise
/// (scripts and tests see only the final line).
pub fn progress(len: u64, verb: &str) -> ProgressBar {
    use std::io::IsTerminal;
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(verb.to_string());
    bar
}

/// The SHA-256 (lower-case hex) and length of a local file, read in chunks.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), len));
        }
        hasher.update(buf.get(..n).unwrap_or_default());
        len += n as u64;
    }
}

/// A download in progress: bytes go through the hash into a temporary file beside
/// the destination, which is renamed over it only once the digest checks out.
/// Dropped unfinished, it removes the temporary file.
pub struct Download {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    hasher: Sha256,
    bar: ProgressBar,
    pub bytes: u64,
}

impl Download {
    pub fn create(dest: &Path) -> io::Result<Download> {
        let name = dest
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".part-{}", std::process::id()));
        let tmp = dest.with_file_name(tmp_name);
        let file = File::create(&tmp)?;
        Ok(Download {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            hasher: Sha256::new(),
            bar: ProgressBar::hidden(),
            bytes: 0,
        })
    }

    /// Checks the digest against `want` (hex, from the server's `sum`), then
    /// moves the file into place. On a mismatch the file is removed.
    pub fn finish(mut self, want: &str) -> Result<String, String> {
        self.bar.finish_and_clear();
        let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!(
                "sha256 mismatch: received {got}, the server has {}; nothing saved",
                super::text::one_line(want)
            ));
        }
        let file = self.file.take().ok_or("download already finished")?;
        let file = file.into_inner().map_err(|e| e.error().to_string())?;
        file.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| format!("cannot move into {}: {e}", self.dest.display()))?;
        Ok(got)
    }
}

impl Write for Download {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let n = file.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        self.hasher.update(written);
        self.bytes += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl BodySink for Download {
    fn begin(&mut self, size: u64) {
        self.bar = progress(size, "get");
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.bar.finish_and_clear();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
