//! Path resolution for the file service, pure and unit-tested: a request's path
//! and the connection's current directory become one path inside the user's root.
//! No file system access here; `beneath` does the opening.

/// Longest request path accepted (contract section 5).
pub const MAX_PATH: usize = 4096;

/// Why a path is refused, with the contract's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub status: u16,
    pub message: &'static str,
}

impl PathError {
    const fn new(status: u16, message: &'static str) -> PathError {
        PathError { status, message }
    }
}

const NUL: PathError = PathError::new(400, "path contains a NUL byte");
const TOO_LONG: PathError = PathError::new(400, "path is over 4096 bytes");
const EMPTY: PathError = PathError::new(400, "path is empty");
const ABOVE_ROOT: PathError = PathError::new(403, "path climbs above your root");

/// A resolved path inside the user's root: its components, none of them empty,
/// `.` or `..`. The root itself has no components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    parts: Vec<String>,
}

impl Resolved {
    pub fn root() -> Resolved {
        Resolved { parts: Vec::new() }
    }

    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The path as clients see it: `/` or `/a/b`.
    pub fn display(&self) -> String {
        if self.parts.is_empty() {
            return "/".to_string();
        }
        let mut s = String::new();
        for part in &self.parts {
            s.push('/');
            s.push_str(part);
        }
        s
    }

    /// The path relative to the root directory, for `openat2`: `.` or `a/b`.
    pub fn relative(&self) -> String {
        if self.parts.is_empty() {
            ".".to_string()
        } else {
            self.parts.join("/")
        }
    }

    /// The parent and the last component (`None` for the root).
    pub fn split_last(&self) -> Option<(Resolved, &str)> {
        let (last, parent) = self.parts.split_last()?;
        Some((
            Resolved {
                parts: parent.to_vec(),
            },
            last.as_str(),
        ))
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(String::as_str)
    }
}

/// Resolves `path` (absolute from the root, or relative to `cwd`) textually:
/// `.` is dropped, `..` removes the previous component, and climbing above the
/// root is refused (403), never clamped, so a client learns its path was wrong.
pub fn resolve(cwd: &Resolved, path: &str) -> Result<Resolved, PathError> {
    if path.contains('\0') {
        return Err(NUL);
    }
    if path.len() > MAX_PATH {
        return Err(TOO_LONG);
    }
    if path.is_empty() {
        return Err(EMPTY);
    }
    let mut parts = if path.starts_with('/') {
        Vec::new()
    } else {
        cwd.parts.clone()
    };
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ABOVE_ROOT);
                }
            }
            name => parts.push(name.to_string()),
        }
    }
    Ok(Resolved { parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(cwd: &str) -> Resolved {
        resolve(&Resolved::root(), cwd).unwrap()
    }

    fn ok(cwd: &str, path: &str) -> String {
        resolve(&at(cwd), path).unwrap().display()
    }

    fn status(cwd: &str, path: &str) -> u16 {
        resolve(&at(cwd), path).unwrap_err().status
    }

    #[test]
    fn absolute_and_relative() {
        assert_eq!(ok("/", "a/b"), "/a/b");
        assert_eq!(ok("/x", "a/b"), "/x/a/b");
        assert_eq!(ok("/x", "/a"), "/a");
        assert_eq!(ok("/x/y", ".."), "/x");
        assert_eq!(ok("/x/y", "../z/./w/"), "/x/z/w");
        assert_eq!(ok("/", "/"), "/");
        assert_eq!(ok("/", "."), "/");
        assert_eq!(ok("/a", "b//c"), "/a/b/c");
        assert_eq!(ok("/", "a/.."), "/");
        assert_eq!(at("/a/b").relative(), "a/b");
        assert_eq!(Resolved::root().relative(), ".");
    }

    #[test]
    fn traversal_is_403() {
        for (cwd, path) in [
            ("/", ".."),
            ("/", "/../.."),
            ("/", "a/../../b"),
            ("/x", "../.."),
            ("/x/y", "../../../etc/passwd"),
            ("/", "/.."),
        ] {
            assert_eq!(status(cwd, path), 403, "{cwd} {path}");
        }
    }

    #[test]
    fn nul_long_and_empty_are_400() {
        assert_eq!(status("/", "a\0b"), 400);
        assert_eq!(status("/", &"a".repeat(4097)), 400);
        assert!(resolve(&Resolved::root(), &"a".repeat(4096)).is_ok());
        assert_eq!(status("/", ""), 400);
    }

    #[test]
    fn split_last_gives_parent_and_name() {
        let p = at("/a/b/c");
        let (parent, name) = p.split_last().unwrap();
        assert_eq!((parent.display().as_str(), name), ("/a/b", "c"));
        assert!(Resolved::root().split_last().is_none());
    }

    proptest! {
        /// Whatever the input, a resolved path never has a `..`, `.` or empty component.
        #[test]
        fn never_escapes(cwd in "(/[a-c.]{1,3}){0,3}", path in "[a-c./]{0,40}") {
            let cwd = match resolve(&Resolved::root(), if cwd.is_empty() { "/" } else { &cwd }) {
                Ok(c) => c,
                Err(_) => return Ok(()),
            };
            if let Ok(r) = resolve(&cwd, &path) {
                for part in r.components() {
                    prop_assert!(part != ".." && part != "." && !part.is_empty() && !part.contains('/'));
                }
            }
        }
    }
}
