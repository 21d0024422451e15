//! The frame decoder fed arbitrary bytes at arbitrary splits, checked against a
//! reference decoder that sees the whole stream at once: same frames, same error.
#![no_main]

use frameloop::proto::{Decoder, Event, Header, Limits};
use libfuzzer_sys::fuzz_target;

/// A frame as both decoders report it: op and id as raw JSON, size, oversized, body.
#[derive(Debug, PartialEq)]
struct Frame {
    op: Option<String>,
    id: Option<String>,
    size: u64,
    oversized: bool,
    body: Vec<u8>,
    complete: bool,
}

fn frame_of(h: &Header, oversized: bool) -> Frame {
    Frame {
        op: h.op.map(|r| r.get().to_string()),
        id: h.id.map(|r| r.get().to_string()),
        size: h.size,
        oversized,
        body: Vec::new(),
        complete: false,
    }
}

/// The simplest decoder there is: the whole stream in one slice.
fn reference(bytes: &[u8], limits: Limits) -> (Vec<Frame>, Option<u16>) {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    loop {
        let Some(prefix) = bytes.get(pos..pos + 4) else {
            return (frames, None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len == 0 {
            return (frames, Some(400));
        }
        if len > limits.max_header {
            return (frames, Some(431));
        }
        pos += 4;
        let Some(head) = bytes.get(pos..pos + len as usize) else {
            return (frames, None);
        };
        pos += len as usize;
        let Ok(header) = Header::parse(head) else {
            return (frames, Some(400));
        };
        if header.size > 0 && !limits.body_allowed {
            return (frames, Some(400));
        }
        let mut frame = frame_of(&header, header.size > limits.max_body);
        let avail = (bytes.len() - pos) as u64;
        let take = header.size.min(avail) as usize;
        frame.body.extend_from_slice(&bytes[pos..pos + take]);
        pos += take;
        frame.complete = take as u64 == header.size;
        let complete = frame.complete;
        frames.push(frame);
        if !complete {
            return (frames, None);
        }
    }
}

/// The real decoder, fed `chunks` one after another as a socket would.
fn incremental(chunks: &[&[u8]], limits: Limits) -> (Vec<Frame>, Option<u16>) {
    let mut d = Decoder::new(limits);
    let mut frames: Vec<Frame> = Vec::new();
    for chunk in chunks {
        let mut pos = 0;
        loop {
            let rest = &chunk[pos..];
            let mut header = Header::default();
            match d.decode(rest, &mut header) {
                Err(e) => return (frames, Some(e.status())),
                Ok((n, event)) => {
                    assert!(n <= rest.len(), "decoder claims more bytes than given");
                    pos += n;
                    match event {
                        None => {
                            assert_eq!(pos, chunk.len(), "None must absorb all input");
                            break;
                        }
                        Some(Event::Head { oversized }) => {
                            frames.push(frame_of(&header, oversized))
                        }
                        Some(Event::Body(b)) => {
                            assert!(!b.is_empty(), "empty body event");
                            frames
                                .last_mut()
                                .expect("body before head")
                                .body
                                .extend_from_slice(b)
                        }
                        Some(Event::End) => {
                            let f = frames.last_mut().expect("end before head");
                            assert_eq!(f.body.len() as u64, f.size, "end before the whole body");
                            f.complete = true;
                        }
                    }
                }
            }
        }
    }
    // A frame whose body is fully in but whose End was not asked for yet is complete.
    if let Some(f) = frames.last_mut()
        && f.body.len() as u64 == f.size
    {
        f.complete = true;
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    // data = [limits selector, number of cuts, cut positions (2 bytes each)..., stream...]
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let limits = match sel % 3 {
        0 => Limits {
            max_header: 65536,
            max_body: 1 << 24,
            body_allowed: true,
        },
        1 => Limits::PRE_AUTH,
        _ => Limits {
            max_header: 64,
            max_body: 8,
            body_allowed: true,
        },
    };
    let Some((&ncuts, rest)) = rest.split_first() else {
        return;
    };
    let ncuts = usize::from(ncuts % 16);
    if rest.len() < 2 * ncuts {
        return;
    }
    let (cut_bytes, stream) = rest.split_at(2 * ncuts);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut last = 0;
    for c in cuts {
        chunks.push(&stream[last..c]);
        last = c;
    }
    chunks.push(&stream[last..]);
    assert_eq!(incremental(&chunks, limits), reference(stream, limits));
});
