//! TLS (contract section 11) and the channel-bound login (section 3), from
//! outside: the real server on an ephemeral TLS port, real TLS clients.

mod common;

use common::{Server, TIMEOUT};
use frameloop::auth::{self, Login};
use frameloop::client::tls::TlsOptions;
use frameloop::client::{Client, Credentials, Frame, read_frame};
use frameloop::proto::encode_frame;
use rustls::ClientConnection;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn start(args: &[&str]) -> Server {
    let mut all = vec!["--tls-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Server::start(&all)
}

fn cert_path(server: &Server) -> PathBuf {
    server.dir.path().join("tls/cert.pem")
}

fn creds(server: &Server) -> Credentials {
    Credentials::Key {
        user: "guest".into(),
        key: server.key(),
    }
}

fn tls_client(server: &Server) -> Client {
    let options = TlsOptions {
        ca: Some(cert_path(server)),
    };
    Client::connect_tls(server.tls.expect("tls addr"), &creds(server), &options)
        .expect("TLS connect and login")
}

/// A TLS connection driven by hand: every ciphertext byte we send goes out in
/// its own write (TCP_NODELAY), so the server sees records cut anywhere.
struct ByteWise {
    sock: TcpStream,
    tls: ClientConnection,
}

impl ByteWise {
    fn connect(server: &Server) -> ByteWise {
        let tls = common::tls_session(server);
        let sock = TcpStream::connect(server.tls.unwrap()).unwrap();
        sock.set_nodelay(true).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut me = ByteWise { sock, tls };
        while me.tls.is_handshaking() {
            me.send_pending();
            if me.tls.is_handshaking() && !me.tls.wants_write() {
                me.tls.read_tls(&mut me.sock).unwrap();
                me.tls.process_new_packets().unwrap();
            }
        }
        me
    }

    fn send_pending(&mut self) {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        for b in out {
            self.sock.write_all(&[b]).unwrap();
        }
    }

    fn send(&mut self, header: Value, body: &[u8]) {
        let frame = encode_frame(header.to_string().as_bytes(), body);
        self.tls.writer().write_all(&frame).unwrap();
        self.send_pending();
    }

    fn recv(&mut self) -> Frame {
        read_frame(&mut rustls::Stream::new(&mut self.tls, &mut self.sock)).expect("a frame")
    }

    /// The certificate the server showed: its channel binding.
    fn binding(&self) -> [u8; 32] {
        let leaf = &self.tls.peer_certificates().unwrap()[0];
        Sha256::digest(leaf.as_ref()).into()
    }

    /// Logs in as guest with MACs over `cb`; the reply.
    fn login(&mut self, key: &auth::Key, hello: &Frame, cb: Option<&[u8; 32]>) -> Frame {
        let nonce = auth::hex32(hello.str("nonce").unwrap()).unwrap();
        let cnonce = [7u8; 32];
        let login = Login {
            nonce: &nonce,
            cnonce: &cnonce,
            user: "guest",
            cb,
        };
        let mac = login.client_mac(key);
        self.send(
            json!({"op":"auth","user":"guest","cnonce":hex::encode(cnonce),"mac":hex::encode(mac)}),
            b"",
        );
        self.recv()
    }
}

#[test]
fn login_echo_and_files_over_tls_with_the_certificate_made_at_start() {
    let server = start(&[]);
    // The self-signed pair is in the data dir, the key private; the log names
    // the fingerprint.
    let key_mode = std::fs::metadata(server.dir.path().join("tls/key.pem"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );
    let pem = std::fs::read(cert_path(&server)).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let fingerprint: Vec<String> = Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    server.wait_for("the fingerprint logged", |s| {
        s.log().contains(&fingerprint.join(":"))
    });

    let mut c = tls_client(&server);
    assert_eq!(c.hello.str("cb"), Some("tls-server-end-point"));
    assert_eq!(c.request("echo", Value::Null, b"hi").unwrap().body, b"hi");
    // A file through TLS both ways (no sendfile: read, encrypted, sent).
    let data: Vec<u8> = (0..3_000_000u32).map(|i| ((i * 31) >> 3) as u8).collect();
    let put = c
        .request("put", json!({"path":"/t.bin"}), &data)
        .expect("put");
    assert_eq!(put.status(), 200, "{put:?}");
    let got = c.request("get", json!({"path":"/t.bin"}), b"").unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.body == data, "the file came back different");
    // The plain listener still serves, and its hello carries no binding.
    let plain = server.client();
    assert_eq!(plain.hello.str("cb"), None);
    assert_eq!(server.stats()["tls_failures"], 0);
}

#[test]
fn plain_frames_and_garbage_on_the_tls_port_are_closed_and_counted() {
    let server = start(&[]);
    let tls = server.tls.unwrap();
    let tries: [&[u8]; 2] = [
        &encode_frame(br#"{"op":"ping"}"#, b""),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for bytes in tries {
        let mut s = TcpStream::connect(tls).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(bytes).unwrap();
        // At most an alert, then the end.
        let started = Instant::now();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(started.elapsed() < TIMEOUT, "not closed");
        assert!(got.len() < 64, "{} bytes back", got.len());
    }
    server.wait_for("two TLS failures counted", |s| {
        s.stats()["tls_failures"] == 2
    });
    // The server goes on.
    let mut c = tls_client(&server);
    assert_eq!(c.request("ping", Value::Null, b"").unwrap().status(), 200);
}

#[test]
fn records_cut_into_single_bytes_are_served() {
    let server = start(&[]);
    let mut bw = ByteWise::connect(&server);
    let hello = bw.recv();
    let cb = bw.binding();
    assert_eq!(bw.login(&server.key(), &hello, Some(&cb)).status(), 200);
    let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    bw.send(json!({"op":"echo","id":5,"size":body.len()}), &body);
    let reply = bw.recv();
    assert_eq!((reply.status(), reply.body), (200, body));
}

#[test]
fn a_login_bound_to_another_certificate_or_to_none_is_refused() {
    let server = start(&[]);
    // What a relay in the middle would pass on: MACs over the certificate the
    // client saw (the relay's), or a client that binds nothing.
    for cb in [Some([0xAB; 32]), None] {
        let mut bw = ByteWise::connect(&server);
        let hello = bw.recv();
        let reply = bw.login(&server.key(), &hello, cb.as_ref());
        assert_eq!(reply.status(), 401, "{reply:?}");
    }
    assert_eq!(server.stats()["auth_failures"], 2);
}

/// `frameloop client` run from `dir` (so the default CA path is not there).
fn client_cli(server: &Server, dir: &std::path::Path, tls_args: &[&str]) -> std::process::Output {
    let users = server.dir.path().join("users");
    Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .current_dir(dir)
        .arg("client")
        .arg("--addr")
        .arg(server.tls.unwrap().to_string())
        .arg("--users")
        .arg(&users)
        .args(tls_args)
        .arg("ping")
        .output()
        .unwrap()
}

#[test]
fn the_client_verifies_the_certificate_and_its_host() {
    let server = start(&[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let ca = cert_path(&server);
    let ok = client_cli(
        &server,
        elsewhere.path(),
        &["--tls", "--tls-ca", ca.to_str().unwrap()],
    );
    assert!(ok.status.success(), "{ok:?}");
    // No CA given, none in ./frameloop-data: the system's roots do not know a
    // self-signed certificate.
    let unknown = client_cli(&server, elsewhere.path(), &["--tls"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("does not verify"), "{said}");
    // The plain port is no TLS port, and the client says that, not "certificate".
    let users = server.dir.path().join("users");
    let plain = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .args([
            "client",
            "--tls",
            "--tls-ca",
            ca.to_str().unwrap(),
            "--addr",
        ])
        .arg(server.addr.to_string())
        .arg("--users")
        .arg(&users)
        .arg("ping")
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(2), "{plain:?}");
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(said.contains("TLS handshake failed"), "{said}");

    // A certificate for another host: made for the test, served by a second server.
    let other = rcgen::generate_simple_self_signed(vec!["example.org".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, other.cert.pem()).unwrap();
    std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
    let wrong_host = start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let out = client_cli(
        &wrong_host,
        elsewhere.path(),
        &["--tls", "--tls-ca", cert.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("does not verify"), "{said}");
}

/// `frameloop load --tls` against the server, as JSON.
fn load_tls(server: &Server, args: &[&str]) -> Value {
    let ca = cert_path(server);
    let out = Command::new(env!("CARGO_BIN_EXE_frameloop"))
        .arg("load")
        .args([
            "--addr",
            &server.tls.unwrap().to_string(),
            "--tls",
            "--tls-ca",
        ])
        .arg(&ca)
        .arg("--users")
        .arg(server.dir.path().join("users"))
        .args(["--json", "--warmup", "0"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_thousand_tls_connections_are_served() {
    let server = start(&["--max-conns", "1100"]);
    let report = load_tls(&server, &["--conns", "1000", "--duration", "1"]);
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["requests"].as_u64().unwrap() >= 1000, "{report}");
}

#[test]
fn twenty_thousand_pipelined_requests_under_backpressure() {
    // 20,000 1 KiB echoes in flight on one connection: about 20 MiB of replies
    // against a 64 KiB output limit, so the server stops reading and resumes
    // many times, with TLS records held in rustls in between.
    let server = start(&["--max-outbuf", "65536"]);
    let report = load_tls(
        &server,
        &[
            "--conns",
            "1",
            "--pipeline",
            "20000",
            "--size",
            "1024",
            "--duration",
            "2",
        ],
    );
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["requests"].as_u64().unwrap() >= 20_000, "{report}");
}

#[test]
fn a_shutdown_ends_tls_sessions_with_close_notify() {
    let mut server = start(&[]);
    let mut bw = ByteWise::connect(&server);
    let hello = bw.recv();
    let cb = bw.binding();
    assert_eq!(bw.login(&server.key(), &hello, Some(&cb)).status(), 200);
    // SIGTERM: the bye push, then close_notify (rustls reads that as a clean
    // end, Ok(0); a bare FIN would be UnexpectedEof).
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let bye = bw.recv();
    assert_eq!(bye.op(), Some("bye"), "{bye:?}");
    let mut rest = Vec::new();
    rustls::Stream::new(&mut bw.tls, &mut bw.sock)
        .read_to_end(&mut rest)
        .expect("a clean end (close_notify)");
    assert!(rest.is_empty());
    let _ = server.child.wait();
}

#[test]
fn the_python_client_binds_its_login_to_the_certificate() {
    let server = start(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/client.py");
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new("python3")
            .current_dir(elsewhere.path())
            .arg(script)
            .args([
                "--addr",
                &server.tls.unwrap().to_string(),
                "--tls",
                "--users",
            ])
            .arg(server.dir.path().join("users"))
            .args(extra)
            .output()
            .unwrap()
    };
    let ca = cert_path(&server);
    let ok = run(&["--tls-ca", ca.to_str().unwrap(), "echo", "hi"]);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "hi");
    let unknown = run(&["echo", "hi"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("CERTIFICATE_VERIFY_FAILED"));
}

#[test]
fn the_handshake_and_the_login_count_against_the_auth_timeout() {
    let server = start(&["--auth-timeout", "0.5"]);
    // Silent after connecting: no handshake ever starts.
    let mut silent = TcpStream::connect(server.tls.unwrap()).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Handshaken, greeted, but never logging in: the bye push, then the end.
    let mut idle = ByteWise::connect(&server);
    assert_eq!(idle.recv().op(), Some("hello"));
    let started = Instant::now();
    let bye = idle.recv();
    assert_eq!(bye.op(), Some("bye"), "{bye:?}");
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(started.elapsed() < TIMEOUT, "the silent one was not closed");
}

// What rustls holds for the socket is output too: the tests below leave the
// end of a reply in rustls (the socket full, the connection's own output
// empty) and check it still goes out, before a close, a FIN or a shutdown.

/// A logged-in TLS connection taken over as a plain rustls stream.
fn owned(server: &Server) -> rustls::StreamOwned<ClientConnection, TcpStream> {
    let c = tls_client(server);
    let (sock, tls) = c.into_tls().expect("into_tls");
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    rustls::StreamOwned::new(tls, sock)
}

fn echo_frame(id: u64, size: usize) -> Vec<u8> {
    encode_frame(
        json!({"op":"echo","id":id,"size":size})
            .to_string()
            .as_bytes(),
        &vec![b'x'; size],
    )
}

/// How many bytes of a reply nobody reads the server gets out (kernel buffers
/// and rustls's): replies a little smaller end with their tail in rustls.
fn taken_unread(server: &Server) -> usize {
    let mut probe = owned(server);
    let before = server.stats()["bytes_out"].as_u64().unwrap();
    probe.write_all(&echo_frame(1, 12 << 20)).unwrap();
    probe.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let taken = server.stats()["bytes_out"].as_u64().unwrap() - before;
    drop(probe);
    taken as usize
}

/// Reads until `want` body bytes of one reply came, or the end.
fn read_reply_body(s: &mut impl Read) -> Result<usize, String> {
    read_frame(s)
        .map(|f| f.body.len())
        .map_err(|e| e.to_string())
}

#[test]
fn the_end_of_a_reply_left_in_rustls_goes_out() {
    let server = start(&[]);
    let taken = taken_unread(&server);
    for less in [8, 40, 100] {
        let size = taken - less * 1024;
        let mut s = owned(&server);
        s.write_all(&echo_frame(2, size)).unwrap();
        s.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        assert_eq!(read_reply_body(&mut s), Ok(size), "{size} B");
    }
}

#[test]
fn a_half_close_waits_for_what_rustls_holds() {
    let server = start(&[]);
    let size = taken_unread(&server) - 24 * 1024;
    let mut s = owned(&server);
    s.write_all(&echo_frame(2, size)).unwrap();
    s.flush().unwrap();
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(read_reply_body(&mut s), Ok(size));
    // Then a clean end: close_notify before the FIN.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("close_notify");
}

#[test]
fn a_shutdown_mid_reply_sends_the_rest_then_bye_then_close_notify() {
    let mut server = start(&[]);
    let size = taken_unread(&server) + 100 * 1024;
    let mut s = owned(&server);
    s.write_all(&echo_frame(2, size)).unwrap();
    s.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    assert_eq!(read_reply_body(&mut s), Ok(size));
    assert_eq!(read_frame(&mut s).unwrap().op(), Some("bye"));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("close_notify");
    let _ = server.child.wait();
}

#[test]
fn over_max_conns_the_tls_port_answers_503_after_the_handshake() {
    let server = start(&["--max-conns", "1"]);
    let _first = owned(&server);
    let mut second = ByteWise::connect(&server);
    let refused = second.recv();
    assert_eq!(
        (refused.status(), refused.error()),
        (503, Some("too many connections"))
    );
}
