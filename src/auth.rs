//! Authentication of contract section 3 as pure functions: the HMAC-SHA256
//! challenge-response math, nonces, and the users file.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

/// A user's 32-byte shared key.
pub type Key = [u8; 32];
/// A 32-byte nonce (server's `nonce` or client's `cnonce`).
pub type Nonce = [u8; 32];

/// The one error text for every authentication failure, so it reveals nothing.
pub const AUTH_FAILED: &str = "authentication failed";

/// 32 bytes from the OS random source.
pub fn random32() -> io::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    getrandom::fill(&mut out).map_err(|e| io::Error::other(format!("random source: {e}")))?;
    Ok(out)
}

/// What one login's MACs cover besides the key: both nonces, the user, and over
/// TLS the channel binding (`cb`: SHA-256 of the server's certificate), so a
/// login relayed through another TLS endpoint does not verify.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub nonce: &'a Nonce,
    pub cnonce: &'a Nonce,
    pub user: &'a str,
    pub cb: Option<&'a [u8; 32]>,
}

impl Login<'_> {
    fn mac(&self, key: &Key, label: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail for 32 bytes.
        let mut m =
            <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        m.update(label);
        m.update(self.nonce);
        m.update(self.cnonce);
        m.update(self.user.as_bytes());
        if let Some(cb) = self.cb {
            m.update(cb);
        }
        m
    }

    /// `HMAC(K, "frameloop client" || nonce || cnonce || user [|| cb])`: what the client proves.
    pub fn client_mac(&self, key: &Key) -> [u8; 32] {
        self.mac(key, b"frameloop client")
            .finalize()
            .into_bytes()
            .into()
    }

    /// `HMAC(K, "frameloop server" || nonce || cnonce || user [|| cb])`: what the server proves back.
    pub fn server_mac(&self, key: &Key) -> [u8; 32] {
        self.mac(key, b"frameloop server")
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks a client's MAC in constant time.
    pub fn verify_client(&self, key: &Key, tag: &[u8]) -> bool {
        self.mac(key, b"frameloop client").verify_slice(tag).is_ok()
    }

    /// Checks a server's MAC in constant time (the client's half of mutual auth).
    pub fn verify_server(&self, key: &Key, tag: &[u8]) -> bool {
        self.mac(key, b"frameloop server").verify_slice(tag).is_ok()
    }
}

/// The MACs of a login on a plain transport (no channel binding).
fn plain<'a>(nonce: &'a Nonce, cnonce: &'a Nonce, user: &'a str) -> Login<'a> {
    Login {
        nonce,
        cnonce,
        user,
        cb: None,
    }
}

/// `HMAC(K, "frameloop client" || nonce || cnonce || user)`: what the client proves.
pub fn client_mac(key: &Key, nonce: &Nonce, cnonce: &Nonce, user: &str) -> [u8; 32] {
    plain(nonce, cnonce, user).client_mac(key)
}

/// `HMAC(K, "frameloop server" || nonce || cnonce || user)`: what the server proves back.
pub fn server_mac(key: &Key, nonce: &Nonce, cnonce: &Nonce, user: &str) -> [u8; 32] {
    plain(nonce, cnonce, user).server_mac(key)
}

/// Checks a client's MAC in constant time.
pub fn verify_client(key: &Key, nonce: &Nonce, cnonce: &Nonce, user: &str, tag: &[u8]) -> bool {
    plain(nonce, cnonce, user).verify_client(key, tag)
}

/// Checks a server's MAC in constant time (the client's half of mutual auth).
pub fn verify_server(key: &Key, nonce: &Nonce, cnonce: &Nonce, user: &str, tag: &[u8]) -> bool {
    plain(nonce, cnonce, user).verify_server(key, tag)
}

/// Decodes exactly 32 bytes of hex (either case).
pub fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Longest user name (and room name, by the same rule).
pub const MAX_NAME: usize = 64;

/// The one name rule, for user names (contract section 3: the users file, `keygen`)
/// and room names (section 7, checked by the chat service): 1-64 of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The users file: `<name> <64 hex key>` a line; `#` comments and blank lines ignored.
#[derive(Debug, Default, Clone)]
pub struct Users {
    keys: HashMap<String, Key>,
}

impl Users {
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut keys = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(key), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("line {}: expected `<name> <64 hex key>`", n + 1));
            };
            if !valid_name(name) {
                return Err(format!("line {}: bad user name {name:?}", n + 1));
            }
            let key =
                hex32(key).ok_or_else(|| format!("line {}: key must be 64 hex digits", n + 1))?;
            keys.insert(name.to_string(), key);
        }
        Ok(Users { keys })
    }

    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Users::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn key(&self, user: &str) -> Option<&Key> {
        self.keys.get(user)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A users-file line for `name` with a fresh random key (`frameloop keygen`).
pub fn keygen_line(name: &str) -> io::Result<String> {
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "names are 1-64 of [A-Za-z0-9_.-]",
        ));
    }
    Ok(format!("{name} {}", hex::encode(random32()?)))
}

/// Creates a users file (mode 0600, never overwriting) holding `guest` with a fresh
/// key; missing directories above it (the data dir, by default) are made 0700.
pub fn create_users_file(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(
        file,
        "# frameloop users: <name> <64 hex key>; make lines with `frameloop keygen NAME`"
    )?;
    writeln!(file, "{}", keygen_line("guest")?)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_verify_and_differ_by_role() {
        let key = [7u8; 32];
        let (n, c) = ([1u8; 32], [2u8; 32]);
        let cm = client_mac(&key, &n, &c, "guest");
        let sm = server_mac(&key, &n, &c, "guest");
        assert_ne!(cm, sm);
        assert!(verify_client(&key, &n, &c, "guest", &cm));
        assert!(!verify_client(&key, &n, &c, "guest", &sm));
        assert!(!verify_client(&key, &n, &c, "guest2", &cm));
        assert!(!verify_client(&key, &c, &n, "guest", &cm));
        assert!(!verify_client(&key, &n, &c, "guest", &cm[..31]));
        assert!(verify_server(&key, &n, &c, "guest", &sm));
    }

    #[test]
    fn mac_matches_a_known_vector() {
        // Computed independently with Python: hmac.new(bytes(32), b"frameloop client"
        // + bytes(32) + bytes(32) + b"guest", "sha256").hexdigest()
        let z = [0u8; 32];
        assert_eq!(
            hex::encode(client_mac(&z, &z, &z, "guest")),
            "964477db8be40c4c4115593fa27799d8b9360a484e6524bb50a5603a25e07ee4"
        );
    }

    #[test]
    fn hex_is_case_insensitive_and_exact() {
        let lower = "ab".repeat(32);
        assert_eq!(hex32(&lower), Some([0xab; 32]));
        assert_eq!(hex32(&lower.to_uppercase()), Some([0xab; 32]));
        assert_eq!(hex32(&lower[..62]), None);
        assert_eq!(hex32(&format!("{lower}00")), None);
        assert_eq!(hex32(&"zz".repeat(32)), None);
    }

    #[test]
    fn users_file() {
        let key = "0f".repeat(32);
        let u = Users::parse(&format!(
            "# c\n\n  guest {key}\n\t# x\nbob.b-1 {}\n",
            key.to_uppercase()
        ))
        .unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u.key("bob.b-1"), Some(&[0x0f; 32]));
        assert!(Users::parse("guest 12").is_err());
        assert!(Users::parse(&format!("bad/name {key}")).is_err());
        assert!(Users::parse(&format!("a {key} extra")).is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("a"));
        assert!(valid_name(&"x".repeat(64)));
        assert!(!valid_name(&"x".repeat(65)));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("é"));
    }

    #[test]
    fn keygen_lines_parse_back() {
        let line = keygen_line("guest").unwrap();
        assert_eq!(Users::parse(&line).unwrap().len(), 1);
        assert!(keygen_line("no/slash").is_err());
    }
}
