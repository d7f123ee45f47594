//! Decisions and shared state for Portcullis, with no HTTP in sight.
//!
//! This crate holds what the protections decide and remember:
//!
//! - the [`Clock`] every time-based decision reads ([`ManualClock`] in tests);
//! - [`net`]: the client behind trusted proxies;
//! - [`ratelimit`]: quota arithmetic (GCRA) as pure functions;
//! - [`store`]: the in-memory and Redis backends with one semantics, and the routing
//!   between them by fail mode;
//! - [`breaker`]: the circuit breaker in front of Redis;
//! - [`auth`]: usernames, password hashes, the users file and the login-lockout policy;
//! - [`csrf`]: synchronizer tokens, signed, bound to a session and kept in the store;
//! - [`Secret`] for values that must never reach a log.
//!
//! Everything here is plain logic over plain types, tested without sockets (Redis
//! excepted), on a [`ManualClock`] where time matters.

pub mod audit;
pub mod auth;
pub mod breaker;
pub mod clock;
pub mod csrf;
pub mod net;
pub mod ratelimit;
pub mod secret;
pub mod session;
pub mod store;
pub mod token;

pub use clock::{Clock, ManualClock, SystemClock};
pub use secret::Secret;
