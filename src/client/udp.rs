//! The UDP client (contract section 8): one request per datagram, matched to
//! its reply by id, sent again when no reply comes in time (datagrams get lost).

use super::{Frame, protocol_error, read_frame};
use crate::proto::encode_frame;
use serde_json::Value;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Sends stateless requests over UDP. No handshake: UDP has no authentication.
pub struct UdpClient {
    socket: UdpSocket,
    next_id: u64,
    /// How long one try waits for its reply.
    pub timeout: Duration,
    /// Tries per request, the first included.
    pub tries: u32,
    buf: Vec<u8>,
}

impl UdpClient {
    /// A socket on an ephemeral port of the matching family, connected to
    /// `server` (so datagrams from anyone else are filtered out by the kernel).
    pub fn connect(server: SocketAddr) -> io::Result<UdpClient> {
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(server)?;
        Ok(UdpClient {
            socket,
            next_id: 1,
            timeout: Duration::from_millis(500),
            tries: 4,
            buf: vec![0; 65_536],
        })
    }

    /// Sends a request and waits for the reply carrying its id, sending the same
    /// datagram again after each `timeout` (the stateless ops are safe to repeat).
    /// A reply to an earlier request (late, or duplicated) is skipped.
    pub fn request(&mut self, op: &str, fields: Value, body: &[u8]) -> io::Result<Frame> {
        let id = self.next_id;
        self.next_id += 1;
        let head = serde_json::to_vec(&super::request_header(op, id, fields, body))?;
        let datagram = encode_frame(&head, body);
        for _ in 0..self.tries.max(1) {
            self.socket.send(&datagram)?;
            if let Some(reply) = self.await_reply(id)? {
                return Ok(reply);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no reply after {} tries of {:?}",
                self.tries.max(1),
                self.timeout
            ),
        ))
    }

    /// The reply with `id` within one timeout, or `None`.
    fn await_reply(&mut self, id: u64) -> io::Result<Option<Frame>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            let n = match self.socket.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Nothing listens there (an ICMP port unreachable came back).
                Err(e) => return Err(e),
            };
            let mut datagram = self.buf.get(..n).unwrap_or_default();
            let frame = read_frame(&mut datagram)?;
            if !datagram.is_empty() {
                return Err(protocol_error("reply datagram longer than its frame"));
            }
            // A reply without id answers a request the server could not read the id of.
            if frame.id() == Some(id) || frame.id().is_none() {
                return Ok(Some(frame));
            }
        }
    }
}
