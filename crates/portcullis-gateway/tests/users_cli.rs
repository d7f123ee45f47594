//! `portcullis users add|passwd|remove|list` through the binary, as an operator runs it:
//! the password on standard input, the users file on disk, exit codes and messages; and a
//! running gateway that picks up what the command wrote.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use portcullis_core::auth::username::canonicalize;
use portcullis_core::auth::users::UsersFile;
use portcullis_testkit::TempDir;
use portcullis_testkit::gateway::{GatewayCmd, GatewayProcess};
use portcullis_testkit::http::{Client, Reply};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "tr0ub4dor and then some";

/// How one `portcullis users …` run ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "{self:?}");
        self
    }

    /// Neither stream shows `secret`.
    fn assert_never_shows(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the password was printed: {self:?}"
        );
    }
}

/// Runs `portcullis users ARGS` with `stdin` as its standard input (a pipe, so the
/// password is read as one line) and only the `PORTCULLIS_*` variables in `env`.
fn users(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.arg("users").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTCULLIS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn portcullis");
    // The command may exit before reading (a duplicate user, a bad name): a broken pipe
    // is then expected, not a failure.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("wait for portcullis");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `users SUB NAME… --users-file FILE`, the password (if any) on standard input.
fn users_in(file: &Path, args: &[&str], password: &str) -> Run {
    let mut all = args.to_vec();
    all.extend(["--users-file", file.to_str().expect("a UTF-8 path")]);
    users(&all, &format!("{password}\n"), &[])
}

fn users_file(dir: &TempDir) -> PathBuf {
    dir.path().join("users.toml")
}

/// The `password = "…"` line of the only user in `file`.
fn stored_hash(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("read the users file");
    let mut lines = text
        .lines()
        .filter(|l| l.trim_start().starts_with("password"));
    let line = lines.next().expect("a password line");
    assert!(lines.next().is_none(), "one user in {text}");
    line.to_owned()
}

#[test]
fn add_writes_a_private_file_and_list_shows_names_and_roles_never_a_hash() {
    let dir = TempDir::new("users-add");
    let file = users_file(&dir);
    let add = users_in(
        &file,
        &["add", "Alice", "--role", "user", "--role", "admin"],
        PASSWORD,
    );
    add.assert_ok();
    assert!(add.stdout.contains("added alice"), "{add:?}");
    add.assert_never_shows(PASSWORD);

    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "users file mode {mode:o}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("$argon2id$"),
        "an argon2id hash is stored:\n{text}"
    );
    assert!(!text.contains(PASSWORD), "the password is in the file");
    let stored = UsersFile::load(&file).unwrap();
    let alice = stored.get(&canonicalize("alice").unwrap()).unwrap();
    assert!(alice.verify(PASSWORD));
    assert!(!alice.verify("correct horse battery stapl"));

    let list = users_in(&file, &["list"], "");
    list.assert_ok();
    let line = list
        .stdout
        .lines()
        .find(|l| l.starts_with("alice"))
        .unwrap_or_else(|| panic!("alice is listed: {list:?}"));
    let (name, roles) = line.split_once('\t').expect("NAME<TAB>ROLES");
    assert_eq!(name, "alice");
    let mut roles: Vec<&str> = roles.split(',').collect();
    roles.sort_unstable();
    assert_eq!(roles, ["admin", "user"]);
    assert!(
        !list.stdout.contains("argon2"),
        "list shows a hash: {list:?}"
    );
    assert!(!list.stdout.contains('$'), "list shows a hash: {list:?}");
    list.assert_never_shows(PASSWORD);
}

#[test]
fn passwd_replaces_the_hash_and_keeps_the_roles() {
    let dir = TempDir::new("users-passwd");
    let file = users_file(&dir);
    users_in(&file, &["add", "alice", "--role", "ops"], PASSWORD).assert_ok();
    let before = stored_hash(&file);

    // Any spelling of the name reaches the same account.
    let passwd = users_in(&file, &["passwd", "ALICE"], NEW_PASSWORD);
    passwd.assert_ok();
    passwd.assert_never_shows(NEW_PASSWORD);
    let after = stored_hash(&file);
    assert_ne!(before, after, "the hash changed");

    let stored = UsersFile::load(&file).unwrap();
    let alice = stored.get(&canonicalize("alice").unwrap()).unwrap();
    assert!(alice.verify(NEW_PASSWORD));
    assert!(!alice.verify(PASSWORD), "the old password no longer works");
    assert_eq!(alice.roles()[0].as_str(), "ops");
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(NEW_PASSWORD)
    );

    let nobody = users_in(&file, &["passwd", "bob"], NEW_PASSWORD);
    assert_eq!(nobody.code, Some(2), "{nobody:?}");
    assert!(nobody.stderr.contains("no user bob"), "{nobody:?}");
}

#[test]
fn remove_deletes_the_user_and_a_second_remove_is_an_error() {
    let dir = TempDir::new("users-remove");
    let file = users_file(&dir);
    users_in(&file, &["add", "alice", "--role", "user"], PASSWORD).assert_ok();
    users_in(&file, &["add", "bob", "--role", "user"], PASSWORD).assert_ok();

    let removed = users_in(&file, &["remove", "Alice"], "");
    removed.assert_ok();
    assert!(removed.stdout.contains("removed alice"), "{removed:?}");
    let list = users_in(&file, &["list"], "");
    list.assert_ok();
    assert_eq!(list.stdout.trim(), "bob\tuser");

    let again = users_in(&file, &["remove", "alice"], "");
    assert_eq!(again.code, Some(2), "{again:?}");
    assert!(again.stderr.contains("no user alice"), "{again:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a rewritten file stays private: {mode:o}");
}

#[test]
fn a_name_that_exists_in_any_spelling_cannot_be_added_again() {
    let dir = TempDir::new("users-dup");
    let file = users_file(&dir);
    users_in(&file, &["add", "alice", "--role", "user"], PASSWORD).assert_ok();
    let before = std::fs::read_to_string(&file).unwrap();
    // Fullwidth capitals canonicalise to "alice" (RFC 8265 width mapping and case folding).
    for name in ["alice", "ALICE", "\u{FF21}\u{FF2C}\u{FF29}\u{FF23}\u{FF25}"] {
        let dup = users_in(&file, &["add", name, "--role", "admin"], NEW_PASSWORD);
        assert_eq!(dup.code, Some(2), "{name}: {dup:?}");
        assert!(dup.stderr.contains("user alice exists"), "{name}: {dup:?}");
        dup.assert_never_shows(NEW_PASSWORD);
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "the file is untouched"
    );
}

#[test]
fn a_short_password_is_refused_and_nothing_is_written() {
    let dir = TempDir::new("users-short");
    let file = users_file(&dir);
    for short in ["", "1234567", "sev3n!!"] {
        let out = users_in(&file, &["add", "alice", "--role", "user"], short);
        assert_eq!(out.code, Some(2), "{short:?}: {out:?}");
        assert!(out.stderr.contains("at least 8 characters"), "{out:?}");
        assert!(!file.exists(), "no file is created");
    }
    // Eight characters, counted as characters rather than bytes, are enough.
    users_in(&file, &["add", "alice", "--role", "user"], "éééééééé").assert_ok();
    let short = users_in(&file, &["passwd", "alice"], "short");
    assert_eq!(short.code, Some(2), "{short:?}");
}

#[test]
fn a_bad_username_is_refused_naming_the_problem() {
    let dir = TempDir::new("users-badname");
    let file = users_file(&dir);
    for (name, problem) in [
        ("al ice", "spaces"),
        ("al\u{200B}ice", "zero-width"),
        ("al\u{202E}ice", "bidirectional"),
        ("al\u{7}ice", "control"),
        ("", "empty"),
    ] {
        let out = users_in(&file, &["add", name, "--role", "user"], PASSWORD);
        assert_eq!(out.code, Some(2), "{name:?}: {out:?}");
        assert!(
            out.stderr.contains(problem),
            "{name:?}: expected {problem:?} in {:?}",
            out.stderr
        );
        out.assert_never_shows(PASSWORD);
        assert!(!file.exists(), "no file is created for {name:?}");
    }
}

#[test]
fn the_users_file_comes_from_the_flag_or_the_environment_and_is_required() {
    let dir = TempDir::new("users-path");
    let file = users_file(&dir);
    let line = format!("{PASSWORD}\n");
    for args in [
        &["add", "alice", "--role", "user"][..],
        &["passwd", "alice"],
        &["remove", "alice"],
        &["list"],
    ] {
        let out = users(args, &line, &[]);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains("--users-file"), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("PORTCULLIS_AUTH_USERS_FILE"),
            "{args:?}: {out:?}"
        );
    }
    let env = [("PORTCULLIS_AUTH_USERS_FILE", file.to_str().unwrap())];
    users(&["add", "alice", "--role", "user"], &line, &env).assert_ok();
    let list = users(&["list"], "", &env);
    list.assert_ok();
    assert_eq!(list.stdout.trim(), "alice\tuser");
}

#[test]
fn the_password_cannot_be_given_on_the_command_line() {
    let dir = TempDir::new("users-argv");
    let file = users_file(&dir);
    let f = file.to_str().unwrap();
    for args in [
        &[
            "add",
            "alice",
            "--role",
            "user",
            "--password",
            PASSWORD,
            "--users-file",
            f,
        ][..],
        &[
            "add",
            "alice",
            PASSWORD,
            "--role",
            "user",
            "--users-file",
            f,
        ],
    ] {
        let out = users(args, "", &[]);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(!file.exists(), "nothing is written for {args:?}");
    }
}

async fn login(gw: &GatewayProcess, user: &str, password: &str) -> Reply {
    let body = json!({ "username": user, "password": password }).to_string();
    let req = Request::post(gw.url("/auth/login"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request");
    Client::new().send(req).await.expect("the gateway answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_gateway_accepts_what_the_command_wrote_without_a_restart() {
    let dir = TempDir::new("users-e2e");
    let file = users_file(&dir);
    users_in(&file, &["add", "Alice", "--role", "user"], PASSWORD).assert_ok();

    // The login routes answer themselves: the upstream is never contacted.
    let gw = GatewayCmd::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--upstream", "http://127.0.0.1:1"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("PORTCULLIS_AUTH_USERS_FILE", file.to_str().unwrap())
        .start();

    let r = login(&gw, "alice", PASSWORD).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    // A new password takes effect at once; the old one stops working.
    let cmd = tokio::task::spawn_blocking({
        let file = file.clone();
        move || users_in(&file, &["passwd", "alice"], NEW_PASSWORD)
    });
    cmd.await.unwrap().assert_ok();
    let r = login(&gw, "ALICE", NEW_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = login(&gw, "alice", PASSWORD).await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));

    // A removed user cannot log in any more.
    let cmd = tokio::task::spawn_blocking({
        let file = file.clone();
        move || users_in(&file, &["remove", "alice"], "")
    });
    cmd.await.unwrap().assert_ok();
    let r = login(&gw, "alice", NEW_PASSWORD).await;
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));

    for line in gw.stdout_lines().iter().chain(gw.stderr_lines().iter()) {
        assert!(
            !line.contains(PASSWORD) && !line.contains(NEW_PASSWORD),
            "a password reached the log: {line}"
        );
    }
}
