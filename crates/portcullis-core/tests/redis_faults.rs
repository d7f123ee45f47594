//! Redis faults, injected into a real `redis-server` that each test starts (testkit), while
//! eight tasks keep calling the store: `kill -9`, restart, `SIGSTOP`, `DEBUG SLEEP`,
//! `SCRIPT FLUSH`, `FLUSHALL`, out of memory, a wrong password, and no server at all.
//!
//! The breaker is small (five calls, 400 ms open, two probes) so each test takes about a
//! second. Every loop is bounded in calls and in time; every call's duration is measured,
//! and the longest per fault is printed (`--nocapture`).

use std::collections::HashMap;
use std::fmt;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_core::breaker::{BreakerConfig, BreakerState};
use portcullis_core::ratelimit::GcraParams;
use portcullis_core::store::{
    Backend, CallResult, FailMode, MemoryStore, RedisConfig, RedisStore, Routed, SharedStore,
    StoreError, StoreObserver,
};
use portcullis_core::{Secret, SystemClock};
use portcullis_testkit::ports::free_addr;
use portcullis_testkit::redis::RedisServer;
use tokio::task::JoinHandle;

const TASKS: usize = 8;
const MIN_CALLS: u32 = 5;
const PROBES: u32 = 2;
const OPEN_FOR: Duration = Duration::from_millis(400);
/// Short, so that the successes made just before a fault soon leave it: eight tasks make
/// more successes per second than a stalled Redis can give timeouts, and the breaker
/// judges a failure *rate*.
const WINDOW: Duration = Duration::from_millis(400);
const COMMAND_TIMEOUT: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Scheduling slack on a busy two-core machine (eight tasks share two workers); less than
/// `connect_timeout - command_timeout`, so a call that waited for a whole connection
/// attempt instead of its own deadline is caught.
const SLACK: Duration = Duration::from_millis(100);
/// Pause between one task's calls, so short-circuited calls do not spin.
const PACE: Duration = Duration::from_millis(2);
const MAX_CALLS_PER_TASK: usize = 5_000;
const MAX_LOAD: Duration = Duration::from_secs(20);
const HOUR: Duration = Duration::from_secs(3600);

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        failure_rate: 0.5,
        // Below command_timeout, as the config requires; loose enough that a healthy call
        // on this machine is never slow.
        slow_call: Duration::from_millis(40),
        min_calls: MIN_CALLS,
        window: WINDOW,
        open_for: OPEN_FOR,
        max_open_for: Duration::from_secs(2),
        half_open_probes: PROBES,
        jitter: false,
    }
}

/// A generous quota: every decision is an admission, so only faults make calls fail.
fn params() -> GcraParams {
    GcraParams::new(1_000_000, Duration::from_secs(1), 1_000_000).expect("valid quota")
}

type Hook = Box<dyn Fn(BreakerState) + Send + Sync>;

#[derive(Clone, Debug)]
struct Transition {
    to: BreakerState,
    reason: String,
    at: Instant,
}

/// Records the breaker's transitions, with the instant each happened.
#[derive(Default)]
struct Recorder {
    transitions: Mutex<Vec<Transition>>,
    /// Run at each transition, while the breaker holds its lock (so nothing else changes).
    hook: Mutex<Option<Hook>>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl StoreObserver for Recorder {
    fn call(&self, _: &'static str, _: CallResult) {}

    fn breaker(&self, _: &'static str, _: BreakerState, to: BreakerState, reason: &str) {
        let at = Instant::now();
        if let Some(hook) = &*self.hook.lock().unwrap() {
            hook(to);
        }
        self.transitions.lock().unwrap().push(Transition {
            to,
            reason: reason.to_owned(),
            at,
        });
    }
}

impl Recorder {
    fn transitions(&self) -> Vec<Transition> {
        self.transitions.lock().unwrap().clone()
    }

    fn count(&self, to: BreakerState) -> usize {
        self.transitions().iter().filter(|t| t.to == to).count()
    }

    /// The `nth` (from 1) transition to `to`, waiting at most `limit` for it.
    async fn wait_for(&self, to: BreakerState, nth: usize, limit: Duration) -> Transition {
        let give_up = Instant::now() + limit;
        loop {
            if let Some(t) = self
                .transitions()
                .into_iter()
                .filter(|t| t.to == to)
                .nth(nth - 1)
            {
                return t;
            }
            assert!(
                Instant::now() < give_up,
                "no transition #{nth} to {to:?} within {limit:?}; saw {:?}",
                self.transitions()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn store_for(url: &str, breaker: BreakerConfig) -> (RedisStore, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let store = RedisStore::new(
        RedisConfig {
            url: Secret::new(url.to_owned()),
            command_timeout: COMMAND_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            breaker,
        },
        Arc::new(SystemClock),
        recorder.clone(),
    )
    .expect("a valid URL");
    (store, recorder)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Set,
    Incr,
    Gcra,
}

#[derive(Debug)]
struct Outcome {
    task: usize,
    op: Op,
    start: Instant,
    took: Duration,
    /// `Get`: 1 if the key held its value, 0 if absent, -1 if another value came back;
    /// `Set`: 0; `Incr`: the sum; `Gcra`: 1 if admitted.
    result: Result<i64, StoreError>,
}

/// `Get` and `Set` share a key per task, whose value is the key itself: a reply paired
/// with another command would come back as another value (`Get` → -1) or fail to parse.
async fn run(store: &RedisStore, op: Op, tag: &str, task: usize) -> Result<i64, StoreError> {
    let key = match op {
        Op::Get | Op::Set => format!("{tag}:kv:{task}"),
        Op::Incr => format!("{tag}:n:{task}"),
        Op::Gcra => format!("{tag}:rl:{task}"),
    };
    let key = key.as_str();
    match op {
        Op::Get => store.get(key).await.map(|v| match v {
            None => 0,
            Some(v) if v == key.as_bytes() => 1,
            Some(_) => -1,
        }),
        Op::Set => store
            .set(key, Bytes::copy_from_slice(key.as_bytes()), HOUR)
            .await
            .map(|()| 0),
        Op::Incr => store.incr(key, 1, HOUR).await,
        Op::Gcra => store
            .gcra(key, params(), 1)
            .await
            .map(|d| i64::from(d.allowed)),
    }
}

/// `TASKS` tasks calling the store in a loop, each op on its own key per task.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(store: &RedisStore, ops: &'static [Op], tag: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..TASKS)
            .map(|task| {
                let store = store.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let began = Instant::now();
                    let mut out = Vec::new();
                    for i in 0..MAX_CALLS_PER_TASK {
                        if stop.load(Ordering::Relaxed) || began.elapsed() > MAX_LOAD {
                            break;
                        }
                        let op = ops[(task + i) % ops.len()];
                        let start = Instant::now();
                        let result = run(&store, op, tag, task).await;
                        let took = start.elapsed();
                        out.push(Outcome {
                            task,
                            op,
                            start,
                            took,
                            result,
                        });
                        tokio::time::sleep(PACE).await;
                    }
                    out
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("load task"));
        }
        assert!(!all.is_empty(), "the load made no calls");
        all
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

fn is_down(r: &Result<i64, StoreError>) -> bool {
    matches!(r, Err(StoreError::Connection(_) | StoreError::Timeout))
}

fn short_circuited(r: &Result<i64, StoreError>) -> bool {
    matches!(r, Err(StoreError::ShortCircuited))
}

/// Asserts no call outlived `command_timeout` plus slack and no reply was paired with the
/// wrong command; prints the errors seen and the longest call per result.
fn assert_calls_sound(fault: &str, outcomes: &[Outcome]) {
    let mut longest: HashMap<&'static str, Duration> = HashMap::new();
    for o in outcomes {
        let kind = match &o.result {
            Ok(_) => "ok",
            Err(e) => e.result_label(),
        };
        assert!(
            !(o.op == Op::Get && o.result == Ok(-1)),
            "{fault}: a reply was paired with the wrong command: {o:?}"
        );
        let d = longest.entry(kind).or_default();
        *d = (*d).max(o.took);
        assert!(
            o.took <= COMMAND_TIMEOUT + SLACK,
            "{fault}: a call took {:?} (> {COMMAND_TIMEOUT:?} + {SLACK:?}): {o:?}",
            o.took
        );
    }
    let mut samples: HashMap<String, String> = HashMap::new();
    for o in outcomes {
        if let Err(e) = &o.result {
            samples
                .entry(format!("{:?}", std::mem::discriminant(e)))
                .or_insert_with(|| e.to_string());
        }
    }
    let mut samples: Vec<_> = samples.into_values().collect();
    samples.sort();
    eprintln!("{fault}: errors seen: {samples:?}");
    let mut kinds: Vec<_> = longest.into_iter().collect();
    kinds.sort();
    eprintln!(
        "{fault}: {} calls; longest per result: {kinds:?}",
        outcomes.len()
    );
}

/// `cmdstat_NAME` → (calls, failed_calls), from an `INFO commandstats` reply.
fn commandstats(info: &str) -> HashMap<String, (u64, u64)> {
    let field = |fields: &str, name: &str| -> u64 {
        fields
            .split(',')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    info.lines()
        .filter_map(|l| l.trim().strip_prefix("cmdstat_")?.split_once(':'))
        .map(|(cmd, fields)| {
            let stats = (field(fields, "calls"), field(fields, "failed_calls"));
            (cmd.to_owned(), stats)
        })
        .collect()
}

fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.parse().ok())
}

fn stat(server: &RedisServer) -> HashMap<String, (u64, u64)> {
    commandstats(&server.command(&["INFO", "commandstats"]).expect("INFO"))
}

/// Shared checks after a fault that opened the breaker: before it opened, the failed calls
/// were typed and as many as `min_calls` needs (the window holding only failures); while
/// it was open, every call began short-circuited.
fn assert_opened_after_min_calls(fault: &str, outcomes: &[Outcome], opened: &Transition) {
    assert_eq!(
        opened.reason,
        format!("{MIN_CALLS} of {MIN_CALLS} calls failed or were slow"),
        "{fault}: the breaker opens on the min_calls-th failed call"
    );
    let failed_before = outcomes
        .iter()
        .filter(|o| o.start < opened.at && is_down(&o.result))
        .count();
    // The min_calls failures the breaker counted, plus at most one call per other task
    // that was already in flight when it opened.
    let most = MIN_CALLS as usize + TASKS - 1;
    assert!(
        (MIN_CALLS as usize..=most).contains(&failed_before),
        "{fault}: {failed_before} failed calls began before the breaker opened, expected {MIN_CALLS}..={most}"
    );
    // Began and ended inside the open period, so asked the breaker inside it (a call that
    // began just before the end may be a probe).
    let open_until = opened.at + OPEN_FOR;
    let during: Vec<_> = outcomes
        .iter()
        .filter(|o| o.start >= opened.at && o.start + o.took < open_until)
        .collect();
    assert!(!during.is_empty(), "{fault}: no call while open");
    for o in &during {
        assert!(
            short_circuited(&o.result),
            "{fault}: a call began while open and was not short-circuited: {o:?}"
        );
    }
    for o in outcomes {
        assert!(
            o.result.is_ok() || is_down(&o.result) || short_circuited(&o.result),
            "{fault}: untyped or unexpected error: {o:?}"
        );
    }
}

/// 1. `kill -9`: the breaker opens on the `min_calls`-th failed call; every failure is
///    typed, every later call short-circuited; no call waits longer than the timeout; while
///    Redis stays dead, the half-open probes fail and it opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_opens_the_breaker_after_min_calls_and_no_call_outlives_the_timeout() {
    let mut server = RedisServer::start();
    let (store, rec) = store_for(&server.url(), breaker_config());
    let ops: &[Op] = &[Op::Get, Op::Set, Op::Incr, Op::Gcra];
    let load = Load::start(&store, ops, "kill");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let healthy = load.finish().await;
    assert!(
        healthy
            .iter()
            .all(|o| o.result.is_ok() && (o.op != Op::Gcra || o.result == Ok(1))),
        "healthy calls all answer: {:?}",
        healthy.iter().find(|o| o.result.is_err())
    );
    assert_calls_sound("healthy", &healthy);
    // The successes leave the window, so the failed calls alone decide (`min_calls`).
    tokio::time::sleep(WINDOW + Duration::from_millis(50)).await;
    assert_eq!(store.breaker_state(), BreakerState::Closed);

    server.kill();
    let load = Load::start(&store, ops, "kill");
    let opened = rec
        .wait_for(BreakerState::Open, 1, Duration::from_secs(2))
        .await;
    // Past the open period: one half-open round, whose probes fail (Redis is still dead).
    let reopened = rec
        .wait_for(BreakerState::Open, 2, OPEN_FOR + Duration::from_secs(1))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let outcomes = load.finish().await;

    assert_opened_after_min_calls("kill -9", &outcomes, &opened);
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o.result, Err(StoreError::Connection(_)))),
        "a killed server gives connection errors"
    );
    assert_eq!(reopened.reason, "a probe failed");
    assert!(reopened.at >= opened.at + OPEN_FOR);
    let attempted_after_open = outcomes
        .iter()
        .filter(|o| o.start >= opened.at && !short_circuited(&o.result))
        .count();
    assert!(
        (1..=PROBES as usize).contains(&attempted_after_open),
        "after opening only the probes were attempted: {attempted_after_open}"
    );
    assert_calls_sound("kill -9", &outcomes);
}

/// 2. Open means silent: Redis restarted right after the breaker opened receives no
///    command and no connection until the open period ends; then exactly the probes
///    reach it, the breaker closes and the same store answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_open_redis_receives_nothing_but_the_probes() {
    let open_for = Duration::from_millis(500);
    let server = Arc::new(Mutex::new(RedisServer::start()));
    let url = server.lock().unwrap().url();
    let (store, rec) = store_for(
        &url,
        BreakerConfig {
            open_for,
            ..breaker_config()
        },
    );
    // At the instant the breaker closes, what had Redis received? Only the probes.
    let at_close = Arc::new(Mutex::new(None::<String>));
    {
        let server = server.clone();
        let at_close = at_close.clone();
        *rec.hook.lock().unwrap() = Some(Box::new(move |to| {
            if to == BreakerState::Closed {
                let info = server.lock().unwrap().command(&["INFO", "commandstats"]);
                *at_close.lock().unwrap() = Some(info.expect("INFO at close"));
            }
        }));
    }
    let load = Load::start(&store, &[Op::Get, Op::Set], "silent");
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.lock().unwrap().kill();
    let opened = rec
        .wait_for(BreakerState::Open, 1, Duration::from_secs(2))
        .await;
    // Calls admitted just before it opened may run until their own deadline.
    sleep_until(opened.at + COMMAND_TIMEOUT + Duration::from_millis(10)).await;
    // A fresh server: its stats hold only what it received since (no `RESETSTAT`, which
    // would hide a connection made between the restart and the reset).
    server.lock().unwrap().restart();
    let check_at = opened.at + open_for - Duration::from_millis(100);
    assert!(
        Instant::now() < check_at,
        "restarting redis-server took too long to observe the open period"
    );
    sleep_until(check_at).await;
    let (info, clients) = {
        let server = server.lock().unwrap();
        let info = server.command(&["INFO", "commandstats", "stats"]);
        (info.expect("INFO"), server.command(&["CLIENT", "LIST"]))
    };
    assert_eq!(
        rec.count(BreakerState::HalfOpen),
        0,
        "the check must fall inside the open period"
    );
    // The testkit's own: one `PING` per connection while waiting for the restart, and
    // this `INFO`.
    let stats = commandstats(&info);
    let seen: Vec<_> = stats.keys().filter(|c| *c != "ping").collect();
    assert!(
        seen.is_empty(),
        "commands reached Redis while open: {seen:?}"
    );
    let pings = stats.get("ping").map_or(0, |s| s.0);
    assert_eq!(
        info_field(&info, "total_connections_received"),
        Some(pings + 1),
        "only the test's own connections while open"
    );
    let clients = clients.expect("CLIENT LIST");
    assert_eq!(
        clients.matches("cmd=").count(),
        1,
        "no connection but the test's own: {clients}"
    );

    let closed = rec
        .wait_for(BreakerState::Closed, 1, Duration::from_secs(5))
        .await;
    let rounds = rec.count(BreakerState::HalfOpen) as u64;
    let at_close = at_close.lock().unwrap().take().expect("INFO at close");
    let stats = commandstats(&at_close);
    let probes: u64 = ["get", "set"]
        .iter()
        .map(|c| stats.get(*c).map_or(0, |s| s.0))
        .sum();
    eprintln!("restart while open: {rounds} half-open round(s), {probes} store commands at close");
    assert!(
        (u64::from(PROBES)..=rounds * u64::from(PROBES)).contains(&probes),
        "{probes} store commands reached Redis before it closed, with {rounds} half-open round(s) of {PROBES} probes"
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcomes = load.finish().await;
    assert_opened_after_min_calls_or_more(&outcomes, &opened, open_for);
    let after: Vec<_> = outcomes.iter().filter(|o| o.start > closed.at).collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|o| o.result.is_ok()),
        "closed again, the same store answers: {:?}",
        after.iter().find(|o| o.result.is_err())
    );
    assert_calls_sound("kill, restart while open", &outcomes);
}

/// Test 2 has healthy calls in the window when Redis dies, so it opens after *at least*
/// `min_calls`; the rest is as in [`assert_opened_after_min_calls`].
fn assert_opened_after_min_calls_or_more(
    outcomes: &[Outcome],
    opened: &Transition,
    open_for: Duration,
) {
    let failed_before = outcomes
        .iter()
        .filter(|o| o.start < opened.at && is_down(&o.result))
        .count();
    assert!(failed_before >= MIN_CALLS as usize);
    for o in outcomes {
        if o.start >= opened.at && o.start + o.took < opened.at + open_for {
            assert!(short_circuited(&o.result), "began while open: {o:?}");
        }
        assert!(
            o.result.is_ok() || is_down(&o.result) || short_circuited(&o.result),
            "untyped or unexpected error: {o:?}"
        );
    }
}

/// 3. Scripts survive `SCRIPT FLUSH` on a live server (no caller sees an error) and a
///    restart (GCRA and `incr` answer again; `NOSCRIPT` never reaches a caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_reloaded_after_script_flush_and_restart() {
    let mut server = RedisServer::start();
    let (store, rec) = store_for(&server.url(), breaker_config());
    let ops: &[Op] = &[Op::Gcra, Op::Incr];

    let load = Load::start(&store, ops, "script");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = stat(&server);
    for _ in 0..3 {
        let r = server.command(&["SCRIPT", "FLUSH"]).expect("SCRIPT FLUSH");
        assert!(r.starts_with("+OK"), "{r}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let after = stat(&server);
    let flushed = load.finish().await;
    assert!(
        flushed
            .iter()
            .all(|o| o.result == Ok(1) || o.op == Op::Incr && o.result.is_ok()),
        "SCRIPT FLUSH is invisible to callers: {:?}",
        flushed.iter().find(|o| o.result.is_err())
    );
    let noscript = |s: &HashMap<String, (u64, u64)>| s.get("evalsha").map_or(0, |e| e.1);
    let loads = |s: &HashMap<String, (u64, u64)>| s.get("script|load").map_or(0, |e| e.0);
    assert!(
        noscript(&after) > noscript(&before) && loads(&after) > loads(&before),
        "the flushes made EVALSHA meet NOSCRIPT and reload: before {before:?}, after {after:?}"
    );
    assert_calls_sound("SCRIPT FLUSH", &flushed);
    assert_eq!(rec.count(BreakerState::Open), 0);

    assert_eq!(store.incr("script:direct:n", 1, HOUR).await, Ok(1));
    let load = Load::start(&store, ops, "script");
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.restart();
    let give_up = Instant::now() + Duration::from_secs(5);
    let mut counted = 0;
    let recovered = loop {
        let gcra = store.gcra("script:direct", params(), 1).await;
        let incr = store.incr("script:direct:n", 1, HOUR).await;
        counted += i64::from(incr.is_ok());
        if let (Ok(decision), Ok(n)) = (&gcra, &incr)
            && store.breaker_state() == BreakerState::Closed
        {
            assert!(decision.allowed);
            assert_eq!(
                *n, counted,
                "the restarted server started the counter afresh"
            );
            break Instant::now();
        }
        assert!(Instant::now() < give_up, "no recovery: {gcra:?} {incr:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcomes = load.finish().await;
    let stats = stat(&server);
    assert!(
        noscript(&stats) >= 1 && loads(&stats) >= 1,
        "the new server met NOSCRIPT and loaded the scripts: {stats:?}"
    );
    for o in &outcomes {
        assert!(
            o.result.is_ok() || is_down(&o.result) || short_circuited(&o.result),
            "restart: NOSCRIPT or another server error reached a caller: {o:?}"
        );
    }
    let after: Vec<_> = outcomes.iter().filter(|o| o.start > recovered).collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|o| o.result.is_ok()),
        "after recovery, scripts answer: {:?}",
        after.iter().find(|o| o.result.is_err())
    );
    assert_calls_sound("restart (scripts)", &outcomes);
}

/// Shared by the `SIGSTOP` and `DEBUG SLEEP` tests: the failures were typed timeouts,
/// at `command_timeout` (or sooner, for a call that joined a connection attempt near its
/// `connect_timeout`); the calls after the breaker closed again answered.
fn assert_timed_out_then_recovered(fault: &str, outcomes: &[Outcome], closed: &Transition) {
    let timeouts: Vec<_> = outcomes
        .iter()
        .filter(|o| o.result == Err(StoreError::Timeout))
        .collect();
    let full = timeouts
        .iter()
        .filter(|o| o.took >= COMMAND_TIMEOUT - Duration::from_millis(1))
        .count();
    assert!(
        full >= MIN_CALLS as usize,
        "{fault}: {full} of {} timeouts waited command_timeout",
        timeouts.len()
    );
    for o in outcomes {
        assert!(
            o.result.is_ok() || is_down(&o.result) || short_circuited(&o.result),
            "{fault}: untyped or unexpected error: {o:?}"
        );
    }
    let after: Vec<_> = outcomes.iter().filter(|o| o.start > closed.at).collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|o| o.result.is_ok()),
        "{fault}: closed again, calls answer: {:?}",
        after.iter().find(|o| o.result.is_err())
    );
    let longest = timeouts.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "{fault}: {} timeouts ({full} after command_timeout, the rest a shared connection \
         attempt's connect_timeout), longest {longest:?}",
        timeouts.len()
    );
    assert_calls_sound(fault, outcomes);
}

/// 4a. `SIGSTOP`: calls time out at `command_timeout` (typed), the breaker opens; after
///     `SIGCONT` the probes succeed and the breaker closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_times_out_then_recovers() {
    let server = RedisServer::start();
    let (store, rec) = store_for(&server.url(), breaker_config());
    let load = Load::start(&store, &[Op::Set, Op::Get, Op::Gcra], "pause");
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.pause();
    let opened = rec
        .wait_for(BreakerState::Open, 1, Duration::from_secs(2))
        .await;
    sleep_until(opened.at + Duration::from_millis(100)).await;
    server.resume();
    let closed = rec
        .wait_for(BreakerState::Closed, 1, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcomes = load.finish().await;

    assert!(closed.at >= opened.at + OPEN_FOR);
    assert_timed_out_then_recovered("SIGSTOP", &outcomes, &closed);
}

/// 4b. `DEBUG SLEEP 1` on another connection: the same, without a signal; the breaker
///     cannot close before Redis wakes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_times_out_then_recovers() {
    let server = Arc::new(RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let (store, rec) = store_for(&server.url(), breaker_config());
    let load = Load::start(&store, &[Op::Set, Op::Get, Op::Gcra], "sleep");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let sent = Instant::now();
    let sleeper = {
        let server = server.clone();
        // DEBUG SLEEP blocks its connection for the whole second.
        std::thread::spawn(move || server.command(&["DEBUG", "SLEEP", "1"]))
    };
    let opened = rec
        .wait_for(BreakerState::Open, 1, Duration::from_secs(2))
        .await;
    let closed = rec
        .wait_for(BreakerState::Closed, 1, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcomes = load.finish().await;
    let reply = sleeper
        .join()
        .expect("sleeper thread")
        .expect("DEBUG SLEEP");
    assert!(reply.starts_with("+OK"), "{reply}");

    assert!(opened.at < sent + Duration::from_secs(1));
    assert!(
        closed.at >= sent + Duration::from_secs(1),
        "closed {:?} after DEBUG SLEEP 1 was sent",
        closed.at - sent
    );
    assert_timed_out_then_recovered("DEBUG SLEEP 1", &outcomes, &closed);
}

/// 5. `FLUSHALL` under load: the data is gone, but no caller sees an error and the
///    breaker stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_loses_data_but_no_call_fails() {
    let server = RedisServer::start();
    let (store, rec) = store_for(&server.url(), breaker_config());
    store
        .set("flush:sentinel", Bytes::from_static(b"x"), HOUR)
        .await
        .expect("set");
    assert_eq!(
        store.get("flush:sentinel").await,
        Ok(Some(Bytes::from_static(b"x")))
    );
    let load = Load::start(&store, &[Op::Gcra, Op::Incr, Op::Get, Op::Set], "flush");
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let r = server.command(&["FLUSHALL"]).expect("FLUSHALL");
        assert!(r.starts_with("+OK"), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcomes = load.finish().await;

    assert!(
        outcomes.iter().all(|o| o.result.is_ok()),
        "FLUSHALL is invisible to callers: {:?}",
        outcomes.iter().find(|o| o.result.is_err())
    );
    assert!(
        outcomes
            .iter()
            .all(|o| o.op != Op::Gcra || o.result == Ok(1)),
        "every GCRA decision admits"
    );
    assert_eq!(store.get("flush:sentinel").await, Ok(None), "data lost");
    // Each task's counter only grows, except where a flush reset it.
    let mut resets = 0;
    for task in 0..TASKS {
        let counts: Vec<i64> = outcomes
            .iter()
            .filter(|o| o.task == task && o.op == Op::Incr)
            .map(|o| *o.result.as_ref().unwrap())
            .collect();
        resets += counts.windows(2).filter(|w| w[1] <= w[0]).count();
    }
    assert!(resets > 0, "FLUSHALL reset the counters");
    assert!(rec.transitions().is_empty(), "the breaker stayed closed");
    assert_calls_sound("FLUSHALL", &outcomes);
}

/// 6. Out of memory with `noeviction`: writes fail with a typed `Server` error saying
///    OOM; reads still answer; `SharedStore` falls back to memory under `FailMode::Local`
///    and refuses under `FailMode::Deny`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_writes_fail_typed_and_shared_store_falls_back() {
    let server =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let (store, _rec) = store_for(&server.url(), breaker_config());
    let big = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut stored = 0;
    let refused = loop {
        assert!(stored < 100, "2 MiB never filled");
        match store
            .set(&format!("oom:fill:{stored}"), big.clone(), HOUR)
            .await
        {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(stored > 0);
    let is_oom = |e: &StoreError| matches!(e, StoreError::Server(m) if m.contains("OOM"));
    assert!(is_oom(&refused), "typed OOM: {refused:?}");
    eprintln!("OOM after {stored} values of 64 KiB: {refused}");
    // A freed 64 KiB query buffer would let small writes through again, right at the
    // limit; lowering the limit keeps every write refused for the rest of the test.
    let r = server
        .command(&["CONFIG", "SET", "maxmemory", "1mb"])
        .expect("CONFIG SET");
    assert!(r.starts_with("+OK"), "{r}");
    assert_eq!(
        store.get("oom:fill:0").await.map(|v| v.map(|b| b.len())),
        Ok(Some(big.len())),
        "reads still answer"
    );

    let shared = SharedStore::redis(
        store.clone(),
        MemoryStore::new(10_000, Arc::new(SystemClock)),
        "oom",
    );
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, shared) = (store.clone(), shared.clone());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                for i in 0..20 {
                    let key = format!("oom:{task}:{i}");
                    let start = Instant::now();
                    errors.push((
                        "set",
                        store.set(&key, Bytes::from_static(b"v"), HOUR).await.err(),
                    ));
                    errors.push(("gcra", store.gcra(&key, params(), 1).await.err()));
                    errors.push(("incr", store.incr(&key, 1, HOUR).await.err()));
                    let local = shared
                        .gcra(&key, params(), params(), 1, FailMode::Local)
                        .await;
                    assert!(
                        matches!(&local, Routed::Local(d) if d.allowed),
                        "FailMode::Local falls back to memory: {local:?}"
                    );
                    let deny = shared
                        .gcra(&key, params(), params(), 1, FailMode::Deny)
                        .await;
                    assert_eq!(deny, Routed::Unavailable, "FailMode::Deny refuses");
                    assert!(start.elapsed() <= 5 * (COMMAND_TIMEOUT + SLACK));
                    tokio::time::sleep(PACE).await;
                }
                errors
            })
        })
        .collect();
    let mut oom = HashMap::<&str, usize>::new();
    for t in tasks {
        for (op, e) in t.await.expect("task") {
            match e {
                Some(e) if is_oom(&e) => *oom.entry(op).or_default() += 1,
                Some(StoreError::ShortCircuited) => {}
                other => panic!("{op}: expected OOM or short-circuited, got {other:?}"),
            }
        }
    }
    eprintln!("OOM under load: typed OOM errors per op {oom:?}");
    for op in ["set", "gcra", "incr"] {
        assert!(
            oom.get(op).copied().unwrap_or(0) > 0,
            "{op} saw a typed OOM"
        );
    }
}

/// 7. A wrong password fails typed, and no error text ever holds a password; the right
///    one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_without_leaking_it() {
    const WRONG: &str = "wr0ng-Pa55-q7z";
    const RIGHT: &str = "s3cret";
    // Set after start: the testkit waits for a `PONG` that `--requirepass` would refuse.
    let mut server = RedisServer::start();
    let r = server.command(&["CONFIG", "SET", "requirepass", RIGHT]);
    assert!(r.expect("CONFIG SET").starts_with("+OK"));
    let addr = server.addr;

    let (wrong, _) = store_for(&format!("redis://:{WRONG}@{addr}"), breaker_config());
    let load = Load::start(&wrong, &[Op::Get, Op::Gcra], "auth");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcomes = load.finish().await;
    let mut texts = vec![format!("{wrong:?}"), wrong.last_error().unwrap_or_default()];
    for o in &outcomes {
        let e = o
            .result
            .as_ref()
            .expect_err("a wrong password never answers");
        assert!(
            matches!(e, StoreError::Server(_) | StoreError::ShortCircuited),
            "a refused password is the server's refusal: {e:?}"
        );
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    }
    let refusal = outcomes
        .iter()
        .find_map(|o| match &o.result {
            Err(e @ StoreError::Server(_)) => Some(e.to_string()),
            _ => None,
        })
        .expect("a refusal");
    eprintln!("wrong password: {refusal}");
    assert!(
        refusal.to_lowercase().contains("authentication"),
        "the refusal says why: {refusal}"
    );
    assert!(
        texts
            .iter()
            .all(|t| !t.contains(WRONG) && !t.contains(RIGHT)),
        "a password leaked"
    );
    assert_calls_sound("wrong password", &outcomes);

    let (right, _) = store_for(&format!("redis://:{RIGHT}@{addr}"), breaker_config());
    let load = Load::start(&right, &[Op::Get, Op::Gcra], "auth");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcomes = load.finish().await;
    assert!(
        outcomes.iter().all(|o| o.result.is_ok()),
        "the right password works: {:?}",
        outcomes.iter().find(|o| o.result.is_err())
    );
    // Its failures do not quote it either.
    server.kill();
    for _ in 0..3 {
        let e = right.ping().await.expect_err("killed");
        assert!(!e.to_string().contains(RIGHT) && !format!("{e:?}").contains(RIGHT));
    }
    assert!(!right.last_error().unwrap_or_default().contains(RIGHT));
}

/// 8. Connection attempts are calls: with nothing listening, the breaker opens after
///    `min_calls` refused connections; while it is open the store does not even connect
///    (a listener bound on the port meanwhile accepts nothing), then the probe does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_attempts_count_and_none_is_made_while_open() {
    let addr = free_addr();
    let (store, rec) = store_for(&format!("redis://{addr}"), breaker_config());
    let load = Load::start(&store, &[Op::Get, Op::Gcra], "noserver");
    let opened = rec
        .wait_for(BreakerState::Open, 1, Duration::from_secs(2))
        .await;
    // Calls admitted just before it opened may run until their own deadline.
    sleep_until(opened.at + COMMAND_TIMEOUT + Duration::from_millis(10)).await;
    let listener = TcpListener::bind(addr).expect("bind the store's port");
    listener.set_nonblocking(true).expect("nonblocking");
    let open_until = opened.at + OPEN_FOR;
    assert!(
        Instant::now() + Duration::from_millis(100) < open_until,
        "bound too late"
    );
    let mut accepted = Vec::new();
    let watch_until = open_until + Duration::from_millis(300);
    while Instant::now() < watch_until {
        match listener.accept() {
            Ok((conn, _)) => accepted.push((Instant::now(), conn)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    let outcomes = load.finish().await;

    assert_opened_after_min_calls("no server", &outcomes, &opened);
    assert!(
        outcomes.iter().all(|o| o.result.is_err()),
        "nothing answers"
    );
    let during_open = accepted.iter().filter(|(at, _)| *at < open_until).count();
    assert_eq!(
        during_open, 0,
        "the store connected while the breaker was open"
    );
    assert!(
        (1..=PROBES as usize).contains(&accepted.len()),
        "after the open period the probes connect (sharing one attempt): {} connections",
        accepted.len()
    );
    assert_eq!(rec.count(BreakerState::HalfOpen), 1);
    assert_eq!(
        rec.transitions().last().map(|t| t.reason.clone()),
        Some("a probe failed".to_owned()),
        "the listener never answers, so the probe fails"
    );
    assert_calls_sound("no server", &outcomes);
}
