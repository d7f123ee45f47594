//! Shared state: the store every protection keeps its state in.
//!
//! Two backends implement [`Backend`] with the same semantics, checked by one conformance
//! suite (in `portcullis-testkit`) against both:
//!
//! - [`MemoryStore`]: the embedded default, bounded, sharded, TTLs on the injected clock;
//! - [`RedisStore`]: shared across instances, one multiplexed connection, a timeout on
//!   every call, a [`Breaker`](crate::breaker::Breaker) in front.
//!
//! [`SharedStore`] routes each call to Redis or to the local memory store, according to
//! the breaker and to the caller's [`FailMode`], so each protection states its fail mode
//! in one word and the routing is written once.
//!
//! The atomic multi-step operations (a GCRA check) have one definition of their
//! semantics, in [`crate::ratelimit`], and two implementations: a Lua script run by SHA
//! on the server's clock, and the same function under a shard lock in memory.
//!
//! # Keys
//!
//! Keys are namespaced by the configured prefix (`portcullis:` by default), then a short
//! kind (`rl:` for rate limits), then the caller's key. An operation touching one key
//! needs no hash tag; multi-key operations put a shared `{tag}` in every key so a future
//! Redis Cluster keeps them in one slot.

pub mod coalesce;
pub mod lockout;
pub mod maps;
pub mod memory;
pub mod purges;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sessions;
pub mod shared;
pub mod sliding;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::ratelimit::{GcraDecision, GcraParams};

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{RedisConfig, RedisStore};
pub use shared::{FailMode, Labelled, Routed, SharedStore};

/// Why a store call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No connection could be made, or it broke.
    #[error("connection failed: {0}")]
    Connection(String),
    /// No answer within `command_timeout`.
    #[error("timed out")]
    Timeout,
    /// The server refused (out of memory, read-only replica, bad password, …).
    #[error("server error: {0}")]
    Server(String),
    /// The breaker is open: the call was not attempted.
    #[error("short-circuited: the breaker is open")]
    ShortCircuited,
    /// The stored value is not what the operation expects.
    #[error("unexpected value: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The `result` label of `portcullis_store_calls_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ShortCircuited => "short_circuited",
            _ => "error",
        }
    }
}

/// The outcome of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// A backend's outcome of one call, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// Answered.
    Ok,
    /// Failed.
    Error,
    /// Timed out.
    Timeout,
    /// Not attempted: the breaker is open.
    ShortCircuited,
}

impl CallResult {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::ShortCircuited => "short_circuited",
        }
    }
}

/// Told about every call and breaker change, so the gateway can count and log them
/// without this crate knowing about metrics.
pub trait StoreObserver: Send + Sync + fmt::Debug {
    /// One call to `backend` ended with `result`.
    fn call(&self, backend: &'static str, result: CallResult);
    /// The breaker of `backend` changed state.
    fn breaker(
        &self,
        backend: &'static str,
        from: crate::breaker::BreakerState,
        to: crate::breaker::BreakerState,
        reason: &str,
    );
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl StoreObserver for NoObserver {
    fn call(&self, _: &'static str, _: CallResult) {}
    fn breaker(
        &self,
        _: &'static str,
        _: crate::breaker::BreakerState,
        _: crate::breaker::BreakerState,
        _: &str,
    ) {
    }
}

/// Told about each call a feature makes to the [`SharedStore`], with its start and end, so
/// the gateway can trace it as a span of the request that made it. Only installed while
/// requests are traced: without one, a call pays for one branch.
pub trait CallTracer: Send + Sync + fmt::Debug {
    /// The call `op` (`get`, `rate_limit`, `lockout_check`, …) to `backend` ran from
    /// `start` to `end` and was answered as `routed` ([`Routed::label`]).
    fn call(
        &self,
        backend: &'static str,
        op: &'static str,
        start: std::time::SystemTime,
        end: std::time::SystemTime,
        routed: &'static str,
    );
}

/// The operations every backend provides, with identical semantics.
///
/// Every value has a time to live; a key whose TTL passed is absent.
pub trait Backend: Send + Sync {
    /// The value of `key`.
    fn get(&self, key: &str) -> impl Future<Output = StoreResult<Option<Bytes>>> + Send;
    /// Sets `key` to `value` for `ttl`.
    fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Sets `key` only if absent; whether it was set.
    fn set_nx(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Deletes `key`; whether it existed.
    fn delete(&self, key: &str) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Adds `by` to the integer at `key` (0 if absent) and returns the sum. A key without a
    /// TTL gets `ttl`; an existing TTL is kept.
    fn incr(
        &self,
        key: &str,
        by: i64,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<i64>> + Send;
    /// One GCRA decision for `key`, atomically.
    fn gcra(
        &self,
        key: &str,
        params: GcraParams,
        cost: u32,
    ) -> impl Future<Output = StoreResult<GcraDecision>> + Send;
    /// `n` GCRA checks of cost 1 for `key` at one instant, atomically: the decisions of
    /// [`decide_batch`](crate::ratelimit::gcra::decide_batch), one per
    /// request in order, and the state written once.
    fn gcra_batch(
        &self,
        key: &str,
        params: GcraParams,
        n: u32,
    ) -> impl Future<Output = StoreResult<Vec<GcraDecision>>> + Send;
    /// The remaining time to live of `key`, if it exists.
    fn ttl(&self, key: &str) -> impl Future<Output = StoreResult<Option<Duration>>> + Send;
    /// Checks the backend answers.
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
}
