//! Test helpers for Portcullis (not published).
//!
//! Real parts, not mocks: [`upstream`] is a recording HTTP server run as its own process,
//! [`redis`] starts, kills, pauses and restarts a real `redis-server`, and [`gateway`]
//! runs the `portcullis` binary and reads its log lines. [`http`] has a small client for
//! driving them, [`otlp`] receives the spans a gateway exports, and [`ports`] finds free
//! loopback ports. [`load`] is the open-loop load
//! generator behind the `portcullis-load` binary, with its rate-limit accuracy accounting.

pub mod browser;
pub mod conformance;
pub mod gateway;
pub mod http;
pub mod load;
pub mod otlp;
pub mod ports;
pub mod redis;
pub mod upstream;

pub use portcullis_core::ManualClock as FakeClock;

use std::path::PathBuf;

/// The directory holding the workspace's built binaries (`target/debug` or
/// `target/release`), found from the running test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, building it if a test is run on its own before the
/// binary exists.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile_release = bin_dir().ends_with("release");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "-p", package, "--bin", name]);
        if profile_release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building {name} failed");
    }
    path
}

/// A directory under the system's temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, empty directory.
    pub fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("portcullis-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes a file in it (`name` may name subdirectories, made as needed) and returns
    /// its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).expect("make temp subdirectory");
        }
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes a users file (argon2id hashes) at `path` with `(name, password, roles)`
/// entries, for gateways with `auth.users_file`.
pub fn write_users(path: &std::path::Path, users: &[(&str, &str, &[&str])]) {
    use portcullis_core::auth::password;
    use portcullis_core::auth::username::canonicalize;
    use portcullis_core::auth::users::{Role, UsersFile};
    let mut file = UsersFile::new();
    for (name, pw, roles) in users {
        let roles = roles
            .iter()
            .map(|r| Role::new(r).expect("a role"))
            .collect();
        file.upsert(
            canonicalize(name).expect("a username"),
            password::hash(pw).expect("hashing"),
            roles,
        )
        .expect("a user");
    }
    file.save(path).expect("write the users file");
}
