//! Access tokens: the gateway's signing keys, issuing, and verification per RFC 8725.
//!
//! Access tokens are JWTs signed with Ed25519 (`alg: EdDSA`), typed `at+jwt`, carrying
//! `sub`, `roles`, `sid` (the refresh family), `iss`, `aud`, `exp`, `iat`, `nbf` and `jti`.
//!
//! Verification ([`Verifier`]) never lets the token choose how it is checked:
//!
//! - the key is found by `kid`, used only as an exact lookup (never a path, a query or a
//!   URL); a token without a known `kid` is refused;
//! - the algorithm is pinned per key: `alg` must be the key's own (`EdDSA`), so `none`
//!   and HS/RS confusion are refused before any signature check;
//! - `typ` must be `at+jwt`, so an ID token or another JWT kind is never taken for an
//!   access token;
//! - `jku`, `jwk`, `x5u` and `x5c` headers are ignored: no token makes the gateway fetch
//!   anything or trust a key it carries;
//! - `exp`, `nbf` (with [`LEEWAY`]), `iss`, `aud`, and the presence of every claim are
//!   checked on the injected clock.
//!
//! # Security
//!
//! Tokens are bearer credentials: anyone holding one is its subject until it expires or
//! its session (`sid`) is revoked. Keep `auth.access_ttl` short (10 minutes by default).

pub mod external;
mod keys;
mod verify;

pub use keys::{KeyError, KeySet};
pub use verify::{
    AccessClaims, Identity, LEEWAY, RawHeader, TokenError, Verifier, describe_header, read_header,
};
