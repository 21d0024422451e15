//! The bus checked once at start, blocking (the loop is not running yet): a
//! server whose Redis is unreachable, or refuses its password, does not start.

use super::{Node, Url};
use crate::proto::resp::{self, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long the check waits for Redis, each step.
const PATIENCE: Duration = Duration::from_secs(3);

/// Connects to Redis and says hello as a worker will; returns the address
/// that answered, which the workers connect to from then on.
pub fn probe(url: &Url) -> Result<SocketAddr, String> {
    let fail = |why: String| format!("cannot reach the bus at {url}: {why}");
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?;
    let mut last = "no address".to_string();
    for addr in addrs {
        match hello(url, addr) {
            Ok(()) => return Ok(addr),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

fn hello(url: &Url, addr: SocketAddr) -> Result<(), String> {
    let mut sock = TcpStream::connect_timeout(&addr, PATIENCE).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(PATIENCE))
        .and_then(|()| sock.set_write_timeout(Some(PATIENCE)))
        .map_err(|e| e.to_string())?;
    let mut node = Node::new(url, [0; super::ORIGIN_LEN], 0);
    node.restart();
    sock.write_all(node.output(super::Line::Sub))
        .map_err(|e| e.to_string())?;
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match resp::decode(&input, node.bounds).map_err(|e| e.0.to_string())? {
            Some((Value::Simple(_), _)) => return Ok(()),
            Some((Value::Error(e), _)) => return Err(format!("Redis said {e:?}")),
            Some(_) => return Err("an unexpected reply to AUTH or PING".into()),
            None => {}
        }
        match sock.read(&mut chunk) {
            Ok(0) => return Err("Redis closed the connection".into()),
            Ok(n) => input.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) => return Err(e.to_string()),
        }
    }
}
