//! The gateway's shared state: the store every protection uses, built from `[redis]` and
//! `[memory]`, and its report in `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::breaker::BreakerState;
use portcullis_core::store::{MemoryStore, NoObserver, RedisStore, SharedStore, StoreObserver};
use portcullis_core::{Clock, SystemClock};
use serde_json::{Map, Value};

use crate::config::{ConfigError, StoreConfig};
use crate::health::{ComponentHealth, HealthComponent, Status};
use crate::telemetry::metrics::StoreMetrics;

/// How often the maintenance task pings Redis (so that an idle gateway notices an outage
/// and a recovery) and, every tenth tick, sweeps expired entries from memory.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Checks the store settings without connecting: for `check-config` and start-up.
pub fn check(cfg: &StoreConfig) -> Result<(), ConfigError> {
    if let Some(r) = &cfg.redis {
        RedisStore::new(r.clone(), Arc::new(SystemClock), Arc::new(NoObserver)).map_err(
            |message| ConfigError {
                key: "redis.url".into(),
                origin: None,
                message,
            },
        )?;
    }
    Ok(())
}

/// Builds the store. Redis is connected lazily, so this never waits on the network and
/// the gateway starts while Redis is down. Its calls and breaker changes are counted and
/// logged by [`StoreMetrics`].
pub fn build(
    cfg: &StoreConfig,
    events: Arc<crate::events::Events>,
) -> Result<SharedStore, ConfigError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let local = MemoryStore::new(cfg.memory_max_keys, clock.clone());
    match &cfg.redis {
        None => Ok(SharedStore::memory(local, &cfg.key_prefix)),
        Some(r) => {
            let observer: Arc<dyn StoreObserver> = Arc::new(StoreMetrics::new(events));
            let redis =
                RedisStore::new(r.clone(), clock, observer).map_err(|message| ConfigError {
                    key: "redis.url".into(),
                    origin: None,
                    message,
                })?;
            Ok(SharedStore::redis(redis, local, &cfg.key_prefix))
        }
    }
}

/// The store's entry in `/readyz`: `ok` on memory or with the breaker closed,
/// `degraded` (still 200) while it is open or half-open.
#[derive(Debug)]
pub struct StoreHealth {
    store: SharedStore,
}

impl StoreHealth {
    /// Reports on `store`.
    pub fn new(store: SharedStore) -> Self {
        Self { store }
    }
}

impl HealthComponent for StoreHealth {
    fn name(&self) -> &'static str {
        "store"
    }

    fn check(&self) -> ComponentHealth {
        let mut details = Map::new();
        details.insert("backend".into(), Value::from(self.store.backend_name()));
        let status = match self.store.redis_backend() {
            None => Status::Ok,
            Some(r) => {
                let state = r.breaker_state();
                details.insert("breaker".into(), Value::from(state.as_str()));
                if let Some(e) = r.last_error() {
                    details.insert("last_error".into(), Value::from(e));
                }
                if state == BreakerState::Closed {
                    Status::Ok
                } else {
                    Status::Degraded
                }
            }
        };
        details.insert("local_keys".into(), Value::from(self.store.local().len()));
        ComponentHealth { status, details }
    }
}
