//! `--proxy-protocol`: a connection machine waiting for its PROXY header, fed
//! arbitrary bytes arriving in arbitrary pieces and peeked as the server does.
//! What a prefix decides must be what the whole input decides (a header found
//! early is the same header; a prefix found bad stays bad), and the bytes after
//! a header go to the greeted machine unharmed.
#![no_main]

mod common;

use frameloop::conn::Conn;
use frameloop::proto::proxy::{self, Parsed};
use frameloop::service::Services;
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use std::time::Instant;

thread_local! {
    static SERVICES: RefCell<Option<Services>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    let whole = proxy::parse(input);
    SERVICES.with_borrow_mut(|s| {
        let services = s.get_or_insert_with(|| common::services("proxy", None).0);
        run(services, step, input, whole);
    });
});

fn run(services: &mut Services, step: usize, input: &[u8], whole: Parsed) {
    let now = Instant::now();
    let mut conn = Conn::await_proxy(services, common::RULES, 0, 0, None, now);
    let mut arrived = 0;
    loop {
        arrived = (arrived + step).min(input.len());
        let peeked = &input[..arrived.min(proxy::MAX_LEN)];
        match conn.proxy_header(services, peeked, now) {
            Some((len, source)) => {
                assert!(len <= peeked.len());
                assert_eq!(whole, Parsed::Header { len, source }, "a prefix's header");
                conn.greet(services, true);
                conn.receive(services, Some(&input[len..]), now);
                break;
            }
            None if conn.is_closed() => {
                assert_eq!(whole, Parsed::Invalid, "a prefix found bad");
                break;
            }
            None if arrived == input.len() => {
                assert_eq!(whole, Parsed::Incomplete);
                break;
            }
            None => {}
        }
    }
    conn.release(services, |_| true);
}
