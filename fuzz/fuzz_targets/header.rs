//! Header parsing and every typed field accessor, fed arbitrary bytes: never a
//! panic; a header that parses is a JSON object whose `size` is the u64 it says.
//! The scanner's fast path reads every header exactly as serde_json does.
//! (Found here: `{"id":1.4e716}` is valid JSON that a `Value` cannot hold;
//! the regression test is `proto::header::tests::huge_numbers_are_json`.)
#![no_main]

use frameloop::proto::Header;
use frameloop::proto::header::{opt_bool, opt_str, opt_strings, opt_u64, req_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = Header::parse(data);
    assert_eq!(
        parsed,
        Header::parse_json(data),
        "the scanner and serde_json differ"
    );
    let Ok(h) = parsed else {
        return;
    };
    // Valid JSON (numbers of any magnitude, as the grammar allows: `1e999` is
    // valid and the parser keeps it raw) and an object.
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
        "a parsed header is JSON"
    );
    assert!(
        data.trim_ascii_start().starts_with(b"{"),
        "a parsed header is an object"
    );
    match h.size_raw {
        Some(raw) => assert_eq!(serde_json::from_str::<u64>(raw.get()).ok(), Some(h.size)),
        None => assert_eq!(h.size, 0),
    }
    let _ = h.id();
    let _ = h.op();
    let _ = h.status();
    let _ = req_str(h.path, "path");
    let _ = opt_str(h.sha256, "sha256");
    let _ = opt_bool(h.overwrite, "overwrite", false);
    let _ = opt_u64(h.offset, "offset");
    let _ = opt_strings(h.args, "args");
});
