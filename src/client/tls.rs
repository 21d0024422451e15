//! The client's side of TLS (contract section 11): the server verified against a
//! CA file (by default the data dir's self-signed certificate) or the system's
//! roots, and a blocking TLS stream that a reader thread and a writer share.

use crate::tls::{plaintext, tls_failure};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The CA file used when none is given: the default data dir's certificate.
pub const DEFAULT_CA: &str = "./frameloop-data/tls/cert.pem";

/// How the client checks the server's certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM certificates to trust (`--tls-ca`); `None`: `DEFAULT_CA` when it
    /// exists, else the system's roots.
    pub ca: Option<PathBuf>,
}

impl TlsOptions {
    /// The trusted roots, or why there are none.
    fn roots(&self) -> io::Result<RootCertStore> {
        let file = match &self.ca {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(DEFAULT_CA)).filter(|p| p.exists()),
        };
        roots_from(file, "--tls-ca")
    }

    /// The TLS client settings: TLS 1.3 and 1.2, these roots.
    pub fn client_config(&self) -> io::Result<Arc<ClientConfig>> {
        client_config(self.roots()?)
    }
}

/// The certificates in `file`, or (`None`) the system's roots; `flag` names
/// the file in the error when there are none.
fn roots_from(file: Option<PathBuf>, flag: &str) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match file {
        Some(path) => {
            for cert in read_certs(&path)? {
                roots.add(cert).map_err(|e| bad_ca(&path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no CA certificate to verify the server with (give {flag} FILE)"),
        ));
    }
    Ok(roots)
}

/// TLS client settings (TLS 1.3 and 1.2) trusting `roots`.
fn client_config(roots: RootCertStore) -> io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS client settings trusting the certificates in `ca`, or (`None`) the
/// system's roots: for a peer that is not a frameloop server (the bus's Redis).
pub fn client_config_from(ca: Option<PathBuf>) -> io::Result<Arc<ClientConfig>> {
    client_config(roots_from(ca, "--bus-ca")?)
}

impl TlsOptions {
    /// Connects TLS over `sock` to `addr` and completes the handshake.
    pub fn connect(&self, mut sock: TcpStream, addr: SocketAddr) -> io::Result<TlsStream> {
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls =
            ClientConnection::new(self.client_config()?, name).map_err(io::Error::other)?;
        handshake(&mut tls, &mut sock)?;
        let leaf = tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| io::Error::other("the server sent no certificate"))?;
        let binding = Sha256::digest(leaf.as_ref()).into();
        Ok(TlsStream {
            shared: Arc::new(Shared {
                tls: Mutex::new(Session {
                    tls,
                    pending: Vec::new(),
                }),
                sock,
            }),
            binding,
        })
    }
}

/// Completes a client's handshake over a blocking socket; a certificate
/// that does not verify is `PermissionDenied`, with the reason.
pub fn handshake(tls: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.is_handshaking() {
        tls.complete_io(sock).map_err(|e| {
            let tls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            match tls_error {
                Some(rustls::Error::InvalidCertificate(_)) => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the server's certificate does not verify: {}", inner(&e)),
                ),
                Some(_) => io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the TLS handshake failed (is this a TLS port?): {}",
                        inner(&e)
                    ),
                ),
                None => e,
            }
        })?;
    }
    Ok(())
}

fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| bad_ca(path, e))
}

fn bad_ca(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("cannot read CA certificates from {}: {e}", path.display()),
    )
}

/// The rustls error inside an I/O error, as one line.
fn inner(e: &io::Error) -> String {
    e.get_ref().map_or_else(|| e.to_string(), |i| i.to_string())
}

/// A TLS connection both halves of the client use: the reader thread reads the
/// socket without holding the lock (so a blocked read never stalls a write),
/// then takes it to decrypt; the writer takes it to encrypt and send.
#[derive(Debug, Clone)]
pub struct TlsStream {
    shared: Arc<Shared>,
    /// `tls-server-end-point`: SHA-256 of the server's certificate (section 3).
    pub binding: [u8; 32],
}

#[derive(Debug)]
struct Shared {
    tls: Mutex<Session>,
    sock: TcpStream,
}

#[derive(Debug)]
struct Session {
    tls: ClientConnection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    pending: Vec<u8>,
}

impl TlsStream {
    pub fn socket(&self) -> &TcpStream {
        &self.shared.sock
    }

    /// The socket and the TLS session, for a caller that takes the connection
    /// over (the load tool). Fails while another handle shares them, or when
    /// the server sent more than was read.
    pub fn into_parts(self) -> io::Result<(TcpStream, ClientConnection)> {
        let shared = Arc::try_unwrap(self.shared)
            .map_err(|_| io::Error::other("the TLS session is still shared"))?;
        let session = shared
            .tls
            .into_inner()
            .map_err(|_| io::Error::other("TLS state poisoned"))?;
        if !session.pending.is_empty() {
            return Err(io::Error::other("unread TLS records after the handshake"));
        }
        Ok((shared.sock, session.tls))
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Session>> {
        self.shared
            .tls
            .lock()
            .map_err(|_| io::Error::other("TLS state poisoned"))
    }

    /// Sends what rustls holds for the socket (blocking).
    fn flush_locked(session: &mut Session, mut sock: &TcpStream) -> io::Result<()> {
        while session.tls.wants_write() {
            session.tls.write_tls(&mut sock)?;
        }
        Ok(())
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut session = self.lock()?;
                loop {
                    if let Some(answer) = plaintext(session.tls.reader().read(buf)) {
                        return answer;
                    }
                    if session.pending.is_empty() {
                        break;
                    }
                    let Session { tls, pending } = &mut *session;
                    let took = tls.read_tls(&mut pending.as_slice())?;
                    pending.drain(..took);
                    tls.process_new_packets().map_err(tls_failure)?;
                    Self::flush_locked(&mut session, &self.shared.sock)?;
                }
            }
            // The socket, without the lock.
            let mut raw = [0u8; 16 * 1024];
            let n = (&self.shared.sock).read(&mut raw)?;
            let mut session = self.lock()?;
            if n == 0 {
                // The end: rustls tells a close_notify from a cut.
                session.tls.read_tls(&mut io::empty())?;
                session.tls.process_new_packets().map_err(tls_failure)?;
                return plaintext(session.tls.reader().read(buf)).unwrap_or(Ok(0));
            }
            session
                .pending
                .extend_from_slice(raw.get(..n).unwrap_or_default());
        }
    }
}

impl Write for TlsStream {
    /// As much as rustls takes with its buffer emptied first (its limit bounds
    /// what one write encrypts), sent before returning.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut session = self.lock()?;
        Self::flush_locked(&mut session, &self.shared.sock)?;
        let n = session.tls.writer().write(buf)?;
        Self::flush_locked(&mut session, &self.shared.sock)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut session = self.lock()?;
        Self::flush_locked(&mut session, &self.shared.sock)
    }
}
