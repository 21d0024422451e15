//! Test harness: starts the real server binary on an ephemeral port in a temp
//! data dir, and talks to it over real sockets (raw frames or the client library).
#![allow(dead_code)]

pub mod redis;

use byteorder::{BigEndian, ByteOrder};
use frameloop::auth::{self, Key, Users};
use frameloop::client::{Client, Credentials, Frame, read_frame};
use frameloop::proto::encode_frame;
use serde_json::{Value, json};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The UDP address (an ephemeral port unless the test chose `--udp`).
    pub udp: Option<SocketAddr>,
    /// The TLS address, with `--tls-listen`.
    pub tls: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().expect("tempdir"), "127.0.0.1:0", args)
    }

    pub fn start_in(dir: tempfile::TempDir, listen: &str, args: &[&str]) -> Server {
        Server::start_with(dir, listen, args, |_| {})
    }

    /// Like [`Server::start_in`], with a last say on the command (limits, environment).
    /// UDP goes on an ephemeral port unless `args` has `--udp`, so parallel tests
    /// never meet on the default 7878.
    pub fn start_with(
        dir: tempfile::TempDir,
        listen: &str,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let udp_off = args.windows(2).any(|w| w == ["--udp", "off"]);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_frameloop"));
        cmd.arg("serve")
            .args(["--listen", listen, "--data-dir"])
            .arg(dir.path());
        if !args.contains(&"--udp") {
            cmd.args(["--udp", "127.0.0.1:0"]);
        }
        cmd.args(args).stdout(Stdio::piped()).stderr(log);
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("start server");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        // Line 1: TCP; then UDP, the Unix socket and TLS, each when on. The
        // server writes them in one go; each ends with its address.
        let mut next_line = || {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read address");
            line
        };
        let address = |what: &str, line: String| -> SocketAddr {
            line.trim()
                .rsplit(' ')
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {what} address in {line:?}; log: {}", read_log(&dir)))
        };
        let addr = address("TCP", next_line());
        let udp = (!udp_off).then(|| address("UDP", next_line()));
        if args.contains(&"--unix") {
            next_line();
        }
        let tls = args
            .contains(&"--tls-listen")
            .then(|| address("TLS", next_line()));
        Server {
            child,
            addr,
            udp,
            tls,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn key(&self) -> Key {
        *Users::load(&self.dir.path().join("users"))
            .expect("users file")
            .key("guest")
            .expect("guest")
    }

    /// An authenticated client-library connection as `guest`.
    pub fn client(&self) -> Client {
        let creds = Credentials::Key {
            user: "guest".into(),
            key: self.key(),
        };
        Client::connect(self.addr, &creds).expect("connect and authenticate")
    }

    /// A raw connection that has read the hello.
    pub fn raw(&self) -> (Raw, Frame) {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut raw = Raw { s: stream };
        let hello = raw.recv();
        (raw, hello)
    }

    /// A raw connection, authenticated as guest.
    pub fn raw_authed(&self) -> Raw {
        let (mut raw, hello) = self.raw();
        raw.auth(&hello, "guest", &self.key());
        raw
    }

    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("fd dir")
            .count()
    }

    /// utime + stime of the server, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let after = &stat[stat.rfind(')').expect(")") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        // Fields 14 and 15 of stat; `after` starts at field 3.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    pub fn stats(&self) -> Value {
        let mut c = self.client();
        let reply = c.request("stats", Value::Null, b"").expect("stats");
        serde_json::from_slice(&reply.body).expect("stats json")
    }

    /// Waits until `cond` holds (polling), or panics after `TIMEOUT`.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut(&Server) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    /// Kills the server with SIGKILL (no chance to clean up) and hands back its
    /// data dir, for a restart on the same data.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
}

pub fn data_dir_path(server: &Server) -> PathBuf {
    server.dir.path().to_path_buf()
}

/// A raw socket speaking frames by hand, for tests that misbehave on purpose.
pub struct Raw {
    pub s: TcpStream,
}

impl Raw {
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    /// Sends a frame with this header text and body (the header's `size` is the caller's).
    pub fn send(&mut self, header: &str, body: &[u8]) {
        self.send_bytes(&encode_frame(header.as_bytes(), body));
    }

    /// Sends a request from a JSON value, adding `size` for the body.
    pub fn request(&mut self, mut header: Value, body: &[u8]) {
        if !body.is_empty() {
            header["size"] = json!(body.len());
        }
        self.send(&header.to_string(), body);
    }

    pub fn try_recv(&mut self) -> io::Result<Frame> {
        read_frame(&mut self.s)
    }

    pub fn recv(&mut self) -> Frame {
        self.try_recv().expect("a frame")
    }

    /// Asserts the server closes the connection: EOF with no further frame.
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        match self.s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("expected close, got {n} more bytes: {:?}", &buf[..n]),
            Err(e) => panic!("expected a clean close, got {e}"),
        }
    }

    pub fn auth(&mut self, hello: &Frame, user: &str, key: &Key) -> Frame {
        let nonce = auth::hex32(hello.str("nonce").expect("nonce")).expect("hex nonce");
        let cnonce = [9u8; 32];
        let mac = auth::client_mac(key, &nonce, &cnonce, user);
        self.request(
            json!({"op":"auth","user":user,"cnonce":hex::encode(cnonce),"mac":hex::encode(mac)}),
            b"",
        );
        let reply = self.recv();
        assert_eq!(reply.status(), 200, "auth failed: {reply:?}");
        let proof = auth::hex32(reply.str("mac").expect("mac")).expect("hex mac");
        assert!(
            auth::verify_server(key, &nonce, &cnonce, user, &proof),
            "server proof"
        );
        reply
    }
}

/// `frameloop serve` on a free port, no UDP, over `data`, stdout piped (its
/// first line says where it listens): for a server the harness does not run.
pub fn serve_command(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_frameloop"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--udp",
        "off",
        "--data-dir",
    ])
    .arg(data)
    .stdout(Stdio::piped());
    cmd
}

/// A TLS session to the server's TLS listener, trusting the certificate it
/// made in its data dir, for name `localhost` (no socket: the caller's).
pub fn tls_session(server: &Server) -> rustls::ClientConnection {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let cert = server.dir.path().join("tls/cert.pem");
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(cert).expect("cert") {
        roots.add(cert.expect("a certificate")).expect("a root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("session")
}

/// A frame's length prefix for `n`.
pub fn be32(n: u32) -> [u8; 4] {
    let mut b = [0u8; 4];
    BigEndian::write_u32(&mut b, n);
    b
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The first of `names` that runs, or `None` (and why) when the machine has
/// none; under `CI=true` a missing program fails the test.
pub fn installed(names: &[&'static str], arg: &str, package: &str) -> Option<&'static str> {
    let found = names
        .iter()
        .copied()
        .find(|bin| Command::new(bin).arg(arg).output().is_ok());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{package} is not installed (CI=true: .ci/run installs it)");
        }
        eprintln!("skipped: {package} is not installed (apt-get install {package})");
    }
    found
}

/// `frameloop load` for a second through `addr` with 20 connections, logging
/// in from `users`: every reply right, and more than a hundred of them.
pub fn load_without_errors(addr: &str, users: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args(["load", "--addr", addr, "--users"])
        .arg(users)
        .args([
            "--conns",
            "20",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--json",
        ])
        .output()
        .expect("run load");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["requests"].as_u64() > Some(100), "{report}");
}
