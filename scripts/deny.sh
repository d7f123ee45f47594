#!/usr/bin/env bash
# Offline supply-chain scan: advisories, bans, licenses, sources (cargo-deny 0.20).
#
# CI cannot reach GitHub, so the RustSec advisory DB comes from the data-only snapshot in
# ../shared/advisory-db (sibling of the repo root; override with PORTCULLIS_ADVISORY_DB).
# cargo-deny wants <db-path>/advisory-db-3157b0e258782691 to be a git repository, so the
# snapshot is copied into a temp dir and committed there (recipe: SNAPSHOT.txt in the
# snapshot). deny.toml reads the db-path from PORTCULLIS_DENY_DB_PATH.
#
# Usage: scripts/deny.sh [extra cargo-deny options, e.g. --manifest-path PATH]
#   Without arguments it checks the workspace at the repo root with the repo's deny.toml.
#   Extra arguments go before `check` (cargo-deny's global options). DENY_CONFIG overrides
#   the config file. --locked: the scan never rewrites Cargo.lock.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
snapshot=${PORTCULLIS_ADVISORY_DB:-$repo/../shared/advisory-db}
config=${DENY_CONFIG:-$repo/deny.toml}

if [[ ! -d "$snapshot" ]]; then
    echo "deny.sh: advisory DB snapshot not found at $snapshot (set PORTCULLIS_ADVISORY_DB)" >&2
    exit 2
fi
snapshot=$(cd "$snapshot" && pwd)

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "deny.sh: cargo-deny not found, installing it (takes a few minutes)" >&2
    cargo install cargo-deny --locked
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-deny.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

db_root="$tmp/advisory-dbs"
db="$db_root/advisory-db-3157b0e258782691"
mkdir -p "$db_root"
cp -r "$snapshot" "$db"
rm -rf "$db/.git" # the snapshot is data-only; start a fresh repository either way
(
    cd "$db"
    git init -q
    git add -A
    git -c user.name=ci -c user.email=ci@localhost -c commit.gpgsign=false commit -qm snapshot
)
if [[ -f "$snapshot/SNAPSHOT.txt" ]]; then
    echo "deny.sh: advisory DB: $(head -n1 "$snapshot/SNAPSHOT.txt")" >&2
fi

export PORTCULLIS_DENY_DB_PATH="$db_root"
cd "$repo"
cargo deny --offline --locked --config "$config" "$@" check advisories bans licenses sources
