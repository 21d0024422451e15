//! `--bus`: what Redis sends, as arbitrary bytes in arbitrary pieces, read by
//! the bus node on either connection. It never panics; once it says the bytes
//! are bad it is restarted (as the server drops the connection), and what it
//! decodes never depends on where the pieces were cut.
#![no_main]

use frameloop::bus::{LINES, Node, Url};
use libfuzzer_sys::fuzz_target;

fn node() -> Node {
    let url = Url::parse("redis://u:p@h:1").expect("a url");
    let mut node = Node::new(&url, *b"aaaaaaaaaaaaaa00", 1 << 16);
    node.restart();
    node
}

/// Every event, or the error that ended the reading, fed `step` bytes at a time.
fn read(input: &[u8], step: usize) -> Vec<String> {
    let mut node = node();
    let mut said = Vec::new();
    // Someone waits on both lines, so answers have something to answer.
    node.subscribe(frameloop::bus::Channel::Room("r"), Some(1));
    node.publish(frameloop::bus::Channel::User("u"), b"x", Some(2));
    for line in LINES {
        for piece in input.chunks(step) {
            node.received(line, piece);
            loop {
                match node.next_event(line) {
                    Ok(Some(event)) => said.push(format!("{event:?}")),
                    Ok(None) => break,
                    Err(e) => {
                        said.push(format!("error {e:?}"));
                        return said;
                    }
                }
            }
        }
    }
    said
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    assert_eq!(read(input, input.len().max(1)), read(input, step));
});
