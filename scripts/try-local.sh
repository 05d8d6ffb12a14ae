#!/usr/bin/env bash
# See ca-a2a-flow deploy without an AWS account: starts the moto AWS emulator on
# loopback, deploys workflows/stack/network.yaml against it with live progress,
# then prints the run's status. The emulator (and all it holds) stops when this
# script ends. The same workflow runs unchanged against real AWS with your
# credentials: ca-a2a-flow run workflows/stack/network.yaml --input region=...
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/start-moto.sh)"
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT

state="${TMPDIR:-/tmp}/ca-a2a-flow-try-local.db"
rm -f "$state" "$state-wal" "$state-shm"
cargo build -q
flow() { ./target/debug/ca-a2a-flow --state "$state" "$@"; }

flow run workflows/stack/network.yaml --input stack=try-local
run="$(flow list --output json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')"
echo
flow status "$run"

echo
echo "== the same workflow again: every step finds what it owns and adopts it; nothing is created"
flow run workflows/stack/network.yaml --input stack=try-local
again="$(flow list --output json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')"
flow logs "$again" | grep -E "adopted" || true

echo
echo "Nothing to clean up: the emulator's resources vanish when it stops, now."
echo "Against real AWS (your credentials, no AWS_ENDPOINT_URL), the same command deploys for real:"
echo "  ca-a2a-flow run workflows/stack/network.yaml --input region=eu-west-3"
echo "Everything a stack makes carries the tag ca-a2a-flow:stack=<stack>; \`ca-a2a-flow destroy\` arrives with"
echo "the plan/destroy/gc issue."
