#!/usr/bin/env bash
# Login timing: does a failed login for a username that does not exist take as long as a
# failed login for one that does? If not, the response time tells who has an account.
#
# Starts `portcullis serve` on loopback with a users file holding one user, then sends N
# login attempts, alternating (known user, wrong password) and (unknown user, the same
# wrong password), one curl each, and compares the two latency samples: medians, p90,
# the difference of medians, a Mann-Whitney U test and a permutation test.
#
# Usage: benches/auth/login_timing.sh
#        N=1000 SKIP_BUILD=1 benches/auth/login_timing.sh
# See benches/auth/README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# ---- knobs ---------------------------------------------------------------------------
N=${N:-200}                  # attempts in all, half of each kind
PORT=${PORT:-18190}          # main listener; the admin listener is PORT+1
ADMIN_PORT=${ADMIN_PORT:-$((PORT + 1))}
WARMUP=${WARMUP:-10}         # attempts of each kind sent first and not counted
SKIP_BUILD=${SKIP_BUILD:-0}
PERMUTATIONS=${PERMUTATIONS:-10000}
READY_TIMEOUT=${READY_TIMEOUT:-15}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin=${BIN:-$target_dir/release/portcullis}

# Only the variables this script sets reach the gateway (an unknown PORTCULLIS_* is an error).
while read -r var; do unset "$var"; done < <(compgen -e | grep '^PORTCULLIS_' || true)

# Same length, same password: the two kinds of request differ only in whether the user
# exists, not in body size or parsing work.
KNOWN_USER=alice
UNKNOWN_USER=carol
WRONG_PASSWORD="not the password at all"

[[ "$N" =~ ^[0-9]+$ ]] && ((N >= 4)) || { echo "login_timing.sh: N must be an integer >= 4" >&2; exit 2; }
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "login_timing.sh: '$tool' not found" >&2; exit 1; }
done

# ---- build ---------------------------------------------------------------------------
if [[ "$SKIP_BUILD" != 1 ]]; then
    echo "building: cargo build --release -p portcullis-gateway --bin portcullis" >&2
    (cd "$repo" && cargo build --release -q -p portcullis-gateway --bin portcullis)
fi
[[ -x "$bin" ]] || { echo "login_timing.sh: no binary at $bin" >&2; exit 1; }

# ---- scratch dir, process bookkeeping ------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-login-timing.XXXXXX")
gw_pid=
cleanup() {
    if [[ -n "$gw_pid" ]] && kill -0 "$gw_pid" 2>/dev/null; then
        kill -TERM "$gw_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$gw_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$gw_pid" 2>/dev/null || true
        wait "$gw_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "login_timing.sh: interrupted" >&2; exit 130' INT TERM

for p in "$PORT" "$ADMIN_PORT"; do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then
        echo "login_timing.sh: port $p is taken; set PORT" >&2
        exit 1
    fi
done

# ---- the users file: one user, its password on standard input ------------------------
users_file="$tmp/users.toml"
printf '%s\n' "correct horse battery staple" |
    "$bin" users add "$KNOWN_USER" --role user --users-file "$users_file" >/dev/null

# ---- the gateway ---------------------------------------------------------------------
# Lockout raised to its maxima so that no attempt is refused by a lock (a 429 costs no
# argon2 run and would contaminate the samples); the upstream is never contacted.
env PORTCULLIS_AUTH_USERS_FILE="$users_file" \
    PORTCULLIS_AUTH_LOCKOUT_MAX_FAILURES=10000 \
    PORTCULLIS_AUTH_LOCKOUT_ACCOUNT_MAX_FAILURES=1000000 \
    PORTCULLIS_AUTH_LOCKOUT_IP_MAX_FAILURES=1000000 \
    PORTCULLIS_LOG_LEVEL=warn \
    "$bin" serve --upstream http://127.0.0.1:1 \
    --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    >"$tmp/gateway.log" 2>&1 &
gw_pid=$!

deadline=$((SECONDS + READY_TIMEOUT))
until curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/livez"; do
    if ! kill -0 "$gw_pid" 2>/dev/null || ((SECONDS > deadline)); then
        echo "login_timing.sh: the gateway did not start:" >&2
        cat "$tmp/gateway.log" >&2
        exit 1
    fi
    sleep 0.1
done

# ---- the attempts --------------------------------------------------------------------
url="http://127.0.0.1:$PORT/auth/login"
attempt() { # USER -> "STATUS SECONDS"
    curl -s -o /dev/null --max-time 10 -w '%{http_code} %{time_total}\n' \
        -H 'content-type: application/json' \
        --data "{\"username\":\"$1\",\"password\":\"$WRONG_PASSWORD\"}" "$url"
}

for _ in $(seq "$WARMUP"); do
    attempt "$KNOWN_USER" >/dev/null
    attempt "$UNKNOWN_USER" >/dev/null
done

: >"$tmp/known.txt"
: >"$tmp/unknown.txt"
for i in $(seq "$N"); do
    if ((i % 2)); then
        attempt "$KNOWN_USER" >>"$tmp/known.txt"
    else
        attempt "$UNKNOWN_USER" >>"$tmp/unknown.txt"
    fi
done

# ---- the analysis --------------------------------------------------------------------
echo "login timing: $N attempts after $WARMUP warm-up pairs, alternating; one connection each"
python3 - "$tmp/known.txt" "$tmp/unknown.txt" "$PERMUTATIONS" <<'PY'
import math
import random
import statistics
import sys

def load(path):
    times, other = [], {}
    with open(path) as f:
        for line in f:
            status, secs = line.split()
            if status == "401":
                times.append(float(secs) * 1000.0)
            else:
                other[status] = other.get(status, 0) + 1
    return times, other

def quantile(xs, q):
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

def mann_whitney(a, b):
    """Two-sided Mann-Whitney U, normal approximation with tie correction."""
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    n = len(pooled)
    ranks = [0.0] * n
    ties = 0.0
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    n1, n2 = len(a), len(b)
    r1 = sum(r for r, (_, g) in zip(ranks, pooled) if g == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return u1, 1.0
    z = (abs(u1 - mean) - 0.5) / math.sqrt(var)
    return u1, math.erfc(max(z, 0.0) / math.sqrt(2))

def permutation(a, b, rounds):
    """Two-sided permutation test on the difference of medians."""
    observed = abs(statistics.median(a) - statistics.median(b))
    pooled = a + b
    rng = random.Random(8265)
    hits = 0
    for _ in range(rounds):
        rng.shuffle(pooled)
        d = abs(statistics.median(pooled[: len(a)]) - statistics.median(pooled[len(a):]))
        if d >= observed:
            hits += 1
    return (hits + 1) / (rounds + 1)

known, known_other = load(sys.argv[1])
unknown, unknown_other = load(sys.argv[2])
rounds = int(sys.argv[3])
for name, other in (("known", known_other), ("unknown", unknown_other)):
    if other:
        print(f"warning: {name}: answers other than 401 left out: {other}")
if len(known) < 2 or len(unknown) < 2:
    sys.exit("too few 401 answers to compare")

rows = [("known user, wrong password", known), ("unknown user", unknown)]
print(f"{'':28} {'n':>5} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'max ms':>8}")
for label, xs in rows:
    print(f"{label:28} {len(xs):5d} {statistics.median(xs):10.2f} {quantile(xs, 0.9):8.2f}"
          f" {min(xs):8.2f} {max(xs):8.2f}")
diff = statistics.median(unknown) - statistics.median(known)
rel = diff / statistics.median(known) * 100
u, p_mw = mann_whitney(known, unknown)
p_perm = permutation(known, unknown, rounds)
print(f"difference of medians (unknown - known): {diff:+.2f} ms ({rel:+.1f}%)")
print(f"Mann-Whitney U = {u:.0f}, two-sided p = {p_mw:.3g}")
print(f"permutation test on the medians ({rounds} rounds), two-sided p = {p_perm:.3g}")
print("p >= 0.05: no evidence that the response time tells known from unknown usernames"
      if min(p_mw, p_perm) >= 0.05 else
      "p < 0.05: the two kinds of login take measurably different times")
PY
