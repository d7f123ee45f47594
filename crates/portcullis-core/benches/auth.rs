//! What authentication costs per request, on one core.
//!
//! - `token/verify_uncached`: one full access-token check (header, `kid`, Ed25519
//!   signature, claims) — what a client's first request with a token costs;
//! - `token/verify_cached`: the same token again, answered from the verifier's cache —
//!   what every later request with it costs;
//! - `login/verify_known`: argon2id against a real hash with the right password — the
//!   work of a login for a user that exists;
//! - `login/verify_unknown`: the dummy-hash check made for a user that does not exist,
//!   which must cost the same;
//! - `ratelimit/gcra_memory`: one GCRA decision in the in-memory store, for scale.
//!
//! Each group reports a throughput in elements per second: one element is one operation.
//!
//! ```text
//! cargo bench -p portcullis-core --bench auth -- --warm-up-time 1 --measurement-time 5
//! ```

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use portcullis_core::auth::password;
use portcullis_core::ratelimit::GcraParams;
use portcullis_core::store::{Backend, MemoryStore};
use portcullis_core::token::{AccessClaims, KeySet, Verifier};
use portcullis_core::{Clock, ManualClock};

const ISSUER: &str = "https://portcullis.bench";
const AUDIENCE: &str = "api";

fn tokens(c: &mut Criterion) {
    // A clock that does not move: the token stays valid however long the run takes.
    let clock = ManualClock::new();
    let keys = Arc::new(KeySet::ephemeral().expect("an Ed25519 key"));
    let claims = AccessClaims::new(
        "alice",
        &["user".to_owned(), "admin".to_owned()],
        "session-1",
        ISSUER,
        AUDIENCE,
        &clock,
        Duration::from_secs(600),
    );
    let token = keys.sign(&claims).expect("signing works");
    let clock: Arc<dyn Clock> = Arc::new(clock);
    let verifier = Verifier::new(keys, ISSUER, AUDIENCE, clock);
    assert!(
        verifier.verify_uncached(&token).is_ok(),
        "the token verifies"
    );

    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_uncached", |b| {
        b.iter(|| verifier.verify_uncached(black_box(&token)))
    });
    g.bench_function("verify_cached", |b| {
        b.iter(|| verifier.verify(black_box(&token)))
    });
    g.finish();
}

fn login(c: &mut Criterion) {
    const PASSWORD: &str = "correct horse battery staple";
    let phc = password::hash(PASSWORD).expect("hashing works");
    assert!(password::verify(PASSWORD, &phc));
    // Make the dummy hash outside the measurement, as the gateway does at start-up.
    password::warm_up();

    let mut g = c.benchmark_group("login");
    g.throughput(Throughput::Elements(1));
    // Tens of milliseconds an iteration: few samples, each of a few iterations.
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("verify_known", |b| {
        b.iter(|| password::verify(black_box(PASSWORD), black_box(&phc)))
    });
    g.bench_function("verify_unknown", |b| {
        b.iter(|| password::verify_unknown(black_box(PASSWORD)))
    });
    g.finish();
}

/// Runs a future that never waits (the memory store's) to completion in one poll.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the memory store never waits"),
    }
}

fn ratelimit(c: &mut Criterion) {
    let store = MemoryStore::new(100_000, Arc::new(ManualClock::new()));
    // A quota the run never exhausts on a stopped clock, so every call takes the
    // "allowed" path (read the TAT, write it back).
    let quota = GcraParams::new(u32::MAX, Duration::from_secs(1), u32::MAX).expect("valid quota");
    let keys: Vec<String> = (0..1024).map(|i| format!("rl:client-{i}")).collect();
    let mut i = 0usize;

    let mut g = c.benchmark_group("ratelimit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gcra_memory", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            ready(store.gcra(black_box(&keys[i]), quota, 1)).expect("the memory store answers")
        })
    });
    g.finish();
}

criterion_group!(benches, tokens, login, ratelimit);
criterion_main!(benches);
