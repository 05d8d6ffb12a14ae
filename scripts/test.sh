#!/usr/bin/env bash
# The test command (README): every test of the workspace, once, against real
# SQLite files and a real Postgres ($DATABASE_URL, default 127.0.0.1:5432).
# Extra arguments go to `cargo test` (a test name filter, for example).
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
scripts/ensure-postgres.sh

cargo test --workspace --locked "$@"
