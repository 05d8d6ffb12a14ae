#!/usr/bin/env bash
# The test command (README): every test of the workspace, once, against real
# SQLite files, a real Postgres ($DATABASE_URL, default 127.0.0.1:5432) and the
# moto AWS emulator on a free loopback port (scripts/start-moto.sh).
# Extra arguments go to `cargo test` (a test name filter, for example).
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
scripts/ensure-postgres.sh
# Image builds are tested with podman against a real registry on loopback.
scripts/ensure-image-tools.sh

# AWS steps are tested against moto on loopback, never against AWS.
eval "$(scripts/start-moto.sh)"

# Unit tests of every crate and the integration tests; no doc tests (there are
# none) and no benches (they measure, they do not test).
log="$(mktemp)"
trap 'kill "$MOTO_PID" 2>/dev/null || true; rm -f "$log"' EXIT
cargo test --workspace --locked --lib --bins --tests "$@" 2>&1 | tee "$log"
# The benchmark must keep compiling (it is run by hand: BENCHMARKS.md); this
# reuses the test build's dependencies, so it compiles only the bench itself.
cargo build --workspace --locked --benches --quiet

# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
