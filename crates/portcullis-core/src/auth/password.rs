//! Password hashing: argon2id with OWASP's parameters, and a verification that costs the
//! same whether or not the user exists.
//!
//! - [`hash`] makes a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) with a
//!   fresh 128-bit random salt, for the users file.
//! - [`verify`] checks a password against a PHC string, with the parameters the string
//!   carries (so hashes made with older parameters keep working), comparing in constant
//!   time.
//! - [`verify_unknown`] does the same work against a fixed dummy hash, computed once: a
//!   login for a user that does not exist must cost what a login with a wrong password
//!   costs, or the response time tells who has an account.
//!
//! The parameters are OWASP's Password Storage Cheat Sheet minimum for argon2id: 19 MiB of
//! memory, two passes, one lane (about 20–40 ms on one core of this class of machine).
//!
//! Each call is CPU- and memory-bound for tens of milliseconds: async callers run it in
//! `tokio::task::spawn_blocking`, never on a runtime worker, and bound how many run at
//! once (19 MiB each).
//!
//! # Security
//!
//! - A password is only ever held as `&str` for the duration of a call; what is stored is
//!   the PHC string, itself kept in a [`Secret`](crate::Secret) by the users file, so
//!   neither reaches a log.
//! - [`verify`] is as slow for a malformed PHC string as for a wrong password only if the
//!   string parses: the users file refuses malformed hashes at load
//!   ([`check_phc`]), so every known user costs one full argon2id evaluation.
//! - Passwords are compared as their UTF-8 bytes, without normalisation: what a user typed
//!   at enrolment is what they must type again.
//!
//! ```
//! use portcullis_core::auth::password;
//!
//! let phc = password::hash("correct horse battery staple").unwrap();
//! assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
//! assert!(password::verify("correct horse battery staple", &phc));
//! assert!(!password::verify("Tr0ub4dor&3", &phc));
//! password::verify_unknown("whatever was sent"); // same cost, no answer
//! ```

use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory cost in KiB: OWASP's 19 MiB for argon2id.
pub const M_COST_KIB: u32 = 19 * 1024;
/// Passes over the memory: OWASP's 2 at 19 MiB.
pub const T_COST: u32 = 2;
/// Lanes: 1, so one login uses one core.
pub const P_COST: u32 = 1;
/// The longest password [`hash`] accepts, in bytes: passphrases fit, and a megabyte paste
/// is refused rather than hashed.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The most memory a stored hash may ask for (1 GiB), so a hand-edited users file cannot
/// make each login allocate without bound.
pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
/// The most passes a stored hash may ask for.
pub const MAX_T_COST: u32 = 64;
/// The most lanes a stored hash may ask for.
pub const MAX_P_COST: u32 = 16;

/// Why a password could not be hashed, or a stored hash is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The password is empty.
    #[error("the password is empty")]
    Empty,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password is {bytes} bytes long; at most {max} are allowed", max = MAX_PASSWORD_BYTES)]
    TooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// The stored hash is not an argon2id PHC string with usable parameters.
    #[error("not an argon2id password hash: {0}")]
    BadHash(String),
    /// Hashing failed (the system's random source, or the argon2 implementation).
    #[error("hashing failed: {0}")]
    Internal(String),
}

fn hasher() -> Argon2<'static> {
    // The constants are within argon2's limits; `Params::new` only fails outside them.
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with argon2id and a fresh random salt; the PHC string to store.
///
/// Refuses an empty password and one longer than [`MAX_PASSWORD_BYTES`]. Blocking for tens
/// of milliseconds: call it from `spawn_blocking` in async code.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong {
            bytes: password.len(),
        });
    }
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Internal(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A malformed `phc` never matches.
///
/// Blocking for tens of milliseconds: call it from `spawn_blocking` in async code.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if check_parsed(&parsed).is_err() {
        return false;
    }
    hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// The dummy hash [`verify_unknown`] checks against: made once, with the same parameters
/// as every new hash, from a password nobody types.
static DUMMY: LazyLock<String> = LazyLock::new(|| {
    hash("portcullis: no such user; this hash only spends time")
        .expect("hashing a fixed password with fixed parameters works")
});

/// Spends the time of one [`verify`] against a hash made by [`hash`], and answers nothing:
/// call it when the user does not exist, so the response time does not tell.
///
/// The first call also makes the dummy hash (one more argon2id run); [`warm_up`] does that
/// at start-up instead.
pub fn verify_unknown(password: &str) {
    std::hint::black_box(verify(password, &DUMMY));
}

/// Makes the dummy hash now, so the first unknown user is not slower than the rest.
pub fn warm_up() {
    LazyLock::force(&DUMMY);
}

/// Checks that `phc` is an argon2id PHC string whose parameters are within this module's
/// bounds, without verifying anything. The users file calls it at load and on change.
pub fn check_phc(phc: &str) -> Result<(), PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|e| PasswordError::BadHash(e.to_string()))?;
    check_parsed(&parsed)
}

fn check_parsed(parsed: &PasswordHash) -> Result<(), PasswordError> {
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(PasswordError::BadHash(format!(
            "algorithm {} (expected argon2id)",
            parsed.algorithm.as_str()
        )));
    }
    let params = Params::try_from(parsed).map_err(|e| PasswordError::BadHash(e.to_string()))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(PasswordError::BadHash(format!(
            "parameters m={},t={},p={} exceed m={MAX_M_COST_KIB},t={MAX_T_COST},p={MAX_P_COST}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        )));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(PasswordError::BadHash("no salt or no hash".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn hash_then_verify() {
        let phc = hash("hunter2 but longer").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("hunter2 but longer", &phc));
        assert!(!verify("hunter2 but longer ", &phc));
        assert!(!verify("", &phc));
        check_phc(&phc).unwrap();
    }

    #[test]
    fn salts_differ() {
        let a = hash("same password").unwrap();
        let b = hash("same password").unwrap();
        assert_ne!(a, b);
        assert!(verify("same password", &a) && verify("same password", &b));
    }

    #[test]
    fn unicode_passwords_are_compared_as_typed() {
        let phc = hash("pässwörd").unwrap();
        assert!(verify("pässwörd", &phc));
        // The decomposed spelling is other bytes: not the same password.
        assert!(!verify("pa\u{308}sswo\u{308}rd", &phc));
    }

    #[test]
    fn refused_passwords() {
        let cases: &[(&str, String, PasswordError)] = &[
            ("empty", String::new(), PasswordError::Empty),
            (
                "too long",
                "x".repeat(MAX_PASSWORD_BYTES + 1),
                PasswordError::TooLong {
                    bytes: MAX_PASSWORD_BYTES + 1,
                },
            ),
        ];
        for (name, pw, want) in cases {
            assert_eq!(hash(pw).as_ref(), Err(want), "{name}");
        }
        assert!(
            hash(&"x".repeat(MAX_PASSWORD_BYTES)).is_ok(),
            "at the limit"
        );
    }

    #[test]
    fn malformed_hashes_never_match_and_are_refused() {
        let good = hash("pw").unwrap();
        let cases: &[(&str, String)] = &[
            ("empty", String::new()),
            ("not phc", "plaintext".into()),
            (
                "bcrypt",
                "$2b$12$abcdefghijklmnopqrstuuKPqFSHxdAVGQbm2zR8uKAe9MKBAqk2".into(),
            ),
            ("argon2i", good.replace("$argon2id$", "$argon2i$")),
            ("argon2d", good.replace("$argon2id$", "$argon2d$")),
            ("huge memory", good.replace("m=19456", "m=4194304")),
            ("many passes", good.replace("t=2", "t=1000")),
            ("no hash", good.rsplit_once('$').unwrap().0.to_owned()),
        ];
        for (name, phc) in cases {
            assert!(!verify("pw", phc), "{name}: matched");
            assert!(check_phc(phc).is_err(), "{name}: accepted");
        }
        // The error never quotes the hash.
        let e = check_phc(&good.replace("$argon2id$", "$argon2i$")).unwrap_err();
        assert!(!e.to_string().contains(good.rsplit_once('$').unwrap().1));
    }

    /// Not a timing test (those are measured outside, with statistics): it checks that the
    /// unknown-user path really runs argon2id, i.e. is nowhere near free.
    #[test]
    fn verify_unknown_does_the_work() {
        warm_up();
        let phc = hash("pw").unwrap();
        // The fastest of three runs each: robust to a busy machine pausing one of them.
        let fastest = |f: &dyn Fn()| {
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .min()
                .unwrap()
        };
        let known = fastest(&|| {
            verify("wrong", &phc);
        });
        let unknown = fastest(&|| verify_unknown("wrong"));
        assert!(
            unknown * 4 >= known && known * 4 >= unknown,
            "unknown user {unknown:?} vs known user {known:?}"
        );
        assert!(DUMMY.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }
}
