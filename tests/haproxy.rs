//! HAProxy in front (contract section 12): `mode tcp`, `balance leastconn`,
//! `send-proxy-v2` to two servers with `--proxy-protocol`, and health checks
//! that send the PROXY header and expect the server's hello. Needs `haproxy`:
//! `.ci/run` installs it; without it the test says so and passes, except
//! under `CI=true`, where it fails.

mod common;

use common::Server;
use frameloop::client::{Client, Credentials};
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The haproxy binary, or `None` (and why) when the machine has none.
fn haproxy() -> Option<&'static str> {
    common::installed(&["haproxy", "/usr/sbin/haproxy"], "-v", "haproxy")
}

/// A running haproxy, stopped when dropped.
struct Proxy {
    child: Child,
    addr: String,
    stats: std::path::PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HAProxy in front of `servers`, as `scripts/cluster.sh` configures it.
fn start_proxy(bin: &str, dir: &std::path::Path, servers: &[&Server]) -> Proxy {
    let port = common::free_port();
    let stats = dir.join("haproxy.sock");
    // The hello's `"op":"hello"`, in hex: any server that answers it is up.
    let hello: String = br#""op":"hello""#.iter().map(|b| format!("{b:02x}")).collect();
    let mut cfg = format!(
        "global\n    maxconn 4096\n    stats socket {}\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    balance leastconn\n    option tcp-check\n    tcp-check expect binary {hello}\n",
        stats.display()
    );
    for (i, s) in servers.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{i} {} send-proxy-v2 check check-send-proxy inter 200ms fall 2 rise 1\n",
            s.addr
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new(bin)
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
        .spawn()
        .unwrap();
    Proxy {
        child,
        addr: format!("127.0.0.1:{port}"),
        stats,
    }
}

/// Each server's status as HAProxy's health checks see it.
fn statuses(proxy: &Proxy) -> Vec<String> {
    let Ok(mut s) = UnixStream::connect(&proxy.stats) else {
        return Vec::new();
    };
    let _ = s.write_all(b"show stat\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .filter(|l| l.starts_with("be,s"))
        .filter_map(|l| l.split(',').nth(17).map(str::to_string))
        .collect()
}

fn wait_until(proxy: &Proxy, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        let log = proxy.stats.with_file_name("haproxy.log");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}; haproxy said: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn haproxy_in_front_checks_balances_and_passes_the_client_address() {
    let Some(bin) = haproxy() else {
        return;
    };
    let a = Server::start(&["--proxy-protocol"]);
    let users = a.dir.path().join("users");
    let users_arg = users.to_str().unwrap().to_string();
    let b = Server::start(&["--proxy-protocol", "--users", &users_arg]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(bin, dir.path(), &[&a, &b]);
    // The health checks (a PROXY header, then the hello expected) find both up.
    wait_until(&proxy, "both servers up", || {
        statuses(&proxy) == ["UP", "UP"]
    });
    // Load through the proxy: every reply right.
    common::load_without_errors(&proxy.addr, &users);
    // Least connections spread them over both; each logged the client's
    // address, not HAProxy's (a health check's LOCAL header names no client:
    // there the two are the same).
    for s in [&a, &b] {
        let log = s.log();
        let clients = log
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find("open ")? + 5..];
                let mut words = rest.split(' ');
                let (client, via, proxy) = (words.next()?, words.next()?, words.next()?);
                (via == "via" && client != proxy).then_some(())
            })
            .count();
        assert!(
            clients >= 5,
            "load connections through the proxy: {clients}\n{log}"
        );
    }
    // A client through the proxy logs in and is served.
    let creds = Credentials::Key {
        user: "guest".into(),
        key: a.key(),
    };
    let mut c = Client::connect(proxy.addr.as_str(), &creds).expect("through haproxy");
    let r = c.request("echo", json!({}), b"through").unwrap();
    assert_eq!(r.body, b"through");
    // One server goes: the checks mark it down, and new clients reach the other.
    drop(a);
    wait_until(&proxy, "the stopped server down", || {
        statuses(&proxy)
            .first()
            .is_some_and(|s| s.starts_with("DOWN"))
    });
    for _ in 0..5 {
        let mut c = Client::connect(proxy.addr.as_str(), &creds).expect("to the one left");
        assert_eq!(c.request("ping", json!({}), b"").unwrap().status(), 200);
    }
}
