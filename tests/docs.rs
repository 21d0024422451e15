//! Documentation checks: the repository's copy of the wire contract matches the team's.

#[test]
fn protocol_copy_matches_shared_contract() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ours = std::fs::read_to_string(root.join("docs/PROTOCOL.md")).expect("docs/PROTOCOL.md");
    // The shared contract sits beside the repository on the team's machines and in CI.
    match std::fs::read_to_string(root.join("../shared/PROTOCOL.md")) {
        Ok(shared) => assert!(
            ours == shared,
            "docs/PROTOCOL.md differs from ../shared/PROTOCOL.md: copy it again"
        ),
        Err(_) => eprintln!("../shared/PROTOCOL.md not found; nothing to compare"),
    }
}
