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
        // In CI the comparison must run: a missing contract is a failure, not a pass.
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("../shared/PROTOCOL.md: {e} (CI=true: the contract must be there)")
        }
        Err(_) => eprintln!("../shared/PROTOCOL.md not found; nothing to compare"),
    }
}

/// Words in backticks in the tour that are not names in our code: external
/// APIs, shell and Python words, and the example op the recipe would add.
const NOT_OUR_NAMES: &[&str] = &[
    "socket",
    "socketserver",
    "selectors",
    "select",
    "epoll",
    "recv",
    "MSG_PEEK",
    "accept",
    "WouldBlock",
    "writev",
    "slab",
    "bye",
    "hello",
    "auth",
    "echo",
    "reverse",
    "Greeting",
    "log::trace",
    "Interest::READABLE",
    "Op::Reverse",
    "key",
    "conn",
    "handle",
    "Vec",
    "hi",
    "k",
    "guest",
    "choices",
];

/// Whether `name` is defined somewhere in `src` (a fn, type, const, module,
/// macro, field or enum variant).
fn defined(src: &str, name: &str) -> bool {
    let keyword = [
        "fn",
        "struct",
        "enum",
        "trait",
        "const",
        "static",
        "mod",
        "type",
        "macro_rules!",
    ]
    .iter()
    .any(|kw| {
        src.contains(&format!("{kw} {name}("))
            || src.contains(&format!("{kw} {name} "))
            || src.contains(&format!("{kw} {name}<"))
            || src.contains(&format!("{kw} {name};"))
            || src.contains(&format!("{kw} {name}:"))
    });
    keyword
        || src.lines().any(|line| {
            let t = line.trim_start().trim_start_matches("pub ");
            // A field (`name: Type`) or an enum variant (`Name,`, `Name {`, `Name(`).
            t.starts_with(&format!("{name}:"))
                || t == format!("{name},")
                || t.starts_with(&format!("{name} {{"))
                || t.starts_with(&format!("{name}("))
        })
}

#[test]
fn every_name_in_the_reactor_tour_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tour = std::fs::read_to_string(root.join("docs/REACTOR.md")).expect("docs/REACTOR.md");
    let mut src = String::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                src.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut checked = 0;
    let mut missing = Vec::new();
    for (i, span) in tour.split('`').enumerate() {
        // Odd pieces are inside backticks (fenced blocks split evenly too and hold no names we check).
        let name = span.trim_end_matches("()").trim_end_matches('!');
        let is_name = i % 2 == 1
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !is_name || NOT_OUR_NAMES.contains(&name) {
            continue;
        }
        checked += 1;
        for part in name.split("::") {
            if !defined(&src, part) {
                missing.push(format!("{name} ({part})"));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} names checked: is the tour still there?"
    );
    assert!(
        missing.is_empty(),
        "docs/REACTOR.md names what src/ does not define: {missing:?}"
    );
}
