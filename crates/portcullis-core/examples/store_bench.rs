//! Store operations per second: GCRA decisions against the memory backend and against
//! Redis, from many concurrent tasks. `benches/store/run.sh` runs it beside
//! `redis-benchmark` executing the same Lua script on the same Redis.
//!
//! ```text
//! store_bench [--redis URL] [--concurrency 50] [--seconds 5] [--keys 100000] [--print-script]
//! store_bench --fill 1000000     # memory: resident size of that many distinct client keys
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portcullis_core::breaker::BreakerConfig;
use portcullis_core::ratelimit::GcraParams;
use portcullis_core::store::{Backend, MemoryStore, NoObserver, RedisConfig, RedisStore};
use portcullis_core::{Secret, SystemClock};

struct Args {
    redis: Option<String>,
    concurrency: usize,
    seconds: u64,
    keys: u64,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |f: &str| {
        argv.iter()
            .position(|a| a == f)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    if argv.iter().any(|a| a == "--print-script") {
        print!("{}", RedisStore::gcra_source());
        std::process::exit(0);
    }
    Args {
        redis: get("--redis"),
        concurrency: get("--concurrency")
            .and_then(|v| v.parse().ok())
            .unwrap_or(50),
        seconds: get("--seconds").and_then(|v| v.parse().ok()).unwrap_or(5),
        keys: get("--keys")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000),
    }
}

/// A huge burst: every call takes the "allowed" path (GET + SET), like the redis-benchmark
/// run it is compared with.
fn params() -> GcraParams {
    GcraParams::new(1_000_000, Duration::from_secs(1), 1_000_000).expect("valid quota")
}

async fn run<B: Backend + Clone + 'static>(name: &str, store: B, a: &Args) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..a.concurrency)
        .map(|t| {
            let (store, stop, ok, failed) =
                (store.clone(), stop.clone(), ok.clone(), failed.clone());
            let keys = a.keys;
            tokio::spawn(async move {
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1);
                let mut key = String::with_capacity(32);
                let mut n: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    // The memory backend never waits, so give the scheduler (and its
                    // timer, which ends the run) a turn now and then.
                    n = n.wrapping_add(1);
                    if n.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    key.clear();
                    use std::fmt::Write;
                    let _ = write!(key, "bench:{}", x % keys);
                    match store.gcra(&key, params(), 1).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = ok.load(Ordering::Relaxed) as f64 / secs;
    println!(
        "{name}: {rate:.0} GCRA decisions/s ({} ok, {} failed, {} tasks, {secs:.1} s)",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        a.concurrency
    );
    rate
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Inserts `n` distinct rate-limit keys (shaped like the gateway's, `portcullis:rl:ip:…`)
/// and reports the memory they take.
fn fill(n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = MemoryStore::new(n as usize, Arc::new(SystemClock));
    let q = GcraParams::new(60, Duration::from_secs(60), 20).expect("valid quota");
    let before = rss_kib();
    rt.block_on(async {
        for i in 0..n {
            let key = format!(
                "portcullis:rl:ip:10.{}.{}.{}",
                (i >> 16) & 255,
                (i >> 8) & 255,
                i & 255
            );
            let key = if i >= 1 << 24 {
                format!("{key}:{i}")
            } else {
                key
            };
            store.gcra(&key, q, 1).await.expect("memory store");
        }
    });
    let after = rss_kib();
    let mib = (after.saturating_sub(before)) as f64 / 1024.0;
    println!(
        "memory: {} keys held ({} asked), resident size grew {mib:.1} MiB ({:.0} bytes a key)",
        store.len(),
        n,
        mib * 1024.0 * 1024.0 / store.len().max(1) as f64
    );
}

fn main() {
    if let Some(n) = std::env::args()
        .skip_while(|a| a != "--fill")
        .nth(1)
        .and_then(|v| v.parse().ok())
    {
        fill(n);
        return;
    }
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let memory = MemoryStore::new(1_000_000, Arc::new(SystemClock));
        run("memory", memory, &a).await;
        if let Some(url) = &a.redis {
            // Generous bounds: the benchmark measures throughput, not the breaker.
            let cfg = RedisConfig {
                url: Secret::new(url.clone()),
                command_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(2),
                breaker: BreakerConfig {
                    slow_call: Duration::from_secs(1),
                    ..BreakerConfig::default()
                },
            };
            let redis = RedisStore::new(cfg, Arc::new(SystemClock), Arc::new(NoObserver))
                .expect("redis url");
            run("redis", redis, &a).await;
        }
    });
}
