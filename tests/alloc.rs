//! The hot path allocates nothing per frame once warm: the server
//! runs in this process, on its own thread, and a counting allocator counts the
//! allocations made on that thread while pipelined pings and echoes are served,
//! over TCP and over UDP.

use frameloop::client::{Client, Credentials};
use frameloop::config::Config;
use frameloop::server::Server;
use frameloop::service::Services;
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

struct Counting;

static SERVER_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ON_SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON_SERVER_THREAD.with(Cell::get) {
            SERVER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON_SERVER_THREAD.with(Cell::get) {
            SERVER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Sends `n` requests in pipelined batches and reads every reply; returns the
/// server-thread allocations made meanwhile.
fn allocations_for(client: &mut Client, n: usize, op: &str, body: &[u8]) -> u64 {
    let before = SERVER_ALLOCS.load(Ordering::Relaxed);
    for _ in 0..n / 100 {
        let ids: Vec<u64> = (0..100)
            .map(|_| client.send(op, json!({}), body).unwrap())
            .collect();
        for id in ids {
            let r = client.read_reply().unwrap();
            assert_eq!((r.status(), r.id()), (200, Some(id)));
        }
    }
    SERVER_ALLOCS.load(Ordering::Relaxed) - before
}

/// Sends `n` echo datagrams one at a time, each answered before the next;
/// returns the server-thread allocations made meanwhile.
fn udp_allocations_for(socket: &std::net::UdpSocket, n: u64, body: &[u8]) -> u64 {
    let before = SERVER_ALLOCS.load(Ordering::Relaxed);
    let mut reply = vec![0u8; 65_536];
    for id in 0..n {
        let header = format!(r#"{{"op":"echo","id":{id},"size":{}}}"#, body.len());
        socket
            .send(&frameloop::proto::encode_frame(header.as_bytes(), body))
            .unwrap();
        let got = socket.recv(&mut reply).unwrap();
        assert!(got > body.len());
    }
    SERVER_ALLOCS.load(Ordering::Relaxed) - before
}

#[test]
fn per_frame_allocations_on_the_server_thread() {
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp: Some("127.0.0.1:0".parse().unwrap()),
        no_auth: true,
        data_dir: data.path().to_path_buf(),
        ..Config::default()
    };
    // The server holds single-threaded state (Rc), so it is built on its own
    // thread; that thread runs until the test process exits.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ON_SERVER_THREAD.with(|f| f.set(true));
        let services = Services::new(Default::default(), &config, Instant::now()).unwrap();
        let server = Server::bind(config, services).unwrap();
        tx.send((server.local_addr().unwrap(), server.udp_addr().unwrap()))
            .unwrap();
        let _ = server.run();
    });
    let (addr, udp_addr) = rx.recv().unwrap();
    let mut client = Client::connect(addr, &Credentials::Anonymous).unwrap();
    // Warm up: buffers reach their working size.
    allocations_for(&mut client, 2000, "ping", b"");
    allocations_for(&mut client, 2000, "echo", &[b'x'; 64]);

    let n = 10_000;
    let pings = allocations_for(&mut client, n, "ping", b"");
    let echoes = allocations_for(&mut client, n, "echo", &[b'x'; 64]);
    eprintln!("server-thread allocations: {pings} for {n} pings, {echoes} for {n} 64-byte echoes");
    // In steady state neither needs new memory: reply buffers and request bodies
    // cycle through the buffer pool. A per-frame allocation anywhere (a header
    // string, a body buffer not given back) would make these counts reach n.
    assert!(
        pings < (n / 100) as u64,
        "{pings} allocations for {n} pings"
    );
    assert!(
        echoes < (n / 100) as u64,
        "{echoes} allocations for {n} echoes"
    );

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(udp_addr).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    udp_allocations_for(&socket, 500, &[b'x'; 64]);
    let datagrams = udp_allocations_for(&socket, 5000, &[b'x'; 64]);
    eprintln!("server-thread allocations: {datagrams} for 5000 UDP echoes");
    assert!(
        datagrams < 50,
        "{datagrams} allocations for 5000 UDP echoes"
    );
}
