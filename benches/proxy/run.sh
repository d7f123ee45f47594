#!/usr/bin/env bash
# Proxy benchmark: nginx proxy_pass vs. `portcullis serve`, side by side in one run,
# with the CPU layout of ../shared/research/perf-anchors.md:
#   CPU 0: wrk (load generator) + the shared upstream nginx
#   CPU 1: the server under test (SUT), alone
#
# Usage: benches/proxy/run.sh            (full: 3 runs x 10 s per scenario)
#        QUICK=1 benches/proxy/run.sh    (smoke: 1 run x 3 s per scenario)
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
READY_TIMEOUT=${READY_TIMEOUT:-15}
LOAD_CPU=${LOAD_CPU:-0}
SUT_CPU=${SUT_CPU:-1}

UPSTREAM_PORT=$PORT_BASE
NGINX_PORT=$((PORT_BASE + 1))
PC_PORT=$((PORT_BASE + 2))
PC_ADMIN_PORT=$((PORT_BASE + 3))

for tool in nginx wrk taskset timeout curl ss awk sort; do
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
for p in "$UPSTREAM_PORT" "$NGINX_PORT" "$PC_PORT" "$PC_ADMIN_PORT"; do
    if [[ -n "$(ss -Hltn "sport = :$p")" ]]; then
        echo "run.sh: port $p is already in use (set PORT_BASE to move the 4 ports)" >&2
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

# ---- environment record --------------------------------------------------------------
{
    echo "date_utc: $stamp"
    echo "git: $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "nproc: $(nproc)"
    echo "kernel: $(uname -r)"
    echo "nginx: $(nginx -v 2>&1)"
    echo "wrk: $(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?')"
    echo "rustc: $(rustc --version 2>/dev/null || echo '?')"
    echo "portcullis: $PORTCULLIS_BIN ($("$PORTCULLIS_BIN" --version 2>&1 || true))"
    echo "runs=$RUNS duration=${DURATION}s warmup=${WARMUP}s wrk -t$THREADS -c$CONNS path=$WRK_PATH"
    echo "pinning: load+upstream on CPU $LOAD_CPU, SUT on CPU $SUT_CPU"
    echo "ports: upstream=$UPSTREAM_PORT nginx=$NGINX_PORT portcullis=$PC_PORT admin=$PC_ADMIN_PORT"
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
printf 'scenario\trun\trps\tp50_ms\tp99_ms\trequests\tsut_ticks\tus_per_req\terrors\tcpu_sut_pct\tcpu_load_pct\n' > "$res/runs.tsv"
declare -A NOTE=()

measure() { # scenario pid url
    local name=$1 pid=$2 url=$3 run out t0 t1 s0 s1 l0 l1 rps p50 p99 reqs errs upr
    curl -s -D "$res/$name.headers.txt" -o "$res/$name.body.txt" --max-time 5 "$url" || true
    echo "  warm-up ${WARMUP}s"
    timeout $((WARMUP + 20)) taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" \
        > "$res/$name.warmup.txt" 2>&1 || true
    for run in $(seq "$RUNS"); do
        out="$res/$name.run$run.txt"
        t0=$(cpu_ticks "$pid"); s0=$(cpu_busy_snapshot "$SUT_CPU"); l0=$(cpu_busy_snapshot "$LOAD_CPU")
        if ! timeout $((DURATION + 30)) taskset -c "$LOAD_CPU" \
            wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url" > "$out" 2>&1; then
            echo "  run $run: wrk failed (see $out)" >&2
        fi
        t1=$(cpu_ticks "$pid"); s1=$(cpu_busy_snapshot "$SUT_CPU"); l1=$(cpu_busy_snapshot "$LOAD_CPU")
        rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
        reqs=$(awk '/ requests in / { print $1 }' "$out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
        errs=$(awk '/^  Non-2xx or 3xx responses:/ { n += $NF }
            /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
        upr=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="${reqs:-0}" \
            'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "?" }')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$run" "${rps:-?}" "$p50" "$p99" \
            "${reqs:-?}" $((t1 - t0)) "$upr" "$errs" "$(busy_pct "$s0" "$s1")" "$(busy_pct "$l0" "$l1")" \
            >> "$res/runs.tsv"
        echo "  run $run: ${rps:-?} rps, p50 ${p50} ms, p99 ${p99} ms, ${upr} us/req, errors ${errs}"
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
run_scenario() { # name url cmd...
    local name=$1 url=$2 pid
    shift 2
    echo "== $name"
    printf '%q ' "$@" > "$res/$name.cmd.txt"; echo >> "$res/$name.cmd.txt"
    "$@" > "$res/$name.stdout.txt" 2> "$res/$name.stderr.txt" &
    pid=$!
    PIDS+=("$pid")
    if ! wait_ready "$url" "$pid"; then
        NOTE[$name]="did not answer 200 on $url within ${READY_TIMEOUT}s"
        echo "  FAILED: ${NOTE[$name]}; its output follows" >&2
        for f in stdout stderr; do
            echo "  --- $name.$f.txt" >&2
            cat "$res/$name.$f.txt" >&2 || true
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
    stop_pid "$pid"
}

pc_serve=("$PORTCULLIS_BIN" serve --upstream "http://127.0.0.1:$UPSTREAM_PORT"
    --listen "127.0.0.1:$PC_PORT" --admin-listen "127.0.0.1:$PC_ADMIN_PORT")

IFS=, read -r -a wanted <<< "$SCENARIOS"
for s in "${wanted[@]}"; do
    case "$s" in
    nginx-proxy)
        render "$here/proxy.nginx.conf.in" "$res/nginx-proxy.conf"
        run_scenario nginx-proxy "http://127.0.0.1:$NGINX_PORT$WRK_PATH" \
            taskset -c "$SUT_CPU" nginx -p "$res" -e "$res/nginx-proxy.error.log" -c "$res/nginx-proxy.conf"
        ;;
    portcullis-log)
        # default level (info): one JSON access-log line per request, written to a file
        run_scenario portcullis-log "http://127.0.0.1:$PC_PORT$WRK_PATH" \
            env PORTCULLIS_LOG_FILE="$res/portcullis-log.log" PORTCULLIS_LOG_ROTATION=never \
            taskset -c "$SUT_CPU" "${pc_serve[@]}"
        ;;
    portcullis-nolog)
        # level warn: no access log (errors/warnings still go to the file)
        run_scenario portcullis-nolog "http://127.0.0.1:$PC_PORT$WRK_PATH" \
            env PORTCULLIS_LOG_FILE="$res/portcullis-nolog.log" PORTCULLIS_LOG_ROTATION=never \
            PORTCULLIS_LOG_LEVEL=warn taskset -c "$SUT_CPU" "${pc_serve[@]}"
        ;;
    *)
        echo "run.sh: unknown scenario '$s'" >&2
        exit 1
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

declare -A DESC=(
    [nginx-proxy]="nginx \`proxy_pass\`, upstream keep-alive pool, no access log, 1 worker"
    [portcullis-log]="\`portcullis serve\`, log level info (JSON access log to a file)"
    [portcullis-nolog]="\`portcullis serve\`, \`PORTCULLIS_LOG_LEVEL=warn\` (no access log, file)"
)
base_rps=$(median nginx-proxy 3)
base_upr=$(median nginx-proxy 8)
{
    echo "## Proxy benchmark ($stamp)"
    echo
    echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, median of $RUNS run(s); wrk + upstream nginx on CPU $LOAD_CPU, SUT alone on CPU $SUT_CPU."
    echo
    echo "| scenario | median rps | rps min–max | p50 ms | p99 ms | SUT CPU µs/req | errors | CPU$SUT_CPU/CPU$LOAD_CPU busy % | rps × nginx | µs/req × nginx |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${wanted[@]}"; do
        if [[ -n "${NOTE[$s]:-}" ]]; then
            echo "| $s: ${DESC[$s]} | FAILED: ${NOTE[$s]} | | | | | | | | |"
            continue
        fi
        rps=$(median "$s" 3); upr=$(median "$s" 8)
        printf '| %s: %s | %s | %s | %s | %s | %s | %s | %s/%s | %s | %s |\n' "$s" "${DESC[$s]}" \
            "$(awk -v v="$rps" 'BEGIN { if (v == "?") print v; else printf "%.0f", v }')" "$(minmax "$s" 3)" \
            "$(median "$s" 4)" "$(median "$s" 5)" "$upr" "$(errsum "$s")" \
            "$(median "$s" 10)" "$(median "$s" 11)" "$(ratio "$rps" "$base_rps")" "$(ratio "$upr" "$base_upr")"
    done
    echo
    for s in portcullis-log portcullis-nolog; do
        if [[ -f "$res/$s.log" ]]; then
            echo "- $s log file: $(wc -l < "$res/$s.log") lines ($(du -h "$res/$s.log" | cut -f1))"
        fi
    done
    echo "- raw output: $res"
} | tee "$res/summary.md"
