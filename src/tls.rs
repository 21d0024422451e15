//! TLS for the server (contract section 11): its certificate (given, or
//! self-signed once into `<data-dir>/tls/`), and a TLS stream: rustls's sans-IO
//! connection between a non-blocking TCP socket and the connection machine,
//! which sees plaintext as from any other stream (the load tool's client side
//! uses the same stream).

use crate::net::IoClass;
use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{Connection, ServerConfig, ServerConnection};
use sha2::{Digest, Sha256};
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Ciphertext and plaintext rustls holds for one connection before it refuses
/// more: what is not taken stays in the connection's `OutBuf`, where the
/// output limit counts it.
const TLS_BUFFER: usize = 64 * 1024;
/// A file body read for encryption at a time: one TLS record's worth.
const FILE_READ: usize = 16 * 1024;

/// What the TLS listener serves with.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
    /// `tls-server-end-point` channel binding (contract section 3): SHA-256 of
    /// the leaf certificate's DER bytes.
    pub binding: [u8; 32],
}

impl Tls {
    /// Loads `cert` (a PEM chain, leaf first) and `key`; without them, the data
    /// dir's pair, made on first start (self-signed for localhost, 127.0.0.1 and ::1).
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        data_dir: &Path,
    ) -> Result<(Tls, PathBuf), String> {
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
            (None, None) => self_signed(&data_dir.join("tls"))?,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
        let Some(leaf) = chain.first() else {
            return Err(format!("no certificate in {}", cert.display()));
        };
        let binding: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        let key = PrivateKeyDer::from_pem_file(&key)
            .map_err(|e| format!("cannot read the key from {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // TLS 1.3, and 1.2 with rustls's suites, all of them ECDHE (forward secret).
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("certificate and key do not make a TLS setup: {e}"))?;
        Ok((
            Tls {
                config: Arc::new(config),
                binding,
            },
            cert,
        ))
    }

    /// The certificate's SHA-256 fingerprint as people compare them (AB:CD:...).
    pub fn fingerprint(&self) -> String {
        let hex: Vec<String> = self.binding.iter().map(|b| format!("{b:02X}")).collect();
        hex.join(":")
    }

    /// A server side for a connection just accepted (a socket; in the fuzz
    /// harness, memory standing in for one).
    pub fn accept<S: Read + Write + ShutdownWrite>(&self, sock: S) -> io::Result<TlsStream<S>> {
        let tls = ServerConnection::new(Arc::clone(&self.config)).map_err(io::Error::other)?;
        Ok(TlsStream::new(sock, tls.into()))
    }
}

/// `<dir>/cert.pem` and `<dir>/key.pem`, created when absent.
fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let made = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let write = |path: &Path, text: &str, mode: u32| {
        // A fresh file, so the mode holds (an old one keeps whatever it had).
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(format!("cannot replace {}: {e}", path.display()));
            }
            _ => {}
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // The key first: a certificate without its key would be kept next start.
    write(&key, &made.signing_key.serialize_pem(), 0o600)?;
    write(&cert, &made.cert.pem(), 0o644)?;
    log::info!("made a self-signed certificate: {}", cert.display());
    Ok((cert, key))
}

/// What TLS needs of its socket besides reading and writing: closing our side.
pub trait ShutdownWrite {
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl ShutdownWrite for TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// A TLS connection: plaintext in and out through `Read` and `Write`, as the
/// loop reads and writes any stream. Non-blocking like its socket: `WouldBlock`
/// means what it means for the socket (see each method).
pub struct TlsStream<S = TcpStream> {
    pub(crate) sock: S,
    tls: Connection,
    /// File bodies pass through here on their way into TLS (`sendfile` cannot
    /// encrypt); allocated at the first file sent, freed when its body is out.
    file_buf: Vec<u8>,
    /// The connection asked to end our side: TCP's FIN goes once close_notify
    /// and every record before it are out.
    fin_pending: bool,
}

impl<S: std::fmt::Debug> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("handshaking", &self.tls.is_handshaking())
            .finish()
    }
}

impl<S: Read + Write + ShutdownWrite> TlsStream<S> {
    /// A TLS stream over a connected non-blocking socket (a server's side just
    /// accepted, or a client's after its handshake).
    pub fn new(sock: S, mut tls: Connection) -> TlsStream<S> {
        tls.set_buffer_limit(Some(TLS_BUFFER));
        TlsStream {
            sock,
            tls,
            file_buf: Vec::new(),
            fin_pending: false,
        }
    }

    /// Output rustls still holds: records the socket did not take, or, during
    /// the handshake, plaintext that goes out once it completes. The
    /// connection's own output is not done until this is false.
    pub fn holds_output(&self) -> bool {
        self.tls.wants_write() || self.tls.is_handshaking() || self.fin_pending
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Moves the handshake on with what the socket holds, whatever the
    /// connection's state (a connection refused with 503, or flushing, reads
    /// no requests, but its reply waits for the handshake): `Ok(true)` while
    /// the socket may hold more, `Ok(false)` at `WouldBlock`.
    pub fn handshake_step(&mut self) -> io::Result<bool> {
        let got = match self.tls.read_tls(&mut self.sock) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        let state = self.tls.process_new_packets();
        let flushed = self.flush_tls();
        state.map_err(tls_failure)?;
        flushed?;
        Ok(got > 0)
    }

    /// Bytes of memory its TLS state holds, roughly (what `--max-memory`
    /// adds for it): rustls's receive buffer, the records waiting for the
    /// socket (bounded), the file buffer.
    pub fn held(&self) -> usize {
        let sending = if self.tls.wants_write() {
            TLS_BUFFER
        } else {
            0
        };
        FILE_READ + sending + self.file_buf.capacity()
    }

    /// Ciphertext is waiting for the socket (the loop must ask for WRITABLE
    /// even when the connection has nothing more to say).
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Sends what rustls holds for the socket, until it is all out or the
    /// socket is full (`Ok` either way; `wants_write` tells which); then the
    /// FIN, if one is due.
    pub fn flush_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) => match crate::net::classify(&e) {
                    IoClass::WouldBlock => return Ok(()),
                    IoClass::Retry => {}
                    IoClass::Fatal => return Err(e),
                },
            }
        }
        if self.fin_pending {
            self.fin_pending = false;
            self.sock.shutdown_write()?;
        }
        Ok(())
    }

    /// Ends our side: close_notify after what is queued, then (from
    /// `flush_tls`, once all of it is out) TCP's FIN.
    pub fn close(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.fin_pending = true;
        self.flush_tls()
    }

    /// A last close_notify for a connection being dropped, if the socket takes it.
    pub fn close_notify(&mut self) {
        if !self.fin_pending {
            self.tls.send_close_notify();
        }
        let _ = self.flush_tls();
    }

    /// The socket (or what stands in for it).
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.sock
    }
}

/// The handshake failed or a record was bad: a TLS error, counted apart
/// (`tls_failures`) from a peer that just went away.
pub fn is_tls_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// A rustls error as the I/O error a stream reports (see [`is_tls_error`]).
pub fn tls_failure(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// What a read of rustls's plaintext means for a stream (server and client
/// alike): `Some` answers the reader (bytes; or the end, at close_notify or
/// at the peer's FIN without one, since what came before it was
/// authenticated and nothing more will come), `None` that rustls holds no
/// plaintext now.
pub fn plaintext(read: io::Result<usize>) -> Option<io::Result<usize>> {
    match read {
        Ok(n) => Some(Ok(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(Ok(0)),
        Err(e) => Some(Err(e)),
    }
}

impl<S: Read + Write + ShutdownWrite> Read for TlsStream<S> {
    /// Plaintext, as much as is decrypted; `Ok(0)` at the end of the stream
    /// (close_notify, or the peer's FIN without one); `WouldBlock` once the
    /// socket is empty and rustls holds no plaintext, so reading until
    /// `WouldBlock` still drains everything (edge-triggered readiness).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(answer) = plaintext(self.tls.reader().read(buf)) {
                return answer;
            }
            let got = self.tls.read_tls(&mut self.sock)?;
            let state = self.tls.process_new_packets();
            // Handshake messages, or the alert that tells the peer why we stop:
            // sent now if the socket takes them, else when it is writable.
            let flushed = self.flush_tls();
            let state = state.map_err(tls_failure)?;
            flushed?;
            if got == 0 && state.plaintext_bytes_to_read() == 0 {
                return Ok(0);
            }
        }
    }
}

impl<S: Read + Write + ShutdownWrite> Write for TlsStream<S> {
    /// Takes plaintext as far as rustls has room, after sending what it held.
    /// `WouldBlock` when the socket is full and rustls's buffer too.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.flush_tls()?;
        // A full socket is not tried twice in one write.
        let socket_full = self.tls.wants_write();
        let n = self.tls.writer().write(buf)?;
        if !socket_full {
            self.flush_tls()?;
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

impl<S: Read + Write + ShutdownWrite> crate::outbuf::Sink for TlsStream<S> {
    /// A file body goes through user space here: read, then encrypted by `write`.
    fn send_file(&mut self, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
        self.flush_tls()?;
        if self.tls.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.file_buf.is_empty() {
            self.file_buf = vec![0; FILE_READ];
        }
        let want = len.min(FILE_READ);
        let n = file.read_at(self.file_buf.get_mut(..want).unwrap_or_default(), offset)?;
        if n == 0 && len > 0 {
            return Err(io::Error::other("file truncated while being sent"));
        }
        let n = self
            .tls
            .writer()
            .write(self.file_buf.get(..n).unwrap_or_default())?;
        self.flush_tls()?;
        if n == 0 && len > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if n == len {
            // The body is out: the buffer is not kept for the connection's life.
            self.file_buf = Vec::new();
        }
        Ok(n)
    }
}
