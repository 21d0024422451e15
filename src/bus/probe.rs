//! The bus checked once at start, blocking (the loop is not running yet): a
//! server whose Redis is unreachable, refuses its password, or (`rediss://`)
//! shows a certificate that does not verify, does not start. Each worker's
//! first connections are made the same way, before its loop serves anyone.

use super::{Line, Node, ORIGIN_LEN, Url};
use crate::client::tls::{client_config_from, handshake};
use crate::proto::resp::{self, Value};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the check waits for Redis, each step.
const PATIENCE: Duration = Duration::from_secs(3);

/// Where every worker's bus connections go, as the check at start found it.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    /// The address that answered (a name is resolved once, at start).
    pub addr: SocketAddr,
    /// With `rediss://`: the TLS settings, and the name Redis's certificate
    /// must carry (the URL's host).
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// Connects to Redis and says hello as a worker will. `ca`: the certificates
/// that verify Redis with `rediss://` (`None`: the system's roots).
pub fn probe(url: &Url, ca: Option<PathBuf>) -> Result<Target, String> {
    let fail = |why: String| format!("cannot reach the bus at {url}: {why}");
    let tls = match url.tls {
        false => None,
        true => {
            let config = client_config_from(ca).map_err(|e| fail(e.to_string()))?;
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| fail(format!("{e}: {}", url.host)))?;
            Some((config, name))
        }
    };
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?;
    let mut target = Target {
        url: url.clone(),
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        tls,
    };
    let mut last = "no address".to_string();
    for addr in addrs {
        target.addr = addr;
        match greet(&target) {
            Ok(_) => return Ok(target),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

/// A connection to Redis that has said hello and been answered (blocking),
/// with its TLS session for `rediss://`.
pub fn greet(target: &Target) -> Result<(TcpStream, Option<ClientConnection>), String> {
    let mut sock = TcpStream::connect_timeout(&target.addr, PATIENCE).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(PATIENCE))
        .and_then(|()| sock.set_write_timeout(Some(PATIENCE)))
        .map_err(|e| e.to_string())?;
    match &target.tls {
        None => {
            talk(&target.url, &mut sock)?;
            Ok((sock, None))
        }
        Some((config, name)) => {
            let mut tls = ClientConnection::new(Arc::clone(config), name.clone())
                .map_err(|e| e.to_string())?;
            handshake(&mut tls, &mut sock).map_err(said)?;
            let mut stream = rustls::StreamOwned::new(tls, sock);
            talk(&target.url, &mut stream)?;
            Ok((stream.sock, Some(stream.conn)))
        }
    }
}

/// Says hello and reads the answer.
fn talk(url: &Url, stream: &mut impl ReadWrite) -> Result<(), String> {
    let mut node = Node::new(url, [0; ORIGIN_LEN], 0);
    node.restart();
    stream
        .write_all(node.output(Line::Sub))
        .and_then(|()| stream.flush())
        .map_err(said)?;
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match resp::decode(&input, node.bounds).map_err(|e| e.0.to_string())? {
            Some((Value::Simple(_), _)) => return Ok(()),
            Some((Value::Error(e), _)) => return Err(format!("Redis said {e:?}")),
            Some(_) => return Err("an unexpected reply to AUTH or PING".into()),
            None => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("Redis closed the connection".into()),
            Ok(n) => input.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) => return Err(said(e)),
        }
    }
}

/// An error as one line; a read that timed out says so.
fn said(e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no answer within {} s", PATIENCE.as_secs())
        }
        _ => e.to_string(),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
