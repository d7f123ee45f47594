//! Concurrent GCRA checks of one key, decided by one script call.
//!
//! A flood from one client is many checks of one key at once, each paying a Redis round
//! trip and a script run. Here the checks of a key (cost 1, same quotas, same fail mode)
//! that are in flight together in this instance join one *batch*, and one
//! `gcra_batch.lua` call admits as many of them as fit, in arrival order, atomically.
//! Redis stays the only arbiter: the decisions are exactly those of the same checks made
//! one after the other at the instant the script ran
//! ([`decide_batch`](crate::ratelimit::gcra::decide_batch)), so limits stay exact across
//! instances, and nothing is admitted here that Redis did not admit.
//!
//! # The protocol
//!
//! - The first check of a key opens a batch in a map (key → quotas, mode, one `oneshot`
//!   per waiting check) and spawns the batch's task; then it waits like any other.
//! - The task yields once (`yield_now`), so the checks already ready to run join, then
//!   takes the batch out of the map (later checks open a new one) and makes the call.
//! - A check whose quotas or mode differ from the open batch's does not join: it makes its
//!   own call. A batch of [`MAX_BATCH`] checks is closed and sent at once.
//! - The call runs in the spawned task, so a check whose future is dropped (its client
//!   went away) strands nobody, the first included; a check gone before the call is not
//!   counted. If the task is dropped before answering (the runtime shuts down), the map
//!   entry goes with it and the waiters answer as if Redis were unavailable.
//!
//! Each check waits for one call: at most `redis.command_timeout` and one scheduler turn.
//! In memory (no Redis) there is no round trip to save, and no batching.
//!
//! # Fail mode
//!
//! When the call fails, the batch falls back as one check would, per its mode: with
//! `Local`, the same batch on this instance's memory against the `local` quota
//! (`Routed::Local` for each), otherwise `Allow` or `Unavailable` for each.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::ratelimit::gcra_answer;
use super::shared::SharedStore;
use super::{Backend, FailMode, Routed};
use crate::ratelimit::{Decision, Quota};

/// The most checks one call decides: a bound on the script's run time (it is O(1) in the
/// batch, but its reply and our decisions are not) and on what one failure touches.
pub const MAX_BATCH: usize = 256;

type Waiter = oneshot::Sender<Routed<Decision>>;

/// Checks of one key waiting for one call.
struct Batch {
    id: u64,
    shared: Quota,
    local: Quota,
    mode: FailMode,
    /// In arrival order: the `i`-th gets the `i`-th decision.
    waiters: Vec<Waiter>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    batches: HashMap<Box<str>, Batch>,
}

/// The open batches of one store. One lock for every key: it is held for a map operation,
/// next to a Redis round trip.
#[derive(Default)]
pub(super) struct Coalescer {
    open: Mutex<Open>,
}

impl Coalescer {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // Nothing panics while the lock is held but the map's own operations.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes batch `id` of `key` out of the map, if it is still open.
    fn take(&self, key: &str, id: u64) -> Option<Batch> {
        let mut open = self.lock();
        match open.batches.get(key) {
            Some(b) if b.id == id => open.batches.remove(key),
            _ => None,
        }
    }
}

/// What a check does after looking at the map.
enum Step {
    /// It opened batch `id`: spawn its task.
    Open(u64),
    /// It joined an open batch.
    Joined,
    /// It joined and filled a batch, now closed: send it.
    Filled(Batch),
    /// Another batch of the key is open with other quotas or another mode.
    Alone,
}

/// Batch `id` of `key`, to be sent by a spawned task. Dropped without being run (the task
/// was dropped before its turn), it closes the batch, so the waiters are not left waiting.
struct Pickup {
    store: SharedStore,
    key: Box<str>,
    id: u64,
}

impl Pickup {
    async fn run(self) {
        // Lets the checks that are ready to run join before the batch is closed.
        tokio::task::yield_now().await;
        if let Some(batch) = self.store.inner.batches.take(&self.key, self.id) {
            self.store.send(&self.key, batch).await;
        }
    }
}

impl Drop for Pickup {
    fn drop(&mut self) {
        // After `run` took it this finds nothing, or a later batch with another id.
        self.store.inner.batches.take(&self.key, self.id);
    }
}

impl SharedStore {
    /// One GCRA check of cost 1 of `key`, decided together with the concurrent checks of
    /// the same key, quotas and mode (see the [module](self)).
    pub(super) async fn gcra_coalesced(
        &self,
        key: &str,
        shared: &Quota,
        local: &Quota,
        mode: FailMode,
    ) -> Routed<Decision> {
        let (tx, rx) = oneshot::channel();
        let step = {
            let mut open = self.inner.batches.lock();
            match open.batches.get_mut(key) {
                Some(b) if (b.shared, b.local, b.mode) == (*shared, *local, mode) => {
                    b.waiters.push(tx);
                    if b.waiters.len() >= MAX_BATCH {
                        Step::Filled(open.batches.remove(key).expect("just found"))
                    } else {
                        Step::Joined
                    }
                }
                Some(_) => Step::Alone,
                None => {
                    let id = open.next_id;
                    open.next_id += 1;
                    let batch = Batch {
                        id,
                        shared: *shared,
                        local: *local,
                        mode,
                        waiters: vec![tx],
                    };
                    open.batches.insert(key.into(), batch);
                    Step::Open(id)
                }
            }
        };
        match step {
            Step::Alone => return self.gcra_one(key, shared, local, 1, mode).await,
            Step::Joined => {}
            Step::Open(id) => {
                let pickup = Pickup {
                    store: self.clone(),
                    key: key.into(),
                    id,
                };
                tokio::spawn(pickup.run());
            }
            Step::Filled(batch) => {
                let store = self.clone();
                let key: Box<str> = key.into();
                tokio::spawn(async move { store.send(&key, batch).await });
            }
        }
        match rx.await {
            Ok(answer) => answer,
            // The batch's task ended without an answer: as if Redis had not answered.
            Err(_) => {
                let routed = self
                    .fallback(mode, self.inner.local.gcra(key, local.gcra(), 1))
                    .await;
                gcra_answer(routed, shared, local)
            }
        }
    }

    /// Makes the batch's one call and answers each waiter.
    async fn send(&self, key: &str, mut batch: Batch) {
        // A check whose client went away before the call is not counted.
        batch.waiters.retain(|w| !w.is_closed());
        let n = batch.waiters.len();
        if n == 0 {
            return;
        }
        let (shared, local) = (&batch.shared, &batch.local);
        let count = u32::try_from(n).expect("at most MAX_BATCH");
        let answers: Vec<Routed<Decision>> = match self
            .gcra_batch(key, shared.gcra(), local.gcra(), count, batch.mode)
            .await
        {
            Routed::Shared(ds) => ds
                .into_iter()
                .map(|d| Routed::Shared(Decision::from_gcra(d, shared)))
                .collect(),
            Routed::Local(ds) => ds
                .into_iter()
                .map(|d| Routed::Local(Decision::from_gcra(d, local)))
                .collect(),
            Routed::Allow => vec![Routed::Allow; n],
            Routed::Stateless => vec![Routed::Stateless; n],
            Routed::Unavailable => vec![Routed::Unavailable; n],
        };
        // One answer per waiter; were one missing, its waiter would fall back.
        for (w, answer) in batch.waiters.into_iter().zip(answers) {
            let _ = w.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerConfig;
    use crate::ratelimit::Algorithm;
    use crate::store::{MemoryStore, NoObserver, RedisConfig, RedisStore};
    use crate::{Secret, SystemClock};
    use std::sync::Arc;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A store whose Redis is nowhere: every call fails, and checks fall back.
    fn store() -> SharedStore {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let redis = RedisStore::new(
            RedisConfig {
                url: Secret::new(format!("redis://127.0.0.1:{port}")),
                command_timeout: Duration::from_millis(200),
                connect_timeout: Duration::from_millis(200),
                breaker: BreakerConfig::default(),
            },
            Arc::new(SystemClock),
            Arc::new(NoObserver),
        )
        .unwrap();
        SharedStore::redis(redis, MemoryStore::new(100, Arc::new(SystemClock)), "t")
    }

    fn open(store: &SharedStore) -> usize {
        store.inner.batches.lock().batches.len()
    }

    /// The batch's task dropped before its turn (its runtime shut down) takes the batch
    /// out of the map: a later check of the key does not join it and wait forever.
    #[test]
    fn a_batch_whose_task_never_ran_is_closed() {
        let store = store();
        let q = Quota::new(5, Duration::from_secs(60), None).unwrap();
        let check = || store.rate_limit("k", Algorithm::Gcra, &q, &q, 1, FailMode::Local);
        let first = runtime();
        first.block_on(async {
            let mut pending = Box::pin(check());
            tokio::select! {
                biased;
                d = &mut pending => panic!("answered before its batch ran: {d:?}"),
                () = std::future::ready(()) => {}
            }
        });
        assert_eq!(open(&store), 1, "the batch waits for its task");
        drop(first);
        assert_eq!(open(&store), 0, "closed with its task");
        let d = runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(5), check())
                .await
                .expect("answered")
        });
        assert!(matches!(d, Routed::Local(d) if d.allowed), "{d:?}");
        assert_eq!(open(&store), 0);
    }
}
