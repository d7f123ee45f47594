#!/usr/bin/env bash
# Store throughput, side by side in one run: the Redis backend (portcullis-core's
# RedisStore, one multiplexed connection, many tasks) against redis-benchmark running the
# same GCRA Lua script (EVALSHA) on the same redis-server, plus the memory backend.
#
# Layout (as in ../shared/research/perf-anchors.md): redis-server alone on CPU 1; the
# client (store_bench or redis-benchmark) on CPU 0.
#
#   benches/store/run.sh            # 3 runs x 5 s each
#   RUNS=1 SECONDS_PER_RUN=3 benches/store/run.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_RUN:-5}
CONC=${CONCURRENCY:-50}
KEYS=${KEYS:-100000}
PORT=${PORT:-16390}

for tool in redis-server redis-benchmark redis-cli taskset timeout; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing" >&2; exit 2; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -q -p portcullis-core --example store_bench
fi
bench="$repo/target/release/examples/store_bench"

taskset -c 1 redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

script=$("$bench" --print-script)
sha=$(redis-cli -p "$PORT" script load "$script")
# The arguments store_bench uses: T = 1 us, capacity = 1e6 us, cost 1 (always allowed).
args=(EVALSHA "$sha" 1 "bench:__rand_int__" 1 1000000 1)

declare -a ours theirs
for run in $(seq "$RUNS"); do
    redis-cli -p "$PORT" flushall >/dev/null
    out=$(timeout $((SECS + 30)) taskset -c 0 "$bench" --redis "redis://127.0.0.1:$PORT" \
        --concurrency "$CONC" --seconds "$SECS" --keys "$KEYS")
    echo "$out"
    ours+=("$(echo "$out" | awk '/^redis:/ {print $2}')")
    mem=$(echo "$out" | awk '/^memory:/ {print $2}')
    redis-cli -p "$PORT" flushall >/dev/null
    n=$(awk -v r="${ours[-1]}" -v s="$SECS" 'BEGIN { printf "%d", r * s }')
    rb=$(timeout $((SECS * 4 + 30)) taskset -c 0 redis-benchmark -p "$PORT" -c "$CONC" -n "$n" -r "$KEYS" -q "${args[@]}" 2>/dev/null | tr '\r' '\n' | grep -E 'requests per second' | tail -1)
    echo "redis-benchmark EVALSHA gcra: $rb"
    theirs+=("$(echo "$rb" | sed -E 's/.*: ([0-9.]+) requests per second.*/\1/')")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
m_ours=$(median "${ours[@]}")
m_theirs=$(median "${theirs[@]}")
echo
echo "| client | median GCRA decisions/s |"
echo "| --- | ---: |"
echo "| portcullis RedisStore ($CONC tasks, 1 multiplexed connection) | $m_ours |"
echo "| redis-benchmark EVALSHA ($CONC connections) | $m_theirs |"
echo "| memory backend (last run) | $mem |"
awk -v a="$m_ours" -v b="$m_theirs" 'BEGIN { printf "\nratio RedisStore / redis-benchmark: %.2f\n", a / b }'
