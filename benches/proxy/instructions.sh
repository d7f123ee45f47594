#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: a figure that does
# not move with the load of a shared machine (wrk's throughput does, by ±15 %).
#
# Each server under test runs under valgrind pinned to CPU 1, in front of the same nginx
# upstream on CPU 0, and is measured twice: idle (start-up and one request) and under
# `wrk -c8` for a few seconds; (instructions under load − instructions idle) / requests.
# Kernel time is not counted: both proxies make the same system calls per request (two
# reads, two writes; see the README).
#
#   benches/proxy/instructions.sh                # nginx, bare hyper proxy, portcullis (no log, log)
#   SECONDS_PER_RUN=6 benches/proxy/instructions.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/benches/proxy"
SECS=${SECONDS_PER_RUN:-5}
UP=${PORT_BASE:-18190}
SUT=$((UP + 1))
ADMIN=$((UP + 2))
work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-ir.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

for tool in valgrind callgrind_annotate nginx wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing" >&2; exit 2; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$repo" && cargo build --release -q -p portcullis-gateway --bin portcullis --example bare_proxy)
fi
mkdir -p "$work/tmp"
subst() { sed -e "s#@DIR@#$work#g" -e "s#@UPSTREAM_PORT@#$UP#g" -e "s#@PORT@#$SUT#g" "$1"; }
subst "$here/upstream.nginx.conf.in" > "$work/up.conf"
subst "$here/proxy.nginx.conf.in" | sed 's#^worker_processes 1;#worker_processes 1;\nmaster_process off;#' > "$work/px.conf"
taskset -c 0 nginx -c "$work/up.conf" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$UP/" && break; sleep 0.1; done

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }

measure() { # name, stop-signal, command...
    local name=$1 sig=$2; shift 2
    local n=0 phase pid
    for phase in idle load; do
        taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$work/$name.$phase" "$@" >/dev/null 2>&1 &
        pid=$!
        pids+=("$pid")
        for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$SUT/" && break; sleep 0.1; done
        if [ "$phase" = load ]; then
            n=$(timeout $((SECS + 20)) taskset -c 0 wrk -t1 -c8 -d"${SECS}s" "http://127.0.0.1:$SUT/" | awk '/requests in/ { print $1 }' || true)
        fi
        kill "-$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    local a b
    a=$(total "$work/$name.idle"); b=$(total "$work/$name.load")
    if [ -z "$a" ] || [ -z "$b" ] || [ -z "$n" ] || [ "$n" = 0 ]; then
        echo "| $name | failed (requests: ${n:-none}) | |"
        return
    fi
    echo "| $name | $n | $(( (b - a) / n )) |"
}

pc=(serve --upstream "http://127.0.0.1:$UP" --listen "127.0.0.1:$SUT" --admin-listen "127.0.0.1:$ADMIN")
echo "| server (under valgrind, CPU 1) | requests | instructions per request |"
echo "| --- | ---: | ---: |"
measure nginx-proxy QUIT nginx -c "$work/px.conf"
measure bare-hyper-proxy INT "$repo/target/release/examples/bare_proxy" --upstream "http://127.0.0.1:$UP" --listen "127.0.0.1:$SUT"
PORTCULLIS_LOG_LEVEL=warn measure portcullis-nolog INT "$repo/target/release/portcullis" "${pc[@]}"
PORTCULLIS_LOG_FILE="$work/access.log" PORTCULLIS_LOG_ROTATION=never measure portcullis-log INT "$repo/target/release/portcullis" "${pc[@]}"
