//! Contract section 5's quota and modes from outside (issue 16): disk use in
//! 4096-byte blocks for files and directories, exact under racing connections
//! and after a restart however deep the tree, and stored data private (0700/0600).

mod common;

use common::Server;
use frameloop::auth::Users;
use frameloop::client::{Client, Credentials, Frame};
use serde_json::{Value, json};
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const BLOCK: usize = 4096;

fn req(c: &mut Client, op: &str, fields: Value) -> Frame {
    c.request(op, fields, b"").expect("reply")
}

fn put(c: &mut Client, path: &str, data: &[u8], overwrite: bool) -> u64 {
    let fields = json!({"path": path, "size": data.len(), "overwrite": overwrite});
    c.request("put", fields, data).expect("reply").status()
}

fn status(c: &mut Client, op: &str, fields: Value) -> u64 {
    req(c, op, fields).status()
}

fn root(server: &Server) -> PathBuf {
    server.dir.path().join("files").join("guest")
}

fn tmp_entries(server: &Server) -> usize {
    std::fs::read_dir(server.dir.path().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What the contract counts for the tree under `dir` (not `dir` itself), walked
/// through directory handles so any depth works: files in 4096-byte blocks (at
/// least one), directories one block.
fn disk_use(dir: &Path) -> u64 {
    let path = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0, "open {}", dir.display());
    // SAFETY: a fresh descriptor.
    disk_use_at(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn disk_use_at(dir: OwnedFd) -> u64 {
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut total = 0;
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += BLOCK as u64;
            let name = CString::new(entry.file_name().as_encoded_bytes()).unwrap();
            // SAFETY: valid descriptor and NUL-terminated single name.
            let fd = unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                )
            };
            assert!(fd >= 0);
            // SAFETY: a fresh descriptor.
            total += disk_use_at(unsafe { OwnedFd::from_raw_fd(fd) });
        } else if meta.is_file() {
            total += meta.len().div_ceil(BLOCK as u64).max(1) * BLOCK as u64;
        }
    }
    total
}

/// The audit's finding 5: an overwrite whose destination another connection
/// removes mid-upload must not subtract the old file twice. Four rounds used to
/// store 16 KiB under a 12 KiB quota.
#[test]
fn overwrite_racing_rm_keeps_the_count_exact() {
    let quota = 3 * BLOCK;
    let server = Server::start(&["--quota", &quota.to_string()]);
    let mut b = server.client();
    assert_eq!(put(&mut b, "/y", &[1; BLOCK], false), 200);
    assert_eq!(put(&mut b, "/x", &[1; BLOCK], false), 200);
    for round in 0..4 {
        // A starts overwriting /x: header and half the body.
        let mut a = server.raw_authed();
        a.request(
            json!({"op":"put","path":"/x","size":BLOCK,"overwrite":true}),
            b"",
        );
        a.send_bytes(&[2; BLOCK / 2]);
        server.wait_for("the upload's temp file", |s| tmp_entries(s) == 1);
        // B removes /x meanwhile; A finishes.
        assert_eq!(status(&mut b, "rm", json!({"path":"/x"})), 200);
        a.send_bytes(&[2; BLOCK / 2]);
        let r = a.recv();
        assert_eq!(r.status(), 200, "round {round}: {r:?}");
        // Another block: fits only while the disk has room for it.
        let fresh = format!("/z{round}");
        let want = if round == 0 { 200 } else { 413 };
        assert_eq!(
            put(&mut b, &fresh, &[3; BLOCK], false),
            want,
            "round {round}"
        );
        let used = disk_use(&root(&server));
        assert!(used <= quota as u64, "round {round}: {used} bytes stored");
    }
    // The server's view matches the disk: exactly one more block fits after an rm.
    assert_eq!(status(&mut b, "rm", json!({"path":"/z0"})), 200);
    assert_eq!(put(&mut b, "/fits", &[4; BLOCK], false), 200);
    assert_eq!(put(&mut b, "/over", b"", false), 413);
    assert_eq!(disk_use(&root(&server)), quota as u64);
    assert_eq!(tmp_entries(&server), 0);
}

/// Two overwrites of one file and a put of another, all in flight at once:
/// each is judged at its rename, so the count ends what the disk holds.
#[test]
fn interleaved_overwrites_and_mkdir_stay_exact() {
    let quota = 4 * BLOCK;
    let server = Server::start(&["--quota", &quota.to_string()]);
    let mut c = server.client();
    assert_eq!(put(&mut c, "/x", &[1; BLOCK], false), 200);
    let mut starts = Vec::new();
    for size in [2 * BLOCK, BLOCK] {
        let mut a = server.raw_authed();
        a.request(
            json!({"op":"put","path":"/x","size":size,"overwrite":true}),
            b"",
        );
        a.send_bytes(&vec![5; size - 1]);
        starts.push((a, size));
    }
    server.wait_for("two temp files", |s| tmp_entries(s) == 2);
    // Disk: /x (1 block); in flight: /x as 2 blocks, /x as 1 block.
    assert_eq!(status(&mut c, "mkdir", json!({"path":"/d"})), 200);
    for (a, size) in &mut starts {
        a.send_bytes(&[5]);
        let r = a.recv();
        assert_eq!(r.status(), 200, "{size}: {r:?}");
    }
    // /x is now 1 block (the last rename), /d 1 block: 2 blocks left.
    assert_eq!(disk_use(&root(&server)), 2 * BLOCK as u64);
    assert_eq!(put(&mut c, "/two", &[6; 2 * BLOCK], false), 200);
    assert_eq!(status(&mut c, "mkdir", json!({"path":"/e"})), 413);
    assert_eq!(status(&mut c, "rm", json!({"path":"/d"})), 200);
    assert_eq!(status(&mut c, "mkdir", json!({"path":"/e"})), 200);
    assert_eq!(put(&mut c, "/empty", b"", false), 413);
    assert_eq!(disk_use(&root(&server)), quota as u64);
}

/// Finding 9: empty files, small files and directories count whole blocks.
#[test]
fn files_and_directories_count_in_blocks() {
    let server = Server::start(&["--quota", &(2 * BLOCK).to_string()]);
    let mut c = server.client();
    // Two empty files fit, a third does not.
    assert_eq!(put(&mut c, "/e1", b"", false), 200);
    assert_eq!(put(&mut c, "/e2", b"", false), 200);
    assert_eq!(put(&mut c, "/e3", b"", false), 413);
    assert_eq!(status(&mut c, "mkdir", json!({"path":"/d"})), 413);
    assert_eq!(status(&mut c, "rm", json!({"path":"/e1"})), 200);
    assert_eq!(status(&mut c, "rm", json!({"path":"/e2"})), 200);
    // 4097 bytes are two blocks.
    assert_eq!(put(&mut c, "/f", &[1; BLOCK + 1], false), 200);
    assert_eq!(put(&mut c, "/g", b"", false), 413);
    assert_eq!(status(&mut c, "rm", json!({"path":"/f"})), 200);
    // A directory counts one block; `mkdir -p` counts each one it makes, judged
    // before it makes any.
    let r = req(&mut c, "mkdir", json!({"path":"/a/b/c","parents":true}));
    assert_eq!(r.status(), 413, "{r:?}");
    assert!(!root(&server).join("a").exists());
    assert_eq!(
        status(&mut c, "mkdir", json!({"path":"/a/b","parents":true})),
        200
    );
    assert_eq!(put(&mut c, "/a/b/f", b"", false), 413);
    assert_eq!(status(&mut c, "mkdir", json!({"path":"/a/c"})), 413);
    // Removing an empty directory gives its block back.
    assert_eq!(status(&mut c, "rm", json!({"path":"/a/b"})), 200);
    assert_eq!(put(&mut c, "/a/f", b"x", false), 200);
    assert_eq!(put(&mut c, "/a/g", b"", false), 413);
    // An overwrite counts the file it replaces: 1 block for 1 block fits.
    assert_eq!(put(&mut c, "/a/f", &[2; BLOCK], true), 200);
    assert_eq!(put(&mut c, "/a/f", &[2; BLOCK + 1], true), 413);
    assert_eq!(disk_use(&root(&server)), 2 * BLOCK as u64);
}

/// Makes `name` in `dir` and opens it, through handles (no path is ever longer than a name).
fn mkdir_at(dir: &OwnedFd, name: &str) -> OwnedFd {
    let name = CString::new(name).unwrap();
    // SAFETY: valid descriptor and NUL-terminated name.
    assert_eq!(
        unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) },
        0
    );
    // SAFETY: as above.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_DIRECTORY) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn write_at(dir: &OwnedFd, name: &str, len: usize) {
    let name = CString::new(name).unwrap();
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )
    };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut file, &vec![7; len]).unwrap();
}

/// Finding 10: after a restart the walk counts a tree far deeper than PATH_MAX
/// allows with absolute paths (300 levels of 40-byte names: 12 KiB of path).
#[test]
fn restart_counts_a_deep_tree_exactly() {
    let server = Server::start(&[]);
    let mut c = server.client();
    assert_eq!(put(&mut c, "/top", b"t", false), 200);
    assert_eq!(status(&mut c, "mkdir", json!({"path":"/deep"})), 200);
    drop(c);
    let dir = server.kill9();
    // What an exec might leave: 300 levels, a file every 50 levels, a big one at the bottom.
    let deep = dir.path().join("files/guest/deep");
    let path = CString::new(deep.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor.
    let mut level = unsafe { OwnedFd::from_raw_fd(fd) };
    for i in 0..300 {
        level = mkdir_at(&level, &format!("{i:040}"));
        if i % 50 == 0 {
            write_at(&level, "f", 1);
        }
    }
    write_at(&level, "big", 2 * BLOCK + 1);
    // /top, /deep, 300 dirs, 6 small files, one of 3 blocks.
    let used = (1 + 1 + 300 + 6 + 3) * BLOCK;
    let server = Server::start_in(
        dir,
        "127.0.0.1:0",
        &["--quota", &(used + 2 * BLOCK).to_string()],
    );
    assert_eq!(disk_use(&root(&server)), used as u64);
    let mut c = server.client();
    assert_eq!(put(&mut c, "/g", &[1; 2 * BLOCK + 1], false), 413);
    assert_eq!(put(&mut c, "/g", &[1; 2 * BLOCK], false), 200);
    assert_eq!(put(&mut c, "/h", b"", false), 413);
    assert_eq!(status(&mut c, "mkdir", json!({"path":"/i"})), 413);
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Finding 13: under umask 0, everything the server creates is still private.
#[test]
fn stored_data_is_private_even_under_umask_0() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    let mut cmd = common::serve_command(&data);
    cmd.stderr(Stdio::null());
    // SAFETY: umask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    // The server struct only to kill it when done.
    let server = Server {
        child,
        addr,
        udp: None,
        tls: None,
        dir: base,
    };
    let key = *Users::load(&data.join("users"))
        .unwrap()
        .key("guest")
        .unwrap();
    let creds = Credentials::Key {
        user: "guest".into(),
        key,
    };
    let mut c = Client::connect(server.addr, &creds).unwrap();
    assert_eq!(put(&mut c, "/f", b"data", false), 200);
    assert_eq!(status(&mut c, "mkdir", json!({"path":"/d"})), 200);
    assert_eq!(
        status(&mut c, "mkdir", json!({"path":"/p/q","parents":true})),
        200
    );
    assert_eq!(put(&mut c, "/p/q/g", b"", false), 200);
    // An upload in progress: its temp file is private too.
    let mut a = Client::connect(server.addr, &creds).unwrap();
    a.send("put", json!({"path":"/h","size":100}), b"").unwrap();
    let tmp = data.join("tmp");
    let start = std::time::Instant::now();
    let temp = loop {
        if let Some(e) = std::fs::read_dir(&tmp).unwrap().flatten().next() {
            break e.path();
        }
        assert!(start.elapsed() < common::TIMEOUT, "no temp file");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(mode(&temp), 0o600, "temp file");
    let guest = data.join("files/guest");
    for (path, want) in [
        (data.clone(), 0o700),
        (data.join("files"), 0o700),
        (tmp.clone(), 0o700),
        (guest.clone(), 0o700),
        (guest.join("d"), 0o700),
        (guest.join("p"), 0o700),
        (guest.join("p/q"), 0o700),
        (guest.join("f"), 0o600),
        (guest.join("p/q/g"), 0o600),
        (data.join("users"), 0o600),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    drop(a);
}
