#!/usr/bin/env bash
# Proxy benchmark: nginx proxy_pass vs. `portcullis serve`, side by side in one run,
# with the CPU layout of ../shared/research/perf-anchors.md:
#   CPU 0: wrk (load generator) + the shared upstream nginx (+ redis-server, when a
#          scenario uses one)
#   CPU 1: the server under test (SUT), alone
#
# Usage: benches/proxy/run.sh                          (full: 3 runs x 10 s per scenario)
#        QUICK=1 benches/proxy/run.sh                  (smoke: 1 run x 3 s per scenario)
#        SCENARIOS=rate-limit benches/proxy/run.sh     (the rate-limit scenarios)
# See benches/proxy/README.md for every knob.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# ---- knobs ---------------------------------------------------------------------------
if [[ "${QUICK:-0}" == 1 ]]; then
    RUNS=${RUNS:-1}
    DURATION=${DURATION:-3}
else
    RUNS=${RUNS:-3}
    DURATION=${DURATION:-10}
fi
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
PORT_BASE=${PORT_BASE:-18090}
WRK_PATH=${WRK_PATH:-/}
SCENARIOS=${SCENARIOS:-nginx-proxy,portcullis-log,portcullis-nolog}
LIMITS_CONFIG=${LIMITS_CONFIG:-$here/limits.toml}
READY_TIMEOUT=${READY_TIMEOUT:-15}
LOAD_CPU=${LOAD_CPU:-0}
SUT_CPU=${SUT_CPU:-1}

UPSTREAM_PORT=$PORT_BASE
NGINX_PORT=$((PORT_BASE + 1))
PC_PORT=$((PORT_BASE + 2))
PC_ADMIN_PORT=$((PORT_BASE + 3))
REDIS_PORT=${REDIS_PORT:-$((PORT_BASE + 4))}

# ---- scenarios: names, aliases, descriptions -----------------------------------------
declare -A DESC=(
    [nginx-proxy]="nginx \`proxy_pass\`, upstream keep-alive pool, no access log, 1 worker"
    [nginx-limit]="= nginx-proxy + \`limit_req\` on \`\$binary_remote_addr\` (rate 1e8 r/s: never refuses)"
    [portcullis-log]="\`portcullis serve\`, log level info (JSON access log to a file)"
    [portcullis-nolog]="\`portcullis serve\`, \`PORTCULLIS_LOG_LEVEL=warn\` (no access log, file)"
    [portcullis-nolimit]="\`portcullis serve\`, \`PORTCULLIS_RATE_LIMIT_ENABLED=false\`, log level warn"
    [portcullis-limit-memory]="\`portcullis serve\`, rate limiting on (limits.toml: 1e8/s, never refuses), in-memory store, log level warn"
    [portcullis-limit-redis]="= portcullis-limit-memory with \`PORTCULLIS_REDIS_URL\` (redis-server on CPU $LOAD_CPU)"
    [nginx-cache]="= nginx-proxy + \`proxy_cache\` (every answer after the first a hit)"
    [portcullis-cache]="= portcullis-nolimit + cache.toml: every path cached 1 h, in-memory tier (every answer after the first a hit)"
)
ALL_SCENARIOS=nginx-proxy,nginx-limit,portcullis-log,portcullis-nolog,portcullis-nolimit,portcullis-limit-memory,portcullis-limit-redis,nginx-cache,portcullis-cache
case "$SCENARIOS" in
all) SCENARIOS=$ALL_SCENARIOS ;;
rate-limit) SCENARIOS=nginx-proxy,nginx-limit,portcullis-nolimit,portcullis-limit-memory,portcullis-limit-redis ;;
cache) SCENARIOS=nginx-proxy,nginx-cache,portcullis-nolimit,portcullis-cache ;;
esac
IFS=, read -r -a wanted <<< "$SCENARIOS"
uses_redis=0
for s in "${wanted[@]}"; do
    if [[ -z "${DESC[$s]:-}" ]]; then
        echo "run.sh: unknown scenario '$s' (known: $ALL_SCENARIOS, or the aliases all, rate-limit, cache)" >&2
        exit 1
    fi
    [[ "$s" != portcullis-limit-redis ]] || uses_redis=1
done

tools=(nginx wrk taskset timeout curl ss awk sort)
((uses_redis == 0)) || tools+=(redis-server redis-cli)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "run.sh: '$tool' not found" >&2; exit 1; }
done

# ---- results dir ---------------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
res="$here/results/$stamp"
mkdir -p "$res/tmp"
echo "results: $res"

# ---- process bookkeeping + cleanup ---------------------------------------------------
declare -a PIDS=()

stop_pid() { # stop one process we started: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    local keep=() q
    for q in "${PIDS[@]}"; do
        [[ "$q" == "$pid" ]] || keep+=("$q")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

# ---- ports ---------------------------------------------------------------------------
ports=("$UPSTREAM_PORT" "$NGINX_PORT" "$PC_PORT" "$PC_ADMIN_PORT")
((uses_redis == 0)) || ports+=("$REDIS_PORT")
for p in "${ports[@]}"; do
    if [[ -n "$(ss -Hltn "sport = :$p")" ]]; then
        echo "run.sh: port $p is already in use (set PORT_BASE to move the ports, REDIS_PORT for redis)" >&2
        exit 1
    fi
done

# ---- build ---------------------------------------------------------------------------
if [[ -z "${PORTCULLIS_BIN:-}" ]]; then
    target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    PORTCULLIS_BIN="${target_dir:-$repo/target}/release/portcullis"
fi
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "building: cargo build --release -p portcullis-gateway"
    (cd "$repo" && cargo build --release -p portcullis-gateway) # output to the console only
fi
[[ -x "$PORTCULLIS_BIN" ]] || { echo "run.sh: no binary at $PORTCULLIS_BIN" >&2; exit 1; }
# The gateway refuses unknown PORTCULLIS_* variables (PORTCULLIS_BIN is one), and inherited
# settings would change what is measured: each SUT gets only the variables its scenario sets.
while read -r v; do
    export -n "$v"
done < <(compgen -e | grep '^PORTCULLIS_' || true)

# ---- environment record --------------------------------------------------------------
{
    echo "date_utc: $stamp"
    echo "git: $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "nproc: $(nproc)"
    echo "kernel: $(uname -r)"
    echo "nginx: $(nginx -v 2>&1)"
    echo "wrk: $(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?')"
    echo "rustc: $(rustc --version 2>/dev/null || echo '?')"
    echo "portcullis: $PORTCULLIS_BIN ($("$PORTCULLIS_BIN" --version 2>&1 || true)), built $(date -u -r "$PORTCULLIS_BIN" +%FT%TZ)"
    ((uses_redis == 0)) || echo "redis-server: $(redis-server --version)"
    echo "runs=$RUNS duration=${DURATION}s warmup=${WARMUP}s wrk -t$THREADS -c$CONNS path=$WRK_PATH"
    echo "pinning: load+upstream on CPU $LOAD_CPU, SUT on CPU $SUT_CPU"
    echo "ports: upstream=$UPSTREAM_PORT nginx=$NGINX_PORT portcullis=$PC_PORT admin=$PC_ADMIN_PORT redis=$REDIS_PORT"
    echo "scenarios: $SCENARIOS"
} > "$res/env.txt"

render() { # template -> file
    sed -e "s#@DIR@#$res#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" -e "s#@PORT@#$NGINX_PORT#g" "$1" > "$2"
}

# ---- helpers -------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() { # utime+stime (ticks) of a process and its direct children (nginx workers)
    local root=$1 p sum=0 t
    for p in "$root" $(pgrep -P "$root" 2>/dev/null || true); do
        t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || continue
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}

cpu_busy_snapshot() { # "busy total" for cpu$1 from /proc/stat
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

busy_pct() { # before after -> percent busy
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        dt = y[2] - x[2]; if (dt <= 0) { print "?"; exit } printf "%.0f", 100 * (y[1] - x[1]) / dt }'
}

wait_ready() { # url pid -> 0 when the URL answers 200
    local url=$1 pid=$2 deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" == 200 ]]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

to_ms() { # wrk latency token (e.g. 720.00us, 1.66ms, 1.02s) -> ms
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print "?" }'
}

# runs.tsv: one line per measured run
# aux_us_per_req: CPU µs per request of AUX_PID (redis-server in portcullis-limit-redis), else "-"
printf 'scenario\trun\trps\tp50_ms\tp99_ms\trequests\tsut_ticks\tus_per_req\terrors\tcpu_sut_pct\tcpu_load_pct\taux_us_per_req\n' > "$res/runs.tsv"
declare -A NOTE=()   # scenario -> why it failed (its row then says FAILED)
declare -A CHECK=()  # scenario -> a warning about what the SUT answered
AUX_PID=""           # a helper process whose CPU is measured too (redis-server)

measure() { # scenario pid url
    local name=$1 pid=$2 url=$3 run out t0 t1 s0 s1 l0 l1 a0 a1 rps p50 p99 reqs errs upr aux
    curl -s -D "$res/$name.headers.txt" -o "$res/$name.body.txt" --max-time 5 "$url" || true
    echo "  warm-up ${WARMUP}s"
    timeout $((WARMUP + 20)) taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" \
        > "$res/$name.warmup.txt" 2>&1 || true
    for run in $(seq "$RUNS"); do
        out="$res/$name.run$run.txt"
        t0=$(cpu_ticks "$pid"); s0=$(cpu_busy_snapshot "$SUT_CPU"); l0=$(cpu_busy_snapshot "$LOAD_CPU")
        a0=0; [[ -z "$AUX_PID" ]] || a0=$(cpu_ticks "$AUX_PID")
        if ! timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" \
            wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url" > "$out" 2>&1; then
            echo "  run $run: wrk failed (see $out)" >&2
        fi
        t1=$(cpu_ticks "$pid"); s1=$(cpu_busy_snapshot "$SUT_CPU"); l1=$(cpu_busy_snapshot "$LOAD_CPU")
        a1=0; [[ -z "$AUX_PID" ]] || a1=$(cpu_ticks "$AUX_PID")
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        reqs=$(awk '/ requests in / { print $1 }' "$out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
        errs=$(awk '/^  Non-2xx or 3xx responses:/ { n += $NF }
            /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
        upr=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${reqs:-0}" \
            'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "?" }')
        aux=-
        if [[ -n "$AUX_PID" ]]; then
            aux=$(awk -v d=$((a1 - a0)) -v hz="$CLK_TCK" -v n="${reqs:-0}" \
                'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "?" }')
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "${rps:-?}" "$p50" "$p99" \
            "${reqs:-?}" $((t1 - t0)) "$upr" "$errs" "$(busy_pct "$s0" "$s1")" "$(busy_pct "$l0" "$l1")" "$aux" \
            >> "$res/runs.tsv"
        echo "  run $run: ${rps:-?} rps, p50 ${p50} ms, p99 ${p99} ms, ${upr} us/req, errors ${errs}$(
            [[ "$aux" == - ]] || echo ", aux ${aux} us/req")"
    done
}

# ---- shared upstream (CPU 0) ---------------------------------------------------------
render "$here/upstream.nginx.conf.in" "$res/upstream.nginx.conf"
taskset -c "$LOAD_CPU" nginx -p "$res" -e "$res/upstream.error.log" -c "$res/upstream.nginx.conf" \
    > "$res/upstream.out.txt" 2>&1 &
upstream_pid=$!
PIDS+=("$upstream_pid")
if ! wait_ready "http://127.0.0.1:$UPSTREAM_PORT/" "$upstream_pid"; then
    echo "run.sh: the upstream nginx did not start:" >&2
    cat "$res/upstream.out.txt" "$res/upstream.error.log" >&2 2>/dev/null || true
    exit 1
fi
echo "upstream nginx on 127.0.0.1:$UPSTREAM_PORT (pid $upstream_pid, CPU $LOAD_CPU)"

# ---- scenarios (each SUT alone on CPU 1, stopped before the next starts) -------------
first_lines() { # file... -> the first 3 non-empty lines of the first file that has any, on one line
    local f text
    for f in "$@"; do
        text=$(awk 'NF { sub(/^[ \t]+/, ""); line[n++] = $0 } n == 3 { exit }
            END { for (i = 0; i < n; i++) printf "%s%s", (i ? " / " : ""), line[i] }' "$f" 2>/dev/null || true)
        if [[ -n "$text" ]]; then
            printf '%s' "${text:0:300}"
            return 0
        fi
    done
}

fail_scenario() { # name reason: the row says FAILED, the run goes on with the next scenario
    NOTE[$1]=$2
    echo "  FAILED: $2" >&2
}

run_scenario() { # name url cmd...
    local name=$1 url=$2 pid code status detail
    shift 2
    echo "== $name"
    printf '%q ' "$@" > "$res/$name.cmd.txt"; echo >> "$res/$name.cmd.txt"
    "$@" > "$res/$name.stdout.txt" 2> "$res/$name.stderr.txt" &
    pid=$!
    PIDS+=("$pid")
    if ! wait_ready "$url" "$pid"; then
        if ! kill -0 "$pid" 2>/dev/null; then
            code=0
            wait "$pid" 2>/dev/null || code=$?
            detail=$(first_lines "$res/$name.stderr.txt" "$res/$name.stdout.txt")
            fail_scenario "$name" "exited with code $code at start${detail:+: $detail}"
        else
            status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
            fail_scenario "$name" "did not answer 200 on $url within ${READY_TIMEOUT}s (last status: ${status:-none})"
        fi
        echo "  its output follows (kept in $res/$name.{stdout,stderr}.txt)" >&2
        for f in stdout stderr; do
            echo "  --- $name.$f.txt" >&2
            sed 's/^/    /' "$res/$name.$f.txt" >&2 || true
        done
        curl -s -D - -o /dev/null --max-time 2 "$url" > "$res/$name.failed-response.txt" 2>&1 || true
        stop_pid "$pid"
        return 0
    fi
    {
        echo "pid: $pid"
        echo "cpu affinity: $(taskset -pc "$pid" | awk '{ print $NF }')"
        echo "threads: $(ls "/proc/$pid/task" | wc -l)"
        for c in $(pgrep -P "$pid" 2>/dev/null || true); do
            echo "child $c: $(tr '\0' ' ' < "/proc/$c/cmdline" | sed 's/  */ /g; s/ $//'), threads $(ls "/proc/$c/task" | wc -l)"
        done
    } > "$res/$name.proc.txt"
    echo "  $(tr '\n' ';' < "$res/$name.proc.txt" | sed 's/;$//; s/;/, /g')"
    measure "$name" "$pid" "$url"
    check_headers "$name"
    stop_pid "$pid"
}

check_headers() { # name: does the first response show the limiter on (or off) as the scenario says?
    local name=$1 h="$res/$1.headers.txt"
    case "$name" in
    portcullis-limit-*)
        if ! grep -qi '^ratelimit-policy:' "$h"; then
            CHECK[$name]="no RateLimit-Policy header on the first response: is rate limiting on?"
        fi
        ;;
    portcullis-cache)
        if ! grep -qi '^x-cache:' "$h"; then
            CHECK[$name]="no X-Cache header on the first response: is the route cached?"
        fi
        ;;
    portcullis-nolimit)
        if grep -qi '^ratelimit-policy:' "$h"; then
            CHECK[$name]="RateLimit-Policy header present: rate limiting is not off"
        fi
        ;;
    esac
    if [[ -n "${CHECK[$name]:-}" ]]; then
        echo "  WARNING: ${CHECK[$name]}" >&2
    fi
}

# ---- redis-server for portcullis-limit-redis (CPU 0, nothing persisted) ------------
REDIS_PID=""
start_redis() { # -> 0 when it answers PONG
    taskset -c "$LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$res/tmp" > "$res/redis.out.txt" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    local deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        kill -0 "$REDIS_PID" 2>/dev/null || return 1
        [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && return 0
        sleep 0.1
    done
    return 1
}
stop_redis() { # saves what redis executed, then stops it
    [[ -n "$REDIS_PID" ]] || return 0
    {
        echo "# redis-cli info commandstats / keyspace / cpu, after the scenario"
        redis-cli -p "$REDIS_PORT" info commandstats
        redis-cli -p "$REDIS_PORT" info keyspace
        redis-cli -p "$REDIS_PORT" info cpu
    } > "$res/$1.redis-info.txt" 2>&1 || true
    stop_pid "$REDIS_PID"
    REDIS_PID=""
}
redis_calls() { # scenario -> "N calls: cmd=n, ..." from the saved commandstats
    awk -F'[:=,]' '/^cmdstat_/ { sub(/^cmdstat_/, "", $1); if ($1 == "info" || $1 == "ping" || $1 == "command") next;
        n += $3; s = s (s ? ", " : "") $1 "=" $3 } END { printf "%d calls%s", n, (s ? " (" s ")" : "") }' "$1" 2>/dev/null
}

pc_serve=("$PORTCULLIS_BIN" serve --upstream "http://127.0.0.1:$UPSTREAM_PORT"
    --listen "127.0.0.1:$PC_PORT" --admin-listen "127.0.0.1:$PC_ADMIN_PORT")
pc_url="http://127.0.0.1:$PC_PORT$WRK_PATH"
[[ -f "$LIMITS_CONFIG" ]] || { echo "run.sh: no limits config at $LIMITS_CONFIG" >&2; exit 1; }
cp "$LIMITS_CONFIG" "$res/limits.toml"
cp "$here/cache.toml" "$res/cache.toml"

for s in "${wanted[@]}"; do
    case "$s" in
    nginx-proxy)
        render "$here/proxy.nginx.conf.in" "$res/nginx-proxy.conf"
        run_scenario nginx-proxy "http://127.0.0.1:$NGINX_PORT$WRK_PATH" \
            taskset -c "$SUT_CPU" nginx -p "$res" -e "$res/nginx-proxy.error.log" -c "$res/nginx-proxy.conf"
        ;;
    nginx-limit)
        render "$here/proxy-limit.nginx.conf.in" "$res/nginx-limit.conf"
        run_scenario nginx-limit "http://127.0.0.1:$NGINX_PORT$WRK_PATH" \
            taskset -c "$SUT_CPU" nginx -p "$res" -e "$res/nginx-limit.error.log" -c "$res/nginx-limit.conf"
        ;;
    nginx-cache)
        mkdir -p "$res/tmp/nginx-cache"
        render "$here/cache.nginx.conf.in" "$res/nginx-cache.conf"
        run_scenario nginx-cache "http://127.0.0.1:$NGINX_PORT$WRK_PATH" \
            taskset -c "$SUT_CPU" nginx -p "$res" -e "$res/nginx-cache.error.log" -c "$res/nginx-cache.conf"
        ;;
    portcullis-cache)
        run_scenario "$s" "$pc_url" env PORTCULLIS_LOG_FILE="$res/$s.log" PORTCULLIS_LOG_ROTATION=never \
            PORTCULLIS_LOG_LEVEL=warn taskset -c "$SUT_CPU" "${pc_serve[@]}" --config "$res/cache.toml"
        ;;
    portcullis-log)
        # default level (info): one JSON access-log line per request, written to a file
        run_scenario "$s" "$pc_url" env PORTCULLIS_LOG_FILE="$res/$s.log" PORTCULLIS_LOG_ROTATION=never \
            taskset -c "$SUT_CPU" "${pc_serve[@]}"
        ;;
    portcullis-nolog)
        # level warn: no access log (errors/warnings still go to the file)
        run_scenario "$s" "$pc_url" env PORTCULLIS_LOG_FILE="$res/$s.log" PORTCULLIS_LOG_ROTATION=never \
            PORTCULLIS_LOG_LEVEL=warn taskset -c "$SUT_CPU" "${pc_serve[@]}"
        ;;
    portcullis-nolimit)
        # = portcullis-nolog with the rate limiter switched off
        run_scenario "$s" "$pc_url" env PORTCULLIS_LOG_FILE="$res/$s.log" PORTCULLIS_LOG_ROTATION=never \
            PORTCULLIS_LOG_LEVEL=warn PORTCULLIS_RATE_LIMIT_ENABLED=false \
            taskset -c "$SUT_CPU" "${pc_serve[@]}"
        ;;
    portcullis-limit-memory)
        # rate limiting on (the default), quota 1e8/s from limits.toml, in-memory store
        run_scenario "$s" "$pc_url" env PORTCULLIS_LOG_FILE="$res/$s.log" PORTCULLIS_LOG_ROTATION=never \
            PORTCULLIS_LOG_LEVEL=warn taskset -c "$SUT_CPU" "${pc_serve[@]}" --config "$res/limits.toml"
        ;;
    portcullis-limit-redis)
        echo "-- $s: starting redis-server on 127.0.0.1:$REDIS_PORT, CPU $LOAD_CPU"
        if ! start_redis; then
            fail_scenario "$s" "redis-server did not start on port $REDIS_PORT: $(first_lines "$res/redis.out.txt")"
            stop_pid "$REDIS_PID"; REDIS_PID=""
            continue
        fi
        AUX_PID=$REDIS_PID
        run_scenario "$s" "$pc_url" env PORTCULLIS_LOG_FILE="$res/$s.log" PORTCULLIS_LOG_ROTATION=never \
            PORTCULLIS_LOG_LEVEL=warn PORTCULLIS_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
            taskset -c "$SUT_CPU" "${pc_serve[@]}" --config "$res/limits.toml"
        AUX_PID=""
        stop_redis "$s"
        ;;
    esac
done
cleanup

# ---- summary -------------------------------------------------------------------------
median() { # scenario column -> median over runs (numeric), "?" if none
    awk -F'\t' -v s="$1" -v c="$2" 'NR > 1 && $1 == s && $c != "?" && $c != "" { print $c }' "$res/runs.tsv" |
        sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "?"; else if (NR % 2) print v[(NR + 1) / 2];
            else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
minmax() {
    awk -F'\t' -v s="$1" -v c="$2" 'NR > 1 && $1 == s && $c != "?" { if (n++ == 0 || $c < lo) lo = $c;
        if ($c > hi) hi = $c } END { if (n) printf "%s–%s", lo, hi; else print "?" }' "$res/runs.tsv"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "?" || b == "?" || b == 0) print "—"; else printf "%.2f", a / b }'; }
errsum() { awk -F'\t' -v s="$1" 'NR > 1 && $1 == s { n += $9 } END { print n + 0 }' "$res/runs.tsv"; }
md_cell() { printf '%s' "$1" | sed 's/|/\\|/g'; } # a table cell: escape the column separator
selected() { [[ ",$SCENARIOS," == *",$1,"* ]]; }

base_rps=$(median nginx-proxy 3)
base_upr=$(median nginx-proxy 8)
{
    echo "## Proxy benchmark ($stamp)"
    echo
    echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, median of $RUNS run(s); wrk + upstream nginx on CPU $LOAD_CPU, SUT alone on CPU $SUT_CPU."
    echo
    echo "| scenario | median rps | rps min–max | p50 ms | p99 ms | SUT CPU µs/req | errors | CPU$SUT_CPU/CPU$LOAD_CPU busy % | rps × nginx-proxy | µs/req × nginx-proxy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${wanted[@]}"; do
        if [[ -n "${NOTE[$s]:-}" ]]; then
            echo "| $s: ${DESC[$s]} | FAILED: $(md_cell "${NOTE[$s]}") | | | | | | | | |"
            continue
        fi
        rps=$(median "$s" 3); upr=$(median "$s" 8)
        printf '| %s: %s | %s | %s | %s | %s | %s | %s | %s/%s | %s | %s |\n' "$s" "${DESC[$s]}" \
            "$(awk -v v="$rps" 'BEGIN { if (v == "?") print v; else printf "%.0f", v }')" "$(minmax "$s" 3)" \
            "$(median "$s" 4)" "$(median "$s" 5)" "$upr" "$(errsum "$s")" \
            "$(median "$s" 10)" "$(median "$s" 11)" "$(ratio "$rps" "$base_rps")" "$(ratio "$upr" "$base_upr")"
    done
    echo
    if selected portcullis-limit-memory || selected portcullis-limit-redis || selected nginx-limit; then
        echo "Ratios for rate limiting (DESIGN.md §8: with Redis ≥ 0.9× the in-memory figure; in memory ≥ nginx with \`limit_req\`):"
        echo
        echo "| ratio | rps | SUT CPU µs/req | target |"
        echo "|---|---:|---:|---|"
        for pair in "portcullis-limit-redis portcullis-limit-memory rps ≥ 0.9" \
            "portcullis-limit-memory nginx-limit rps ≥ 1.0" \
            "portcullis-limit-memory portcullis-nolimit (the limiter's cost)" \
            "nginx-limit nginx-proxy (limit_req's cost)"; do
            read -r a b target <<< "$pair"
            printf '| %s / %s | %s | %s | %s |\n' "$a" "$b" "$(ratio "$(median "$a" 3)" "$(median "$b" 3)")" \
                "$(ratio "$(median "$a" 8)" "$(median "$b" 8)")" "$target"
        done
        echo
    fi
    for s in "${wanted[@]}"; do
        if [[ -f "$res/$s.log" ]]; then
            echo "- $s log file: $(wc -l < "$res/$s.log") lines ($(du -h "$res/$s.log" | cut -f1))"
        fi
        if [[ -f "$res/$s.redis-info.txt" && -z "${NOTE[$s]:-}" ]]; then
            aux=$(median "$s" 12)
            echo "- $s: redis-server (CPU $LOAD_CPU) $aux CPU µs/req; SUT + redis $(awk -v a="$(median "$s" 8)" -v b="$aux" \
                'BEGIN { if (a == "?" || b == "?") print "?"; else printf "%.2f", a + b }') µs/req; redis executed $(redis_calls "$res/$s.redis-info.txt") (INFO commandstats: commands run inside scripts count too)"
        fi
        if [[ -n "${CHECK[$s]:-}" ]]; then
            echo "- WARNING $s: ${CHECK[$s]}"
        fi
        if [[ -f "$res/$s.headers.txt" ]] && grep -qi '^ratelimit' "$res/$s.headers.txt"; then
            echo "- $s first response: $(grep -i '^ratelimit' "$res/$s.headers.txt" | tr -d '\r' |
                awk '{ printf "%s`%s`", (NR > 1 ? ", " : ""), $0 }')"
        fi
    done
    failed=()
    for s in "${wanted[@]}"; do
        [[ -z "${NOTE[$s]:-}" ]] || failed+=("$s")
    done
    if ((${#failed[@]})); then
        echo "- FAILED scenarios (no figures): ${failed[*]}; see their *.stderr.txt"
    fi
    echo "- raw output: $res"
} | tee "$res/summary.md"
