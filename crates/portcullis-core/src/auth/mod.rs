//! Who may sign in, decided without HTTP.
//!
//! - [`username`]: RFC 8265 canonicalisation, once at the edge, into a [`Username`];
//! - [`password`]: argon2id hashing and a verification that costs the same for unknown
//!   users;
//! - [`users`]: the users file (canonical names, hashes, roles), saved atomically;
//! - [`lockout`]: the login-lockout policy (per pair, per account, per source) as pure
//!   functions; its atomic store operations are in [`crate::store::lockout`].
//!
//! A login, put together by the gateway:
//!
//! 1. canonicalise the username; if refused, record a source failure and answer 400;
//! 2. check the lockout for (account, source); if locked, answer 429 with `Retry-After`
//!    without looking at the password;
//! 3. verify the password (or [`password::verify_unknown`] when there is no such user), in
//!    `spawn_blocking`;
//! 4. record the failure or the success.

pub mod lockout;
pub mod password;
pub mod username;
pub mod users;

pub use lockout::{LockDecision, LockScope, LockoutPolicy};
pub use username::{Username, UsernameError, canonicalize};
pub use users::{Role, User, UsersError, UsersFile};
