//! A redis-server for the bus tests (contract section 12), on a free loopback
//! port with a password, stopped when dropped; plain, or TLS only with a
//! self-signed certificate. `.ci/run` installs Redis; without it a test says
//! so and passes, except under `CI=true`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    bin: &'static str,
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// With TLS only (`rediss://`): its certificate, for `localhost`.
    pub cert: Option<PathBuf>,
}

impl Redis {
    /// A new Redis, or `None` when none is installed (see `installed`).
    pub fn start() -> Option<Redis> {
        Redis::start_with(false)
    }

    /// A new Redis that speaks TLS only.
    pub fn start_tls() -> Option<Redis> {
        Redis::start_with(true)
    }

    fn start_with(tls: bool) -> Option<Redis> {
        let names = ["redis-server", "/usr/bin/redis-server"];
        let bin = super::installed(&names, "--version", "redis-server")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = tls.then(|| {
            let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("a certificate");
            let cert = dir.path().join("cert.pem");
            std::fs::write(&cert, made.cert.pem()).expect("cert");
            let key = made.signing_key.serialize_pem();
            std::fs::write(dir.path().join("key.pem"), key).expect("key");
            cert
        });
        let mut redis = Redis {
            bin,
            child: None,
            port: 0,
            dir,
            cert,
        };
        // A free port may be taken before Redis binds it: try a few.
        for _ in 0..5 {
            redis.port = super::free_port();
            if redis.run() {
                return Some(redis);
            }
        }
        panic!("redis-server would not start; log:\n{}", redis.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Starts redis-server on `self.port`; true once it accepts connections.
    fn run(&mut self) -> bool {
        let port = self.port.to_string();
        let mut cmd = Command::new(self.bin);
        cmd.args(["--bind", "127.0.0.1", "--requirepass", PASSWORD]);
        // A user allowed only what the bus does, on its channels only.
        let password = format!(">{PASSWORD}");
        cmd.args(["--user", "frameloop", "on", &password, "resetchannels"]);
        cmd.args(["&frameloop:*", "-@all", "+auth", "+ping"]);
        cmd.args(["+subscribe", "+unsubscribe", "+publish"]);
        cmd.args(["--save", "", "--appendonly", "no", "--dir"]);
        cmd.arg(self.dir.path());
        match &self.cert {
            None => cmd.args(["--port", &port]),
            Some(cert) => cmd
                .args(["--port", "0", "--tls-port", &port, "--tls-cert-file"])
                .arg(cert)
                .arg("--tls-key-file")
                .arg(self.dir.path().join("key.pem"))
                .args(["--tls-auth-clients", "no"]),
        };
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log");
        let child = cmd
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false; // exited: the port was taken
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The `--bus` address, password included (the default user's).
    pub fn url(&self) -> String {
        self.url_as("")
    }

    /// The `--bus` address as `user` (`frameloop`: the user allowed only the bus).
    pub fn url_as(&self, user: &str) -> String {
        let scheme = if self.cert.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{user}:s3cret%20pass@localhost:{}", self.port)
    }

    /// Kills Redis: every server loses its bus.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pauses Redis (SIGSTOP: its connections stay open, nothing is answered),
    /// or lets it go on (SIGCONT).
    pub fn pause(&self, on: bool) {
        if let Some(child) = &self.child {
            let signal = if on { "-STOP" } else { "-CONT" };
            let pid = child.id().to_string();
            let done = Command::new("kill").args([signal, &pid]).status();
            assert!(done.is_ok_and(|s| s.success()), "kill {signal} {pid}");
        }
    }

    /// Starts Redis again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.run(),
            "redis-server did not start again:\n{}",
            self.log()
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const PASSWORD: &str = "s3cret pass";
