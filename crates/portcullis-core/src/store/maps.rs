//! Small shared maps: a handful of named entries every instance reads (rate-limit
//! overrides). Redis keeps them in a hash; the memory backend in one JSON object.
//! Instances poll [`SharedStore::map_all`]; the maps are small, so a poll is one call.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use super::memory::Write;
use super::shared::{Backends, SharedStore};
use super::{FailMode, Routed, StoreError, StoreResult};

/// How long a map lives without a write (renewed by every write).
const MAP_TTL: Duration = Duration::from_secs(90 * 86_400);

fn decode(raw: Option<&Bytes>) -> StoreResult<BTreeMap<String, String>> {
    match raw {
        None => Ok(BTreeMap::new()),
        Some(b) => serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(format!("map: {e}"))),
    }
}

fn encode(m: &BTreeMap<String, String>) -> Bytes {
    Bytes::from(serde_json::to_vec(m).unwrap_or_default())
}

impl SharedStore {
    fn map_key(&self, name: &str) -> String {
        self.key("map", name)
    }

    fn local_map_write(
        &self,
        key: &str,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> bool,
    ) -> StoreResult<bool> {
        let mut failed = None;
        let out = self.inner.local.update(key, |_, raw| match decode(raw) {
            Ok(mut m) => {
                let changed = f(&mut m);
                (
                    changed,
                    if changed {
                        Write::Set(encode(&m), MAP_TTL)
                    } else {
                        Write::Keep
                    },
                )
            }
            Err(e) => {
                failed = Some(e);
                (false, Write::Keep)
            }
        })?;
        failed.map_or(Ok(out), Err)
    }

    /// Sets `field` of map `name` to `value`.
    pub async fn map_set(
        &self,
        name: &str,
        field: &str,
        value: &str,
        mode: FailMode,
    ) -> Routed<()> {
        self.traced("map_set", async {
            let key = self.map_key(name);
            let local = || {
                self.local_map_write(&key, |m| {
                    m.insert(field.to_owned(), value.to_owned());
                    true
                })
                .map(|_| ())
            };
            match &self.inner.shared {
                Backends::Memory => local().map_or(Routed::Unavailable, Routed::Shared),
                #[cfg(feature = "redis")]
                Backends::Redis(r) => {
                    let res = r
                        .call(|mut c| {
                            let key = key.clone();
                            async move {
                                redis::pipe()
                                    .cmd("HSET")
                                    .arg(&key)
                                    .arg(field)
                                    .arg(value)
                                    .ignore()
                                    .cmd("PEXPIRE")
                                    .arg(&key)
                                    .arg(u64::try_from(MAP_TTL.as_millis()).unwrap_or(u64::MAX))
                                    .ignore()
                                    .query_async::<()>(&mut c)
                                    .await
                            }
                        })
                        .await;
                    match res {
                        Ok(()) => Routed::Shared(()),
                        Err(_) => self.fallback(mode, async { local() }).await,
                    }
                }
            }
        })
        .await
    }

    /// Removes `field` from map `name`; whether it was there.
    pub async fn map_remove(&self, name: &str, field: &str, mode: FailMode) -> Routed<bool> {
        self.traced("map_remove", async {
            let key = self.map_key(name);
            let local = || self.local_map_write(&key, |m| m.remove(field).is_some());
            match &self.inner.shared {
                Backends::Memory => local().map_or(Routed::Unavailable, Routed::Shared),
                #[cfg(feature = "redis")]
                Backends::Redis(r) => {
                    let res = r
                        .call(|mut c| {
                            let key = key.clone();
                            async move {
                                redis::cmd("HDEL")
                                    .arg(&key)
                                    .arg(field)
                                    .query_async::<i64>(&mut c)
                                    .await
                            }
                        })
                        .await;
                    match res {
                        Ok(n) => Routed::Shared(n > 0),
                        Err(_) => self.fallback(mode, async { local() }).await,
                    }
                }
            }
        })
        .await
    }

    /// Every entry of map `name`.
    pub async fn map_all(&self, name: &str, mode: FailMode) -> Routed<BTreeMap<String, String>> {
        self.traced("map_all", async {
            let key = self.map_key(name);
            let local = || decode(self.inner.local.get_now_bytes(&key).as_ref());
            match &self.inner.shared {
                Backends::Memory => local().map_or(Routed::Unavailable, Routed::Shared),
                #[cfg(feature = "redis")]
                Backends::Redis(r) => {
                    let res = r
                        .call(|mut c| {
                            let key = key.clone();
                            async move {
                                redis::cmd("HGETALL")
                                    .arg(&key)
                                    .query_async::<BTreeMap<String, String>>(&mut c)
                                    .await
                            }
                        })
                        .await;
                    match res {
                        Ok(m) => Routed::Shared(m),
                        Err(_) => self.fallback(mode, async { local() }).await,
                    }
                }
            }
        })
        .await
    }
}
