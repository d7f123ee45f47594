//! Routing each call to Redis or to the local memory store, by the caller's fail mode.
//!
//! # Fail mode
//!
//! Each feature names what it does when Redis is unavailable (the breaker is open, or the
//! call failed or timed out) with one [`FailMode`], and gets back a [`Routed`] that says
//! where the answer came from:
//!
//! | mode | when Redis is unavailable | used by |
//! | --- | --- | --- |
//! | `Local` | the same operation on the in-memory store (`Routed::Local`) | rate limits (`local`), login lockout counters, the response cache |
//! | `Allow` | `Routed::Allow`: the caller lets the request through | rate limits with `on_redis_down = "allow"` |
//! | `Deny` | `Routed::Unavailable`: the caller refuses with 503 | routes with `on_redis_down = "deny"` |
//! | `Stateless` | `Routed::Stateless`: the caller checks what it can without state | CSRF (signature, binding, expiry) |
//! | `FailClosed` | `Routed::Unavailable` | refresh-token rotation: reuse detection needs the shared state |
//!
//! Without Redis configured, the memory store *is* the shared state (one instance), and
//! every answer is `Routed::Shared`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

#[cfg(feature = "redis")]
use super::RedisStore;
use super::coalesce::Coalescer;
use super::{Backend, CallTracer, MemoryStore, StoreResult};
use crate::ratelimit::{GcraDecision, GcraParams};

/// What a feature does when the shared store is unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailMode {
    /// Use the in-memory store of this instance.
    Local,
    /// Let the request through.
    Allow,
    /// Refuse the request (503).
    Deny,
    /// Check what can be checked without state.
    Stateless,
    /// Refuse the request (503): correctness needs the shared state.
    FailClosed,
}

/// Where an answer came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed<T> {
    /// The shared store answered.
    Shared(T),
    /// The shared store was unavailable; the local store answered (`FailMode::Local`).
    Local(T),
    /// The shared store was unavailable; let the request through (`FailMode::Allow`).
    Allow,
    /// The shared store was unavailable; check statelessly (`FailMode::Stateless`).
    Stateless,
    /// The shared store was unavailable; refuse (`Deny`, `FailClosed`).
    Unavailable,
}

impl<T> Routed<T> {
    /// The answer, from the shared or the local store.
    pub fn value(self) -> Option<T> {
        match self {
            Routed::Shared(v) | Routed::Local(v) => Some(v),
            _ => None,
        }
    }

    /// Whether the answer did not come from the shared store.
    pub fn is_fallback(&self) -> bool {
        !matches!(self, Routed::Shared(_))
    }
}

/// Where a store call's answer came from, in one word (for traces).
pub trait Labelled {
    /// `shared`, `local`, `allow`, `stateless`, `unavailable`, or `ok` / `error` for calls
    /// that are not routed.
    fn label(&self) -> &'static str;
}

impl<T> Labelled for Routed<T> {
    fn label(&self) -> &'static str {
        match self {
            Routed::Shared(_) => "shared",
            Routed::Local(_) => "local",
            Routed::Allow => "allow",
            Routed::Stateless => "stateless",
            Routed::Unavailable => "unavailable",
        }
    }
}

impl<T> Labelled for StoreResult<T> {
    fn label(&self) -> &'static str {
        match self {
            Ok(_) => "ok",
            Err(_) => "error",
        }
    }
}

pub(super) enum Backends {
    Memory,
    #[cfg(feature = "redis")]
    Redis(RedisStore),
}

pub(super) struct Inner {
    pub(super) prefix: String,
    pub(super) local: MemoryStore,
    pub(super) shared: Backends,
    /// Open batches of GCRA checks (Redis only).
    pub(super) batches: Coalescer,
    /// Told about every call while requests are traced.
    pub(super) tracer: Option<Arc<dyn CallTracer>>,
}

/// The store the protections use. Clones share everything.
#[derive(Clone)]
pub struct SharedStore {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("backend", &self.backend_name())
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

macro_rules! routed {
    ($self:ident, $mode:expr, |$b:ident| $op:expr) => {{
        match &$self.inner.shared {
            Backends::Memory => {
                let $b = &$self.inner.local;
                match $op.await {
                    Ok(v) => Routed::Shared(v),
                    Err(_) => Routed::Unavailable,
                }
            }
            #[cfg(feature = "redis")]
            Backends::Redis(r) => {
                let $b = r;
                match $op.await {
                    Ok(v) => Routed::Shared(v),
                    Err(_) => {
                        let $b = &$self.inner.local;
                        $self.fallback($mode, $op).await
                    }
                }
            }
        }
    }};
}

impl SharedStore {
    /// One instance, state in memory.
    pub fn memory(local: MemoryStore, prefix: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                prefix: prefix.to_owned(),
                local,
                shared: Backends::Memory,
                batches: Coalescer::default(),
                tracer: None,
            }),
        }
    }

    /// State in Redis, with `local` for fallbacks.
    #[cfg(feature = "redis")]
    pub fn redis(redis: RedisStore, local: MemoryStore, prefix: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                prefix: prefix.to_owned(),
                local,
                shared: Backends::Redis(redis),
                batches: Coalescer::default(),
                tracer: None,
            }),
        }
    }

    /// Tells `tracer` about every call from now on. Call it while building the store,
    /// before it is cloned.
    ///
    /// # Panics
    ///
    /// When the store was already cloned.
    #[must_use]
    pub fn with_tracer(mut self, tracer: Arc<dyn CallTracer>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_tracer is called before the store is shared")
            .tracer = Some(tracer);
        self
    }

    /// Runs one call, telling the tracer (if any) about it.
    pub(super) async fn traced<R: Labelled>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = R>,
    ) -> R {
        let Some(tracer) = &self.inner.tracer else {
            return call.await;
        };
        let start = std::time::SystemTime::now();
        let r = call.await;
        tracer.call(
            self.backend_name(),
            op,
            start,
            std::time::SystemTime::now(),
            r.label(),
        );
        r
    }

    /// `memory` or `redis`.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner.shared {
            Backends::Memory => "memory",
            #[cfg(feature = "redis")]
            Backends::Redis(_) => super::redis::BACKEND,
        }
    }

    /// The Redis backend, when configured.
    #[cfg(feature = "redis")]
    pub fn redis_backend(&self) -> Option<&RedisStore> {
        match &self.inner.shared {
            Backends::Redis(r) => Some(r),
            Backends::Memory => None,
        }
    }

    /// The local memory store.
    pub fn local(&self) -> &MemoryStore {
        &self.inner.local
    }

    /// The full key for a `kind` (`rl`, `csrf`, …) and an id: `{prefix}:{kind}:{id}`.
    pub fn key(&self, kind: &str, id: &str) -> String {
        let mut k = String::with_capacity(self.inner.prefix.len() + kind.len() + id.len() + 2);
        k.push_str(&self.inner.prefix);
        k.push(':');
        k.push_str(kind);
        k.push(':');
        k.push_str(id);
        k
    }

    pub(super) async fn fallback<T>(
        &self,
        mode: FailMode,
        local: impl std::future::Future<Output = StoreResult<T>>,
    ) -> Routed<T> {
        match mode {
            FailMode::Local => match local.await {
                Ok(v) => Routed::Local(v),
                Err(_) => Routed::Unavailable,
            },
            FailMode::Allow => Routed::Allow,
            FailMode::Stateless => Routed::Stateless,
            FailMode::Deny | FailMode::FailClosed => Routed::Unavailable,
        }
    }

    /// `get`, routed.
    pub async fn get(&self, key: &str, mode: FailMode) -> Routed<Option<Bytes>> {
        self.traced("get", async { routed!(self, mode, |b| b.get(key)) })
            .await
    }

    /// `set`, routed.
    pub async fn set(&self, key: &str, value: Bytes, ttl: Duration, mode: FailMode) -> Routed<()> {
        self.traced("set", async {
            routed!(self, mode, |b| b.set(key, value.clone(), ttl))
        })
        .await
    }

    /// `set_nx`, routed.
    pub async fn set_nx(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        mode: FailMode,
    ) -> Routed<bool> {
        self.traced("set_nx", async {
            routed!(self, mode, |b| b.set_nx(key, value.clone(), ttl))
        })
        .await
    }

    /// `delete`, routed.
    pub async fn delete(&self, key: &str, mode: FailMode) -> Routed<bool> {
        self.traced("delete", async { routed!(self, mode, |b| b.delete(key)) })
            .await
    }

    /// `incr`, routed.
    pub async fn incr(&self, key: &str, by: i64, ttl: Duration, mode: FailMode) -> Routed<i64> {
        self.traced("incr", async {
            routed!(self, mode, |b| b.incr(key, by, ttl))
        })
        .await
    }

    /// A GCRA decision: `shared` quota against Redis, `local` quota (e.g. divided by the
    /// number of instances) when falling back to memory.
    pub async fn gcra(
        &self,
        key: &str,
        shared: GcraParams,
        local: GcraParams,
        cost: u32,
        mode: FailMode,
    ) -> Routed<GcraDecision> {
        match &self.inner.shared {
            Backends::Memory => match self.inner.local.gcra(key, shared, cost).await {
                Ok(d) => Routed::Shared(d),
                Err(_) => Routed::Unavailable,
            },
            #[cfg(feature = "redis")]
            Backends::Redis(r) => match r.gcra(key, shared, cost).await {
                Ok(d) => Routed::Shared(d),
                Err(_) => {
                    self.fallback(mode, self.inner.local.gcra(key, local, cost))
                        .await
                }
            },
        }
    }

    /// `n` GCRA checks of cost 1 at one instant, decided together ([`Backend::gcra_batch`]):
    /// `shared` quota against Redis, `local` quota when falling back to memory, as
    /// [`gcra`](Self::gcra) routes one.
    pub async fn gcra_batch(
        &self,
        key: &str,
        shared: GcraParams,
        local: GcraParams,
        n: u32,
        mode: FailMode,
    ) -> Routed<Vec<GcraDecision>> {
        match &self.inner.shared {
            Backends::Memory => match self.inner.local.gcra_batch(key, shared, n).await {
                Ok(d) => Routed::Shared(d),
                Err(_) => Routed::Unavailable,
            },
            #[cfg(feature = "redis")]
            Backends::Redis(r) => match r.gcra_batch(key, shared, n).await {
                Ok(d) => Routed::Shared(d),
                Err(_) => {
                    self.fallback(mode, self.inner.local.gcra_batch(key, local, n))
                        .await
                }
            },
        }
    }

    /// Pings the shared store through its breaker every `interval` (five times as often
    /// while the breaker is not closed, so probes come soon after the open period), so an
    /// idle gateway notices an outage and a recovery; and purges expired local entries
    /// every ten intervals. Runs until the returned task is aborted.
    pub fn spawn_maintenance(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut last_purge = tokio::time::Instant::now();
            loop {
                #[allow(unused_mut)]
                let mut wait = interval;
                #[cfg(feature = "redis")]
                if let Backends::Redis(r) = &store.inner.shared
                    && r.breaker_state() != crate::breaker::BreakerState::Closed
                {
                    wait = interval / 5;
                }
                tokio::time::sleep(wait).await;
                #[cfg(feature = "redis")]
                if let Backends::Redis(r) = &store.inner.shared {
                    let _ = r.ping().await;
                }
                if last_purge.elapsed() >= interval * 10 {
                    store.inner.local.purge_expired();
                    last_purge = tokio::time::Instant::now();
                }
            }
        })
    }
}
