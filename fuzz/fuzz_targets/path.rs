//! Path resolution fed arbitrary current directories and request paths: a result
//! never leaves the root, holds only plain names, and resolves to itself again.
#![no_main]

use frameloop::service::files::path::{MAX_PATH, Resolved, resolve};
use libfuzzer_sys::fuzz_target;

fn check(r: &Resolved) {
    for part in r.components() {
        assert!(
            !part.is_empty() && part != "." && part != "..",
            "bad component {part:?}"
        );
        assert!(
            !part.contains('/') && !part.contains('\0'),
            "bad component {part:?}"
        );
    }
    let shown = r.display();
    assert!(shown.starts_with('/'));
    assert_eq!(
        resolve(&Resolved::root(), &shown).as_ref(),
        Ok(r),
        "not idempotent"
    );
    let rel = r.relative();
    assert!(!rel.starts_with('/'));
    // Joined under a root, the path stays under it.
    let under = std::path::Path::new("/root").join(&rel);
    assert!(under.starts_with("/root"));
    assert!(
        under
            .components()
            .all(|c| c != std::path::Component::ParentDir)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let (a, b) = rest.split_at(cut);
    let (Ok(a), Ok(b)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else {
        return;
    };
    let cwd = match resolve(&Resolved::root(), a) {
        Ok(cwd) => {
            check(&cwd);
            cwd
        }
        Err(_) => Resolved::root(),
    };
    match resolve(&cwd, b) {
        Ok(r) => {
            check(&r);
            assert!(!b.contains('\0') && b.len() <= MAX_PATH && !b.is_empty());
        }
        Err(e) => {
            if b.contains('\0') || b.len() > MAX_PATH || b.is_empty() {
                assert_eq!(e.status, 400);
            } else {
                assert_eq!(e.status, 403, "only climbing above the root is refused");
            }
        }
    }
});
