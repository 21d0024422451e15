//! A redis-server for the bus tests (contract section 12), on a free loopback
//! port with a password, stopped when dropped. `.ci/run` installs Redis;
//! without it a test says so and passes, except under `CI=true`.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "s3cret pass";

pub struct Redis {
    bin: &'static str,
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// A new Redis, or `None` when none is installed (see [`installed`]).
    pub fn start() -> Option<Redis> {
        let bin = super::installed(
            &["redis-server", "/usr/bin/redis-server"],
            "--version",
            "redis-server",
        )?;
        let mut redis = Redis {
            bin,
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("tempdir"),
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
        let child = Command::new(self.bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::fs::File::create(self.dir.path().join("redis.log")).expect("log"))
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

    /// The `--bus` address, password included.
    pub fn url(&self) -> String {
        format!("redis://:s3cret%20pass@127.0.0.1:{}", self.port)
    }

    /// Kills Redis: every server loses its bus.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
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
