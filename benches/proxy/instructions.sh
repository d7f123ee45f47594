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
#   SCENARIOS=rate-limit benches/proxy/instructions.sh   # nginx +/- limit_req, portcullis
#                                                        # +/- rate limiting, memory / Redis
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/benches/proxy"
SECS=${SECONDS_PER_RUN:-5}
UP=${PORT_BASE:-18190}
SUT=$((UP + 1))
ADMIN=$((UP + 2))
REDIS_PORT=${REDIS_PORT:-$((UP + 3))}
LIMITS_CONFIG=${LIMITS_CONFIG:-$here/limits.toml}
SCENARIOS=${SCENARIOS:-nginx-proxy,bare-hyper-proxy,portcullis-nolog,portcullis-log}
case "$SCENARIOS" in
all) SCENARIOS=nginx-proxy,nginx-limit,bare-hyper-proxy,portcullis-nolog,portcullis-log,portcullis-nolimit,portcullis-limit-memory,portcullis-limit-redis ;;
rate-limit) SCENARIOS=nginx-proxy,nginx-limit,portcullis-nolimit,portcullis-limit-memory,portcullis-limit-redis ;;
esac
for s in ${SCENARIOS//,/ }; do
    case "$s" in
    nginx-proxy | nginx-limit | bare-hyper-proxy | portcullis-nolog | portcullis-log | portcullis-nolimit | \
        portcullis-limit-memory | portcullis-limit-redis) ;;
    *) echo "instructions.sh: unknown scenario '$s'" >&2; exit 2 ;;
    esac
done
pcbin=${PORTCULLIS_BIN:-$repo/target/release/portcullis}
# Each SUT gets only the PORTCULLIS_* variables its scenario sets (the gateway refuses unknown ones).
while read -r v; do
    unset "$v"
done < <(compgen -e | grep '^PORTCULLIS_' || true)
work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-ir.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

tools=(valgrind callgrind_annotate nginx wrk taskset curl)
[[ ",$SCENARIOS," != *",portcullis-limit-redis,"* ]] || tools+=(redis-server redis-cli)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing" >&2; exit 2; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$repo" && cargo build --release -q -p portcullis-gateway --bin portcullis --example bare_proxy)
fi
mkdir -p "$work/tmp"
subst() { sed -e "s#@DIR@#$work#g" -e "s#@UPSTREAM_PORT@#$UP#g" -e "s#@PORT@#$SUT#g" "$1"; }
subst "$here/upstream.nginx.conf.in" > "$work/up.conf"
subst "$here/proxy.nginx.conf.in" | sed 's#^worker_processes 1;#worker_processes 1;\nmaster_process off;#' > "$work/px.conf"
subst "$here/proxy-limit.nginx.conf.in" | sed 's#^worker_processes 1;#worker_processes 1;\nmaster_process off;#' > "$work/px-limit.conf"
taskset -c 0 nginx -c "$work/up.conf" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$UP/" && break; sleep 0.1; done

total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'; }

measure() { # name, stop-signal, command...
    local name=$1 sig=$2; shift 2
    local n=0 phase pid
    for phase in idle load; do
        taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$work/$name.$phase" \
            --log-file="$work/$name.$phase.valgrind" "$@" >/dev/null 2>"$work/$name.$phase.err" &
        pid=$!
        pids+=("$pid")
        for _ in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break # exited at start (e.g. a config error)
            curl -sf -o /dev/null "http://127.0.0.1:$SUT/" && break
            sleep 0.1
        done
        if ! kill -0 "$pid" 2>/dev/null; then
            local why
            why=$(awk 'NF { sub(/^[ \t]+/, ""); l[n++] = $0 } n == 3 { exit }
                END { for (i = 0; i < n; i++) printf "%s%s", (i ? " / " : ""), l[i] }' "$work/$name.$phase.err" |
                sed 's/|/\\|/g')
            echo "| $name | failed: exited at start${why:+: $why} | |"
            wait "$pid" 2>/dev/null || true
            return 0
        fi
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
IFS=, read -r -a wanted <<< "$SCENARIOS"
for s in "${wanted[@]}"; do
    case "$s" in
    nginx-proxy) measure "$s" QUIT nginx -c "$work/px.conf" ;;
    nginx-limit) measure "$s" QUIT nginx -c "$work/px-limit.conf" ;;
    bare-hyper-proxy)
        measure "$s" INT "$repo/target/release/examples/bare_proxy" --upstream "http://127.0.0.1:$UP" \
            --listen "127.0.0.1:$SUT"
        ;;
    portcullis-nolog) PORTCULLIS_LOG_LEVEL=warn measure "$s" INT "$pcbin" "${pc[@]}" ;;
    portcullis-log)
        PORTCULLIS_LOG_FILE="$work/access.log" PORTCULLIS_LOG_ROTATION=never measure "$s" INT "$pcbin" "${pc[@]}"
        ;;
    portcullis-nolimit)
        PORTCULLIS_LOG_LEVEL=warn PORTCULLIS_RATE_LIMIT_ENABLED=false measure "$s" INT "$pcbin" "${pc[@]}"
        ;;
    portcullis-limit-memory)
        PORTCULLIS_LOG_LEVEL=warn measure "$s" INT "$pcbin" "${pc[@]}" --config "$LIMITS_CONFIG"
        ;;
    portcullis-limit-redis)
        # redis on CPU 0 with the load; only the gateway's own instructions are counted
        taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$work" >/dev/null 2>&1 &
        redis_pid=$!
        pids+=("$redis_pid")
        for _ in $(seq 50); do [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
        PORTCULLIS_LOG_LEVEL=warn PORTCULLIS_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
            measure "$s" INT "$pcbin" "${pc[@]}" --config "$LIMITS_CONFIG"
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        ;;
    esac
done
