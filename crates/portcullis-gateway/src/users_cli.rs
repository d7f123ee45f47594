//! `portcullis users add|passwd|remove|list`: the users file, with argon2id hashes.
//!
//! Passwords are read from the terminal without echo (twice, to confirm), or as one line
//! of standard input when it is not a terminal — never from the command line, where any
//! user of the machine could read them. The file is replaced atomically and stays 0600.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use portcullis_core::auth::password;
use portcullis_core::auth::username::{Username, canonicalize};
use portcullis_core::auth::users::{Role, UsersFile};

/// Shortest password accepted (OWASP ASVS: at least 8 characters).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted; longer ones are more likely a pasting mistake.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct CliError {
    /// 2 for bad input, 1 for everything else.
    pub code: u8,
    /// What to print.
    pub message: String,
}

fn input(message: impl Into<String>) -> CliError {
    CliError {
        code: 2,
        message: message.into(),
    }
}

fn failure(message: impl Into<String>) -> CliError {
    CliError {
        code: 1,
        message: message.into(),
    }
}

/// The users file to use: `--users-file`, else `PORTCULLIS_AUTH_USERS_FILE`.
pub fn users_path(flag: Option<PathBuf>) -> Result<PathBuf, CliError> {
    flag.or_else(|| std::env::var_os("PORTCULLIS_AUTH_USERS_FILE").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            input("name the users file with --users-file FILE (or PORTCULLIS_AUTH_USERS_FILE)")
        })
}

fn name(raw: &str) -> Result<Username, CliError> {
    canonicalize(raw).map_err(|e| input(format!("username {raw:?}: {e}")))
}

fn load(path: &Path) -> Result<UsersFile, CliError> {
    UsersFile::load_or_empty(path).map_err(|e| failure(e.to_string()))
}

fn save(file: &UsersFile, path: &Path) -> Result<(), CliError> {
    file.save(path).map_err(|e| failure(e.to_string()))
}

/// Reads a new password: from the terminal twice, or one line of standard input.
fn read_password() -> Result<String, CliError> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")
            .map_err(|e| failure(format!("cannot read the password: {e}")))?;
        let again = rpassword::prompt_password("Again: ")
            .map_err(|e| failure(format!("cannot read the password: {e}")))?;
        if first != again {
            return Err(input("the passwords differ"));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| failure(format!("cannot read the password from standard input: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(input(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(input(format!(
            "the password must have at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(password)
}

fn roles(raw: &[String]) -> Result<Vec<Role>, CliError> {
    raw.iter()
        .map(|r| Role::new(r).map_err(|e| input(format!("role {r:?}: {e}"))))
        .collect()
}

/// `users add NAME --role R…`: a new user (refused if it exists).
pub fn add(path: &Path, raw_name: &str, raw_roles: &[String]) -> Result<String, CliError> {
    let user = name(raw_name)?;
    let roles = roles(raw_roles)?;
    let mut file = load(path)?;
    if file.get(&user).is_some() {
        return Err(input(format!(
            "user {user} exists; use `portcullis users passwd` to change the password"
        )));
    }
    let password = read_password()?;
    let phc = password::hash(&password).map_err(|e| failure(e.to_string()))?;
    file.upsert(user.clone(), phc, roles)
        .map_err(|e| failure(e.to_string()))?;
    save(&file, path)?;
    Ok(format!("added {user} to {}", path.display()))
}

/// `users passwd NAME`: a new password for an existing user.
pub fn passwd(path: &Path, raw_name: &str) -> Result<String, CliError> {
    let user = name(raw_name)?;
    let mut file = load(path)?;
    let Some(existing) = file.get(&user) else {
        return Err(input(format!("no user {user} in {}", path.display())));
    };
    let roles = existing.roles().to_vec();
    let password = read_password()?;
    let phc = password::hash(&password).map_err(|e| failure(e.to_string()))?;
    file.upsert(user.clone(), phc, roles)
        .map_err(|e| failure(e.to_string()))?;
    save(&file, path)?;
    Ok(format!("changed the password of {user}"))
}

/// `users remove NAME`.
pub fn remove(path: &Path, raw_name: &str) -> Result<String, CliError> {
    let user = name(raw_name)?;
    let mut file = load(path)?;
    if file.remove(&user).is_none() {
        return Err(input(format!("no user {user} in {}", path.display())));
    }
    save(&file, path)?;
    Ok(format!("removed {user}"))
}

/// `users list`: names and roles, never hashes.
pub fn list(path: &Path) -> Result<String, CliError> {
    let file = load(path)?;
    let mut out = String::new();
    for (name, user) in file.list() {
        let roles: Vec<&str> = user.roles().iter().map(Role::as_str).collect();
        out.push_str(&format!("{name}\t{}\n", roles.join(",")));
    }
    Ok(out.trim_end().to_owned())
}
