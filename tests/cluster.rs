//! `scripts/cluster.sh` driven from outside (contract section 12): Redis,
//! three servers on the bus sharing a data dir, and HAProxy in front. Chat
//! spans the servers through the proxy; a server killed midway loses its
//! clients, which reconnect through the proxy to the others and chat on;
//! load through the proxy gets every reply right; `cluster.sh stop` ends
//! exactly what the start started. Needs haproxy and redis-server.

mod common;

use frameloop::auth::Users;
use frameloop::client::{Client, Credentials, Frame, Stream};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh");

/// A cluster started by the script, stopped by it when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    proxy: String,
    servers: Vec<String>,
}

impl Cluster {
    fn script(&self, arg: &str) -> std::process::Output {
        Command::new("bash")
            .arg(SCRIPT)
            .arg(arg)
            .env("CLUSTER_DIR", self.dir.path())
            .output()
            .expect("run cluster.sh")
    }

    /// The processes the script started: (name, pid).
    fn pids(&self) -> Vec<(String, u32)> {
        std::fs::read_to_string(self.dir.path().join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut words = l.split(' ');
                let (name, pid) = (words.next()?, words.next()?);
                Some((name.to_string(), pid.parse().ok()?))
            })
            .collect()
    }

    fn users(&self) -> PathBuf {
        self.dir.path().join("data/users")
    }

    fn try_login(&self) -> std::io::Result<Client> {
        let key = *Users::load(&self.users()).unwrap().key("guest").unwrap();
        let creds = Credentials::Key {
            user: "guest".into(),
            key,
        };
        let mut c = Client::connect(self.proxy.as_str(), &creds)?;
        c.set_timeout(Some(common::TIMEOUT))?;
        Ok(c)
    }

    fn login(&self) -> Client {
        self.try_login().expect("log in through haproxy")
    }

    /// The server (0-2) that holds `c`: the one whose log names its address.
    fn server_of(&self, c: &Client) -> usize {
        let Stream::Tcp(s) = c.stream() else {
            panic!("TCP");
        };
        let needle = format!("open {} via", s.local_addr().unwrap());
        let start = Instant::now();
        loop {
            for i in 0..3 {
                let log =
                    std::fs::read_to_string(self.dir.path().join(format!("server{}.log", i + 1)));
                if log.unwrap_or_default().contains(&needle) {
                    return i;
                }
            }
            assert!(
                start.elapsed() < common::TIMEOUT,
                "no server logged {needle}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

fn start() -> Option<Cluster> {
    common::installed(&["haproxy", "/usr/sbin/haproxy"], "-v", "haproxy")?;
    common::installed(
        &["redis-server", "/usr/bin/redis-server"],
        "--version",
        "redis-server",
    )?;
    let ports: Vec<u16> = (0..5).map(|_| common::free_port()).collect();
    let servers: Vec<String> = ports[1..4].iter().map(|p| p.to_string()).collect();
    let cluster = Cluster {
        dir: tempfile::tempdir().unwrap(),
        proxy: format!("127.0.0.1:{}", ports[0]),
        servers: servers.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
    };
    let out = Command::new("bash")
        .arg(SCRIPT)
        .env("CLUSTER_DIR", cluster.dir.path())
        .env("FRAMELOOP", env!("CARGO_BIN_EXE_frameloop"))
        .env("HAPROXY_PORT", ports[0].to_string())
        .env("SERVER_PORTS", servers.join(" "))
        .env("REDIS_PORT", ports[4].to_string())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!(
            "connect:  frameloop client --addr {}",
            cluster.proxy
        )),
        "{said}"
    );
    Some(cluster)
}

fn ok(c: &mut Client, op: &str, fields: Value, body: &[u8]) -> Frame {
    let reply = c.request(op, fields, body).expect("reply");
    assert_eq!(reply.status(), 200, "{op}: {reply:?}");
    reply
}

/// Clients through the proxy until every server holds `per` of them.
fn spread(cluster: &Cluster, per: usize) -> Vec<(usize, Client)> {
    let mut all: Vec<(usize, Client)> = Vec::new();
    for _ in 0..30 {
        if (0..3).all(|s| all.iter().filter(|(on, _)| *on == s).count() >= per) {
            return all;
        }
        let c = cluster.login();
        all.push((cluster.server_of(&c), c));
    }
    panic!("least connections never spread the clients over three servers");
}

/// Every client in the room hears `body` from `from` once.
fn say_and_hear(all: &mut [(usize, Client)], from: usize, body: &[u8]) {
    ok(&mut all[from].1, "say", json!({"room": "hall"}), body);
    for (i, (_, c)) in all.iter_mut().enumerate() {
        if i == from {
            continue;
        }
        let msg = c.next_push().expect("a msg");
        assert_eq!(
            (msg.str("op"), msg.body.as_slice()),
            (Some("msg"), body),
            "client {i}"
        );
    }
}

fn gone(pid: u32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Gone, or a zombie its parent (the script's shell, long ended) left.
    state.is_empty()
        || state
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
}

#[test]
fn a_cluster_behind_haproxy_chats_survives_a_server_and_stops_cleanly() {
    let Some(cluster) = start() else { return };
    assert_eq!(cluster.servers.len(), 3);
    let mut all = spread(&cluster, 1);
    for (_, c) in all.iter_mut() {
        ok(c, "join", json!({"room": "hall"}), b"");
    }
    // Each hears of every later joiner.
    let n = all.len();
    for (i, (_, c)) in all.iter_mut().enumerate() {
        for _ in i + 1..n {
            assert_eq!(c.next_push().unwrap().str("op"), Some("joined"));
        }
    }
    say_and_hear(&mut all, 0, b"from the first");
    say_and_hear(&mut all, n - 1, b"from the last");

    // Server 2 is killed midway: its clients lose their connections and come
    // back through the proxy, to the two left.
    let victim = 1;
    let (_, pid) = cluster
        .pids()
        .into_iter()
        .filter(|(name, _)| name == "frameloop")
        .nth(victim)
        .unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let mut kept: Vec<(usize, Client)> = all.into_iter().filter(|(on, _)| *on != victim).collect();
    let lost = n - kept.len();
    assert!(lost >= 1);
    for _ in 0..lost {
        let start = Instant::now();
        let c = loop {
            // Until the checks mark the dead server down, the proxy may try it.
            if let Ok(c) = cluster.try_login() {
                break c;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "no way back in");
            std::thread::sleep(Duration::from_millis(100));
        };
        let on = cluster.server_of(&c);
        assert_ne!(on, victim, "the dead server took a client");
        kept.push((on, c));
    }
    let newcomers = kept.len() - lost..kept.len();
    for i in newcomers.clone() {
        ok(&mut kept[i].1, "join", json!({"room": "hall"}), b"");
        for (j, (_, c)) in kept.iter_mut().enumerate() {
            if j < i {
                assert_eq!(c.next_push().unwrap().str("op"), Some("joined"));
            }
        }
    }
    say_and_hear(&mut kept, newcomers.start, b"back in");
    say_and_hear(&mut kept, 0, b"welcome back");

    // Load through the proxy, over the two servers left: every reply right.
    common::load_without_errors(&cluster.proxy, &cluster.users());

    // Stop: everything the start started is gone, and nothing else was touched.
    drop(kept);
    let pids = cluster.pids();
    assert_eq!(pids.len(), 5, "{pids:?}");
    let out = cluster.script("stop");
    assert!(out.status.success(), "{out:?}");
    for (name, pid) in &pids {
        let start = Instant::now();
        while !gone(*pid) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{name} {pid} still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(!Path::new(&cluster.dir.path().join("pids")).exists());
}
