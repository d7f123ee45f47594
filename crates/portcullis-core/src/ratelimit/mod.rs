//! Rate-limit decisions, as pure functions over time and stored state.
//!
//! [`gcra`] is the Generic Cell Rate Algorithm: one timestamp per key (the *theoretical
//! arrival time*, TAT), no counters to reset, exact at any instant. The same arithmetic
//! runs in memory (the in-memory store calls [`gcra::decide`] under its shard lock) and in
//! Redis (the Lua script in `store/lua/gcra.lua`, on the server's clock), so both backends
//! admit exactly the same requests.

pub mod gcra;

pub use gcra::{GcraDecision, GcraParams};
