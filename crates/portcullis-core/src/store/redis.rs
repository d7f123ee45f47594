//! The Redis backend: shared across instances, bounded in time, behind a breaker.
//!
//! - **One multiplexed connection**, pipelining every caller's commands. It is made
//!   lazily, by one background attempt at a time (bounded by `connect_timeout`) that
//!   every waiting caller shares; the gateway starts even when Redis is down.
//! - **Every call is bounded by `command_timeout`**, connecting included: no request
//!   waits on a dead Redis longer than that.
//! - **After a timeout or an I/O error the connection is discarded**, so a late reply can
//!   never be paired with a later command, and the next call reconnects.
//! - **Every call goes through the [`Breaker`]**: while it is open no call, and so no
//!   connection attempt, reaches Redis except the half-open probes. A failed connection
//!   attempt fails the call that waited for it, so it counts.
//! - **Scripts run by SHA** (`EVALSHA`); after a restart (`NOSCRIPT`) they are loaded
//!   again transparently. They read the server's clock (`TIME`), so instances with
//!   skewed clocks still agree.
//!
//! # Fail mode
//!
//! This backend only reports failures, typed ([`StoreError`]); what a feature does then
//! is decided once, in [`SharedStore`](super::SharedStore), by the feature's
//! [`FailMode`](super::FailMode).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, Script};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Backend, CallResult, StoreError, StoreObserver, StoreResult};
use crate::Clock;
use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::ratelimit::gcra::{GcraBatch, GcraDecision, GcraParams};
use crate::secret::Secret;

/// The label of this backend in metrics and `/readyz`.
pub const BACKEND: &str = "redis";

/// Settings of the Redis backend (`[redis]`).
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL, with password and database if any.
    pub url: Secret<String>,
    /// Bound on every call.
    pub command_timeout: Duration,
    /// Bound on a connection attempt.
    pub connect_timeout: Duration,
    /// The breaker's settings.
    pub breaker: BreakerConfig,
}

/// The outcome of a connection attempt, once known: the waiters' error, typed.
type Attempt = watch::Receiver<Option<StoreResult<()>>>;

enum Conn {
    Down,
    Connecting(Attempt),
    Ready {
        conn: MultiplexedConnection,
        generation: u64,
    },
}

struct Inner {
    client: redis::Client,
    command_timeout: Duration,
    connect_timeout: Duration,
    breaker: Breaker,
    observer: Arc<dyn StoreObserver>,
    conn: Mutex<Conn>,
    generation: Mutex<u64>,
    last_error: Mutex<Option<String>>,
    gcra: Script,
    gcra_batch: Script,
    incr: Script,
}

/// The Redis backend. Clones share the connection and the breaker.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("breaker", &self.inner.breaker.state())
            .field("command_timeout", &self.inner.command_timeout)
            .finish_non_exhaustive()
    }
}

/// Turns a client error into ours; whether the connection must be discarded.
fn classify(e: &RedisError) -> (StoreError, bool) {
    if e.is_timeout() {
        return (StoreError::Timeout, true);
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return (StoreError::Connection(e.to_string()), true);
    }
    match e.kind() {
        ErrorKind::Server(_) => (StoreError::Server(e.to_string()), false),
        ErrorKind::Io => (StoreError::Connection(e.to_string()), true),
        _ => (StoreError::Server(e.to_string()), false),
    }
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisStore {
    /// A store for `cfg.url`; connects on first use. Fails only on a malformed URL.
    pub fn new(
        cfg: RedisConfig,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn StoreObserver>,
    ) -> Result<Self, String> {
        let client = redis::Client::open(cfg.url.expose().as_str()).map_err(|e| {
            // The client's message may quote the URL; never pass it on.
            let _ = e;
            "not a valid redis:// or rediss:// URL".to_owned()
        })?;
        let obs = observer.clone();
        let breaker =
            Breaker::new(cfg.breaker, clock).with_listener(Arc::new(move |from, to, reason| {
                obs.breaker(BACKEND, from, to, reason);
            }));
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                command_timeout: cfg.command_timeout,
                connect_timeout: cfg.connect_timeout,
                breaker,
                observer,
                conn: Mutex::new(Conn::Down),
                generation: Mutex::new(0),
                last_error: Mutex::new(None),
                gcra: Script::new(include_str!("lua/gcra.lua")),
                gcra_batch: Script::new(include_str!("lua/gcra_batch.lua")),
                incr: Script::new(include_str!("lua/incr.lua")),
            }),
        })
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// The most recent error, if any call failed since the last success.
    pub fn last_error(&self) -> Option<String> {
        self.inner.last_error.lock().expect("lock").clone()
    }

    /// The SHA1 of the GCRA script, as `EVALSHA` takes it.
    pub fn gcra_sha(&self) -> &str {
        self.inner.gcra.get_hash()
    }

    /// The GCRA script's source.
    pub fn gcra_source() -> &'static str {
        include_str!("lua/gcra.lua")
    }

    /// `n` GCRA checks of cost 1 of `key` in one script call (`lua/gcra_batch.lua`), as
    /// the server decided them: its time, the TAT it started from and how many it
    /// admitted. [`Backend::gcra_batch`] turns this into the `n` decisions.
    pub async fn gcra_batch_outcome(
        &self,
        key: &str,
        params: GcraParams,
        n: u32,
    ) -> StoreResult<GcraBatch> {
        let script = &self.inner.gcra_batch;
        let r: Vec<i64> = self
            .call(|mut c| async move {
                script
                    .key(key)
                    .arg(params.emission_us)
                    .arg(params.capacity_us)
                    .arg(n)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let corrupt = || StoreError::Corrupt(format!("the GCRA batch script returned {r:?}"));
        let [now, tat, admitted] = r[..] else {
            return Err(corrupt());
        };
        let (Ok(now_us), Ok(tat_us), Ok(admitted)) = (
            u64::try_from(now),
            u64::try_from(tat),
            u32::try_from(admitted),
        ) else {
            return Err(corrupt());
        };
        if tat_us < now_us || admitted > n {
            return Err(corrupt());
        }
        Ok(GcraBatch {
            now_us,
            tat_us,
            admitted,
        })
    }

    fn discard(&self, generation: u64) {
        let mut g = self.inner.conn.lock().expect("lock");
        if let Conn::Ready {
            generation: current,
            ..
        } = &*g
            && *current == generation
        {
            *g = Conn::Down;
        }
    }

    fn start_connecting(&self) -> Attempt {
        let (tx, rx) = watch::channel(None);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(inner.connect_timeout))
                .set_response_timeout(Some(inner.command_timeout));
            let attempt = tokio::time::timeout(
                inner.connect_timeout,
                inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await;
            let (next, outcome) = match attempt {
                Ok(Ok(conn)) => {
                    let mut generation = inner.generation.lock().expect("lock");
                    *generation += 1;
                    let generation = *generation;
                    (Conn::Ready { conn, generation }, Ok(()))
                }
                Ok(Err(e)) => {
                    // A refused password stays a `Server` error, a refused connection a
                    // `Connection` error: the waiters get the attempt's own error, typed.
                    let err = classify(&e).0;
                    *inner.last_error.lock().expect("lock") = Some(err.to_string());
                    (Conn::Down, Err(err))
                }
                Err(_) => {
                    *inner.last_error.lock().expect("lock") = Some("connect timed out".into());
                    (Conn::Down, Err(StoreError::Timeout))
                }
            };
            *inner.conn.lock().expect("lock") = next;
            let _ = tx.send(Some(outcome));
        });
        rx
    }

    async fn connection(&self, deadline: Instant) -> StoreResult<(MultiplexedConnection, u64)> {
        let mut rx = {
            let mut g = self.inner.conn.lock().expect("lock");
            match &*g {
                Conn::Ready { conn, generation } => return Ok((conn.clone(), *generation)),
                Conn::Connecting(rx) => rx.clone(),
                Conn::Down => {
                    let rx = self.start_connecting();
                    *g = Conn::Connecting(rx.clone());
                    rx
                }
            }
        };
        if rx.borrow().is_none()
            && tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
        {
            return Err(StoreError::Timeout);
        }
        if let Conn::Ready { conn, generation } = &*self.inner.conn.lock().expect("lock") {
            return Ok((conn.clone(), *generation));
        }
        // Not `last_error`: other calls overwrite it, and it holds a `Display`ed error
        // (wrapping it again nested "connection failed: " once per waiter, and turned
        // timeouts and refused passwords into connection errors).
        match &*rx.borrow() {
            Some(Err(e)) => Err(e.clone()),
            _ => Err(StoreError::Connection("cannot connect".into())),
        }
    }

    /// Runs `op` on the connection, through the breaker and within `command_timeout`.
    /// Every Redis operation, the feature-specific scripts included, goes through here.
    pub(crate) async fn call<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let inner = &self.inner;
        let Some(permit) = inner.breaker.acquire() else {
            inner.observer.call(BACKEND, CallResult::ShortCircuited);
            return Err(StoreError::ShortCircuited);
        };
        let start = Instant::now();
        let deadline = start + inner.command_timeout;
        let result = match self.connection(deadline).await {
            Err(e) => Err(e),
            Ok((conn, generation)) => match tokio::time::timeout_at(deadline, op(conn)).await {
                Err(_) => {
                    self.discard(generation);
                    Err(StoreError::Timeout)
                }
                Ok(Err(e)) => {
                    let (err, drop_conn) = classify(&e);
                    if drop_conn {
                        self.discard(generation);
                    }
                    Err(err)
                }
                Ok(Ok(v)) => Ok(v),
            },
        };
        let healthy = matches!(result, Ok(_) | Err(StoreError::Corrupt(_)));
        inner.breaker.record(permit, healthy, start.elapsed());
        let label = match &result {
            Ok(_) => CallResult::Ok,
            Err(StoreError::Timeout) => CallResult::Timeout,
            Err(_) => CallResult::Error,
        };
        inner.observer.call(BACKEND, label);
        if let Err(e) = &result {
            *inner.last_error.lock().expect("lock") = Some(e.to_string());
        }
        result
    }
}

impl Backend for RedisStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        self.call(|mut c| async move {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(&mut c).await?;
            Ok(v.map(Bytes::from))
        })
        .await
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> StoreResult<()> {
        self.call(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value.as_ref())
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn set_nx(&self, key: &str, value: Bytes, ttl: Duration) -> StoreResult<bool> {
        self.call(|mut c| async move {
            let r: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(value.as_ref())
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async(&mut c)
                .await?;
            Ok(r.is_some())
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.call(|mut c| async move {
            let n: i64 = redis::cmd("DEL").arg(key).query_async(&mut c).await?;
            Ok(n > 0)
        })
        .await
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> StoreResult<i64> {
        let script = &self.inner.incr;
        self.call(|mut c| async move {
            script
                .key(key)
                .arg(by)
                .arg(millis(ttl))
                .invoke_async(&mut c)
                .await
        })
        .await
    }

    async fn gcra(&self, key: &str, params: GcraParams, cost: u32) -> StoreResult<GcraDecision> {
        let script = &self.inner.gcra;
        let r: Vec<i64> = self
            .call(|mut c| async move {
                script
                    .key(key)
                    .arg(params.emission_us)
                    .arg(params.capacity_us)
                    .arg(cost)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let [allowed, remaining, retry_us, reset_us] = r[..] else {
            return Err(StoreError::Corrupt(format!(
                "the GCRA script returned {} values",
                r.len()
            )));
        };
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(GcraDecision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: us(retry_us),
            reset_after: us(reset_us),
        })
    }

    async fn gcra_batch(
        &self,
        key: &str,
        params: GcraParams,
        n: u32,
    ) -> StoreResult<Vec<GcraDecision>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // Redis admitted `admitted` and wrote the state: the decisions follow from what
        // it reports, not from our own arithmetic, so they cannot disagree with it.
        let batch = self.gcra_batch_outcome(key, params, n).await?;
        Ok(batch.decisions(params, n))
    }

    async fn ttl(&self, key: &str) -> StoreResult<Option<Duration>> {
        self.call(|mut c| async move {
            let ms: i64 = redis::cmd("PTTL").arg(key).query_async(&mut c).await?;
            Ok(match ms {
                -2 => None,
                -1 => Some(Duration::MAX),
                ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}
