//! What the fuzz targets share: services over a temp data dir, with one user.

use frameloop::auth::Users;
use frameloop::config::Config;
use frameloop::conn::Rules;
use frameloop::service::Services;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// guest's key.
pub const KEY: [u8; 32] = [7; 32];

/// Services over `<tmp>/frameloop-fuzz-NAME-PID` (also returned), user guest
/// with `KEY`, and `quota`.
pub fn services(name: &str, quota: Option<u64>) -> (Services, PathBuf) {
    let dir = std::env::temp_dir().join(format!("frameloop-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let config = Config {
        data_dir: dir.clone(),
        users_file: dir.join("users"),
        quota,
        ..Config::default()
    };
    let users = Users::parse(&format!("guest {}\n", hex::encode(KEY))).expect("users");
    let services = Services::new(users, &config, Instant::now()).expect("services");
    (services, dir)
}

/// The connection rules the targets drive `Conn` with.
pub const RULES: Rules = Rules {
    idle_timeout: Duration::from_secs(10),
    auth_timeout: Duration::from_secs(10),
    max_outbuf: 1 << 20,
};
