//! The users file: canonical usernames, their argon2id hashes and their roles, in TOML.
//!
//! ```toml
//! [users.alice]
//! password = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! roles = ["user", "admin"]
//! ```
//!
//! The rules, checked at [`UsersFile::load`] with errors that name the file, the line and
//! the user:
//!
//! - every key under `[users]` is a canonical username ([`canonicalize`]): `[users.Alice]`
//!   is refused with the spelling to use instead, so two entries can never be one account;
//! - `password` is an argon2id PHC string within [`password`]'s parameter bounds
//!   ([`check_phc`]); plain text is refused;
//! - `roles` (optional, default none) are each 1 to 64 of `a-z`, `0-9`, `_`, `-`; repeats are
//!   dropped;
//! - unknown keys anywhere are errors.
//!
//! [`UsersFile::save`] replaces the file atomically: a temporary file in the same directory,
//! created with mode 0600, is written, flushed to disk (`fsync`), renamed over the target,
//! and the directory is flushed too. A reader (another instance, a restart) sees the old file
//! or the new one, never a mix; a crash or a full disk leaves the old file intact, and no
//! temporary file stays behind after an error.
//!
//! # Security
//!
//! - The hashes are secrets in the sense that they allow offline guessing: the file is
//!   written 0600 and its hashes are held in [`Secret`]; no error message quotes one.
//! - [`UsersFile::save`] replaces a symbolic link at `path` by a file instead of writing
//!   through it.
//! - Writers do not lock each other out: two concurrent `portcullis users` commands each
//!   write a whole file, and the last rename wins.
//!
//! ```
//! use portcullis_core::auth::{password, username::canonicalize};
//! use portcullis_core::auth::users::{Role, UsersFile};
//!
//! let mut users = UsersFile::new();
//! let phc = password::hash("s3cret pass").unwrap();
//! users
//!     .upsert(canonicalize("Alice").unwrap(), phc, vec![Role::new("admin").unwrap()])
//!     .unwrap();
//! let text = users.to_toml();
//! let back = UsersFile::parse(&text, "users.toml".as_ref()).unwrap();
//! let alice = back.get(&canonicalize("ALICE").unwrap()).unwrap();
//! assert!(alice.verify("s3cret pass"));
//! assert_eq!(alice.roles()[0].as_str(), "admin");
//! ```
//!
//! [`canonicalize`]: super::username::canonicalize
//! [`check_phc`]: super::password::check_phc

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::password::{self, PasswordError};
use super::username::{Username, canonicalize};
use crate::Secret;

/// The longest role name.
pub const MAX_ROLE_LEN: usize = 64;

/// The mode of a saved users file: owner read and write only.
pub const FILE_MODE: u32 = 0o600;

const HEADER: &str = "# Portcullis users: canonical usernames, argon2id password hashes, roles.\n\
                      # Managed by `portcullis users`; keep this file private (mode 0600).\n\n";

/// A role name: 1 to 64 of `a-z`, `0-9`, `_`, `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role(String);

/// A role name that does not match `[a-z0-9_-]{1,64}`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("role {role:?}: expected 1 to 64 characters among a-z, 0-9, '_' and '-'")]
pub struct RoleError {
    /// The refused name.
    pub role: String,
}

impl Role {
    /// Checks and wraps a role name.
    pub fn new(role: &str) -> Result<Self, RoleError> {
        let valid = (1..=MAX_ROLE_LEN).contains(&role.len())
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(role.to_owned()))
        } else {
            Err(RoleError { role: role.into() })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Role {
    type Err = RoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// One user: a password hash and roles.
#[derive(Clone, Debug)]
pub struct User {
    password: Secret<String>,
    roles: Vec<Role>,
}

impl User {
    /// The argon2id PHC string.
    pub fn password_hash(&self) -> &Secret<String> {
        &self.password
    }

    /// The roles, in file order, without repeats.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Whether the user has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.as_str() == role)
    }

    /// Whether `password` is this user's ([`password::verify`]): blocking for tens of
    /// milliseconds, so call it from `spawn_blocking`.
    pub fn verify(&self, password: &str) -> bool {
        password::verify(password, self.password.expose())
    }
}

/// Why the users file could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The users file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Not valid TOML, or not the expected shape.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The users file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// One user's entry is invalid.
    #[error("{}:{line}: user {user:?}: {message}", path.display())]
    User {
        /// The users file.
        path: PathBuf,
        /// 1-based line of the entry.
        line: usize,
        /// The key as written.
        user: String,
        /// What is wrong (never the hash itself).
        message: String,
    },
    /// A hash given to [`UsersFile::upsert`] is unusable.
    #[error("user {user}: {source}")]
    Hash {
        /// The user.
        user: Username,
        /// Why.
        #[source]
        source: PasswordError,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    users: BTreeMap<Spanned<String>, RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    password: Spanned<String>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
}

#[derive(Serialize)]
struct OutFile<'a> {
    users: BTreeMap<&'a str, OutUser<'a>>,
}

#[derive(Serialize)]
struct OutUser<'a> {
    password: &'a str,
    roles: Vec<&'a str>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn dedup(roles: Vec<Role>) -> Vec<Role> {
    let mut out: Vec<Role> = Vec::with_capacity(roles.len());
    for r in roles {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The users, by canonical name. `Debug` shows names and roles, never hashes.
#[derive(Clone, Debug, Default)]
pub struct UsersFile {
    users: BTreeMap<Username, User>,
}

impl UsersFile {
    /// No users.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = fs::read_to_string(path).map_err(|source| UsersError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Like [`load`](Self::load), but a missing file is an empty one (the first
    /// `portcullis users add` creates it).
    pub fn load_or_empty(path: &Path) -> Result<Self, UsersError> {
        match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::new()),
            _ => Self::load(path),
        }
    }

    /// Parses `text`; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, UsersError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| UsersError::Parse {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        let mut users = BTreeMap::new();
        for (key, raw_user) in raw.users {
            let line = line_of(text, key.span().start);
            let written = key.into_inner();
            let bad = |message: String| UsersError::User {
                path: path.to_owned(),
                line,
                user: written.clone(),
                message,
            };
            let name = canonicalize(&written).map_err(|e| bad(e.to_string()))?;
            if name.as_str() != written {
                return Err(bad(format!(
                    "not a canonical username; write it as {:?}",
                    name.as_str()
                )));
            }
            let phc = raw_user.password.into_inner();
            password::check_phc(&phc).map_err(|e| bad(format!("password: {e}")))?;
            let roles = raw_user
                .roles
                .into_iter()
                .map(|r| Role::new(r.get_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            users.insert(
                name,
                User {
                    password: Secret::new(phc),
                    roles: dedup(roles),
                },
            );
        }
        Ok(Self { users })
    }

    /// The user called `name`.
    pub fn get(&self, name: &Username) -> Option<&User> {
        self.users.get(name)
    }

    /// Adds `name`, or replaces its hash and roles; whether it was added. `phc` must be an
    /// argon2id PHC string ([`password::hash`] makes one).
    pub fn upsert(
        &mut self,
        name: Username,
        phc: String,
        roles: Vec<Role>,
    ) -> Result<bool, UsersError> {
        if let Err(source) = password::check_phc(&phc) {
            return Err(UsersError::Hash { user: name, source });
        }
        let user = User {
            password: Secret::new(phc),
            roles: dedup(roles),
        };
        Ok(self.users.insert(name, user).is_none())
    }

    /// Removes `name`; the user it was.
    pub fn remove(&mut self, name: &Username) -> Option<User> {
        self.users.remove(name)
    }

    /// Every user, by name.
    pub fn list(&self) -> impl Iterator<Item = (&Username, &User)> {
        self.users.iter()
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The file's text: a comment, then one `[users.NAME]` table per user, by name.
    pub fn to_toml(&self) -> String {
        let out = OutFile {
            users: self
                .users
                .iter()
                .map(|(name, u)| {
                    let user = OutUser {
                        password: u.password.expose(),
                        roles: u.roles.iter().map(Role::as_str).collect(),
                    };
                    (name.as_str(), user)
                })
                .collect(),
        };
        // Strings and string arrays in tables always serialise.
        let body = toml::to_string(&out).expect("users serialise to TOML");
        format!("{HEADER}{body}")
    }

    /// Writes the file atomically, mode 0600 (see the module documentation).
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let text = self.to_toml();
        write_atomic(path, |f| f.write_all(text.as_bytes())).map_err(|source| UsersError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `dir/.NAME.tmp-PID-N` with mode 0600, never reusing an existing file.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..100 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Replaces `path` with what `write` puts in a fresh file: temp file, fsync, rename,
/// directory fsync. On any error before the rename the temporary file is removed and
/// `path` is untouched.
fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, mut file) = create_temp(dir, name)?;
    let written = write(&mut file).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory entry is.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::LazyLock;

    /// One real hash for all tests: argon2id is slow on purpose.
    static PHC: LazyLock<String> = LazyLock::new(|| password::hash("pw").unwrap());

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("portcullis-users-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn name(s: &str) -> Username {
        canonicalize(s).unwrap()
    }

    fn roles(r: &[&str]) -> Vec<Role> {
        r.iter().map(|r| Role::new(r).unwrap()).collect()
    }

    fn sample() -> UsersFile {
        let mut u = UsersFile::new();
        u.upsert(name("alice"), PHC.clone(), roles(&["user", "admin"]))
            .unwrap();
        u.upsert(name("bob"), PHC.clone(), roles(&["user"]))
            .unwrap();
        u.upsert(name("José.O'Neil@Example.com"), PHC.clone(), vec![])
            .unwrap();
        u.upsert(name("爱丽丝"), PHC.clone(), roles(&["user"]))
            .unwrap();
        u
    }

    fn same(a: &UsersFile, b: &UsersFile) {
        let view = |f: &UsersFile| {
            f.list()
                .map(|(n, u)| {
                    (
                        n.clone(),
                        u.password_hash().expose().clone(),
                        u.roles().to_vec(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(view(a), view(b));
    }

    #[test]
    fn text_round_trip() {
        let u = sample();
        let text = u.to_toml();
        assert!(text.contains("[users.alice]"), "{text}");
        assert!(text.contains("roles = [\"user\", \"admin\"]"), "{text}");
        let back = UsersFile::parse(&text, Path::new("u.toml")).unwrap();
        same(&u, &back);
        assert_eq!(back.to_toml(), text, "stable output");
    }

    #[test]
    fn save_load_round_trip_with_mode_0600() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("users.toml");
        let u = sample();
        u.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        same(&u, &UsersFile::load(&path).unwrap());
        assert_eq!(dir.entries(), ["users.toml"], "no temporary file left");

        // Replacing keeps the mode and leaves one file.
        let mut u2 = UsersFile::load(&path).unwrap();
        assert!(u2.remove(&name("bob")).is_some());
        assert!(u2.remove(&name("bob")).is_none());
        assert!(
            !u2.upsert(name("ALICE"), PHC.clone(), roles(&["user"]))
                .unwrap()
        );
        u2.save(&path).unwrap();
        let back = UsersFile::load(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert!(back.get(&name("bob")).is_none());
        assert!(!back.get(&name("alice")).unwrap().has_role("admin"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(dir.entries(), ["users.toml"]);
    }

    #[test]
    fn a_loose_existing_file_becomes_0600() {
        let dir = TempDir::new("loose");
        let path = dir.0.join("users.toml");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(UsersFile::load(&path).unwrap().is_empty());
        sample().save(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = TempDir::new("fail");
        let path = dir.0.join("users.toml");
        sample().save(&path).unwrap();
        let before = fs::read(&path).unwrap();
        let err = write_atomic(&path, |f| {
            f.write_all(b"[users.half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(fs::read(&path).unwrap(), before, "old file intact");
        assert_eq!(dir.entries(), ["users.toml"], "temporary file removed");
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary() {
        let dir = TempDir::new("rename");
        // The target is a non-empty directory: the rename fails after the write.
        let path = dir.0.join("users.toml");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "x").unwrap();
        let err = sample().save(&path).unwrap_err();
        assert!(err.to_string().contains("users.toml"), "{err}");
        assert_eq!(dir.entries(), ["users.toml"]);
        assert_eq!(fs::read_to_string(path.join("keep")).unwrap(), "x");
    }

    #[test]
    fn a_read_only_directory_refuses_the_write_and_keeps_the_file() {
        let dir = TempDir::new("ro");
        let path = dir.0.join("users.toml");
        sample().save(&path).unwrap();
        let before = fs::read(&path).unwrap();
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o500)).unwrap();
        let mut changed = sample();
        changed.remove(&name("alice"));
        let result = changed.save(&path);
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o700)).unwrap();
        match result {
            // Root ignores directory permissions; then the save simply worked.
            Ok(()) => assert_eq!(UsersFile::load(&path).unwrap().len(), 3),
            Err(e) => {
                assert!(matches!(e, UsersError::Io { .. }), "{e}");
                assert_eq!(fs::read(&path).unwrap(), before);
            }
        }
        assert_eq!(dir.entries(), ["users.toml"]);
    }

    #[test]
    fn missing_file() {
        let dir = TempDir::new("missing");
        let path = dir.0.join("nope.toml");
        let e = UsersFile::load(&path).unwrap_err();
        assert!(e.to_string().contains("nope.toml"), "{e}");
        assert!(UsersFile::load_or_empty(&path).unwrap().is_empty());
    }

    #[test]
    fn bad_files_name_the_file_line_and_user() {
        let phc = PHC.as_str();
        let cases: Vec<(&str, String, &str)> = vec![
            ("not toml", "[users.alice\n".into(), "u.toml:1: "),
            (
                "unknown top-level key",
                "[users]\n[groups]\n".into(),
                "u.toml:2: unknown field `groups`",
            ),
            (
                "unknown user key",
                format!("[users.alice]\npassword = \"{phc}\"\nemail = \"a@b\"\n"),
                "u.toml:3: unknown field `email`",
            ),
            (
                "missing password",
                "\n[users.alice]\nroles = []\n".into(),
                "missing field `password`",
            ),
            (
                "not canonical",
                format!(
                    "[users.alice]\npassword = \"{phc}\"\n\n[users.Bob]\npassword = \"{phc}\"\n"
                ),
                "u.toml:4: user \"Bob\": not a canonical username; write it as \"bob\"",
            ),
            (
                "refused username",
                format!("[users.\"ali ce\"]\npassword = \"{phc}\"\n"),
                "u.toml:1: user \"ali ce\": usernames cannot contain spaces",
            ),
            (
                "plain text password",
                "[users.alice]\npassword = \"hunter2\"\n".into(),
                "u.toml:1: user \"alice\": password: not an argon2id password hash",
            ),
            (
                "bad role",
                format!("[users.alice]\npassword = \"{phc}\"\nroles = [\"Admin\"]\n"),
                "u.toml:1: user \"alice\": role \"Admin\": expected 1 to 64",
            ),
            (
                "duplicate user",
                format!(
                    "[users.alice]\npassword = \"{phc}\"\n[users.alice]\npassword = \"{phc}\"\n"
                ),
                "u.toml:3: ",
            ),
        ];
        for (case, text, want) in cases {
            let e = UsersFile::parse(&text, Path::new("u.toml"))
                .map(|_| ())
                .expect_err(case)
                .to_string();
            assert!(e.contains(want), "{case}: {e:?} lacks {want:?}");
            assert!(!e.contains(phc), "{case}: the hash leaked: {e}");
        }
    }

    #[test]
    fn roles_are_checked_and_deduplicated() {
        let cases: &[(&str, &str, bool)] = &[
            ("plain", "admin", true),
            ("digits dash underscore", "ops_2-eu", true),
            ("max length", &"r".repeat(MAX_ROLE_LEN), true),
            ("empty", "", false),
            ("too long", &"r".repeat(MAX_ROLE_LEN + 1), false),
            ("upper case", "Admin", false),
            ("space", "a b", false),
            ("colon", "a:b", false),
            ("non-ascii", "rôle", false),
        ];
        for (case, role, valid) in cases {
            assert_eq!(Role::new(role).is_ok(), *valid, "{case}");
        }
        let mut u = UsersFile::new();
        u.upsert(name("a"), PHC.clone(), roles(&["x", "y", "x"]))
            .unwrap();
        assert_eq!(u.get(&name("a")).unwrap().roles(), roles(&["x", "y"]));
    }

    #[test]
    fn upsert_refuses_a_bad_hash_and_debug_hides_hashes() {
        let mut u = UsersFile::new();
        let e = u.upsert(name("a"), "plaintext".into(), vec![]).unwrap_err();
        assert!(matches!(e, UsersError::Hash { .. }), "{e}");
        assert!(u.is_empty());
        let s = format!("{:?}", sample());
        assert!(!s.contains(PHC.as_str()), "{s}");
        assert!(s.contains("alice"));
    }
}
