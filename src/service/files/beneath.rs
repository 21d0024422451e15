//! File system calls confined to a user's root: every path is opened relative to
//! the root's descriptor with openat2(2), and the other calls work on descriptors.
//!
//! Why openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: the kernel resolves the
//! whole path against the root descriptor in one step, refusing `..` escapes and a
//! symlink in *any* component. Checking a path first and opening it afterwards races
//! with anyone swapping in a symlink, and O_NOFOLLOW guards only the last component
//! (a symlinked directory in the middle still escapes). Names passed to the `*at`
//! calls below are single components, checked not to be symlinks first where it matters.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

fn cstring(s: &str) -> io::Result<CString> {
    // Paths were checked for NUL already; this only keeps the call sound.
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens `rel` (relative, `.` for the directory itself) beneath `dir`.
pub fn open(dir: BorrowedFd, rel: &str, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let path = cstring(rel)?;
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    loop {
        // SAFETY: valid descriptor, NUL-terminated path, and a correctly sized open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the lookup (the kernel asks to retry).
        if err.raw_os_error() != Some(libc::EAGAIN) && err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Opens a directory outside any root (the data directory's own parts).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: NUL-terminated path.
    let fd = check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the subdirectory `name` (one component, as `list` gives it, any bytes)
/// of `dir` for listing; a symlink is refused (ELOOP), not followed.
pub fn open_subdir(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if name.as_bytes().contains(&b'/') || matches!(name.as_bytes(), b"" | b"." | b"..") {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a directory of the data dir's own (and its missing parents), private
/// to the server's user: mode 0700 whatever the umask (it can only take bits away).
pub fn create_private_dir(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

pub fn fstat(fd: BorrowedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and a valid out pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `lstat` of one entry of `dir`: a symlink is reported as itself.
pub fn stat_entry(dir: BorrowedFd, name: &str) -> io::Result<libc::stat> {
    stat_entry_c(dir, &cstring(name)?)
}

fn stat_entry_c(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: as in fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, valid out pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// Makes a directory private to the server's user (0700; the umask can only take bits away).
pub fn mkdir(dir: BorrowedFd, name: &str) -> io::Result<()> {
    let name = cstring(name)?;
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) }).map(drop)
}

/// Removes a file, or an empty directory when `is_dir`.
pub fn remove(dir: BorrowedFd, name: &str, is_dir: bool) -> io::Result<()> {
    let name = cstring(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Renames `from` in `from_dir` to `to` in `to_dir`; with `no_replace`, fails with
/// EEXIST instead of replacing (atomically, no check-then-rename race).
pub fn rename(
    from_dir: BorrowedFd,
    from: &str,
    to_dir: BorrowedFd,
    to: &str,
    no_replace: bool,
) -> io::Result<()> {
    let (from, to) = (cstring(from)?, cstring(to)?);
    let flags = if no_replace {
        libc::RENAME_NOREPLACE
    } else {
        0
    };
    // SAFETY: valid descriptors and NUL-terminated names.
    check(unsafe {
        libc::renameat2(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// A directory entry: its name and `lstat`.
pub struct Entry {
    pub name: Vec<u8>,
    pub stat: libc::stat,
}

/// Lists a directory opened with `open(.., O_DIRECTORY | O_RDONLY, ..)`, without `.` and `..`.
pub fn list(dir: BorrowedFd) -> io::Result<Vec<Entry>> {
    // fdopendir takes ownership of the descriptor it is given, so give it a duplicate.
    let dup = dir.try_clone_to_owned()?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
    // SAFETY: `raw` is an open directory descriptor we own; fdopendir adopts it.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let err = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        unsafe { libc::close(raw) };
        return Err(err);
    }
    let mut entries = Vec::new();
    let result = loop {
        // readdir signals errors only through errno: clear it first.
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is a valid DIR* until closedir below.
        let ent = unsafe { libc::readdir64(stream) };
        if ent.is_null() {
            let err = io::Error::last_os_error();
            break if err.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(err)
            };
        }
        // SAFETY: d_name is NUL-terminated within the entry readdir returned.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        match stat_entry_c(dir, name) {
            Ok(stat) => entries.push(Entry {
                name: name.to_bytes().to_vec(),
                stat,
            }),
            // Removed between readdir and stat: it is simply gone.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => break Err(e),
        }
    };
    // SAFETY: valid DIR*, closed once (this also closes the duplicate descriptor).
    unsafe { libc::closedir(stream) };
    result.map(|()| entries)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// The size in bytes (0 for the negative sizes the kernel never reports).
pub fn size(st: &libc::stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// Starts writeback of a written range without waiting for it, so the final
/// fsync of a large upload has little left to wait for (a blocking call in the loop).
pub fn start_writeback(fd: BorrowedFd, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: valid descriptor; failure only means the final fsync does the work.
    unsafe {
        libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}
