//! Decisions and shared state for Portcullis, with no HTTP in sight.
//!
//! This crate holds what the protections decide and remember: the [`Clock`] every
//! time-based decision reads, the [`net`] rules for finding the client behind proxies,
//! and [`Secret`] for values that must never reach a log. The HTTP face lives in the
//! `portcullis` crate; the gateway binary in `portcullis-gateway`.
//!
//! Everything here is plain logic over plain types, so it is tested without sockets,
//! and on a [`ManualClock`] where time matters.

pub mod clock;
pub mod net;
pub mod secret;

pub use clock::{Clock, ManualClock, SystemClock};
pub use secret::Secret;
