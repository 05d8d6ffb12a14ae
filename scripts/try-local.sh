#!/usr/bin/env bash
# See ca-a2a-flow deploy the whole CA-A2A stack without an AWS account: starts
# the moto AWS emulator on loopback, deploys workflows/full.yaml against it with
# live progress (the five images built here from examples/agents with podman),
# prints the run's status, then runs it again to show that every step adopts
# what it owns. The emulator (and all it holds) stops when this
# script ends. The same workflow runs unchanged against real AWS with your
# credentials: ca-a2a-flow run workflows/full.yaml --input region=eu-west-3
#
#   scripts/try-local.sh                 # moto as it is: everything available at once
#   scripts/try-local.sh --realistic     # behind aws-sim: AWS's timings (a NAT gateway
#                                        # pending ~2 min, RDS creating ~6 min, in
#                                        # simulated time: 20x here, so ~6 s and ~18 s),
#                                        # tasks that start and pass health checks,
#                                        # throttling, reads that lag, live progress
#   scripts/try-local.sh --realistic 1   # ... at AWS's own pace (about 10 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

realistic=""
scale=20
if [ "${1:-}" = "--realistic" ]; then
  realistic=1
  scale="${2:-20}"
fi

eval "$(scripts/start-moto.sh)"
SIM_PID=""
registry_dir="$(mktemp -d)"
trap 'if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; fi; kill "$MOTO_PID" "${REGISTRY_PID:-}" 2>/dev/null || true; rm -rf "$registry_dir"' EXIT
# The five images (examples/agents) are built here with podman and pushed to a
# registry on loopback, on a base image made of this machine's static busybox.
scripts/ensure-image-tools.sh >&2
eval "$(scripts/start-registry.sh "$registry_dir")"
base_image="$(scripts/busybox-base-image.sh)"
if [ -n "$realistic" ]; then
  cargo build -q -p aws-sim
  sim_out="$(mktemp)"
  ./target/debug/aws-sim --upstream "$AWS_ENDPOINT_URL" --time-scale "$scale" >"$sim_out" &
  SIM_PID=$!
  for _ in $(seq 1 100); do
    if grep -q '^listening on ' "$sim_out"; then break; fi
    sleep 0.1
  done
  AWS_ENDPOINT_URL="$(sed -n 's/^listening on //p' "$sim_out")"
  export AWS_ENDPOINT_URL
  echo "aws-sim: AWS's timings at $scale simulated seconds a second, in front of moto ($AWS_ENDPOINT_URL)"
fi

state="${TMPDIR:-/tmp}/ca-a2a-flow-try-local.db"
rm -f "$state" "$state-wal" "$state-shm"
cargo build -q
flow() { ./target/debug/ca-a2a-flow --state "$state" "$@"; }
latest() { flow list --output json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])'; }

# moto's ECS runs no container, so no target ever becomes healthy in a target
# group: healthy_targets=0 (against AWS keep the default, 1); aws-sim starts
# the tasks and passes their health checks, so behind it the deploy waits for
# them. A short poll interval because moto makes everything available at once
# (behind aws-sim, the steps poll as they would on AWS, in its clock).
inputs=(--input stack=try-local --input build_on=local --input "registry=http://$REGISTRY_HOST"
        --input "base_image=$base_image" --input min_free_disk=1GiB)
if [ -z "$realistic" ]; then
  export CA_A2A_FLOW_POLL_INTERVAL=200ms
  inputs+=(--input healthy_targets=0)
else
  export CA_A2A_FLOW_TIME_SCALE="$scale"
fi

flow run workflows/full.yaml "${inputs[@]}"
run="$(latest)"
echo
flow status "$run"

echo
echo "== the same workflow again: every step finds what it owns and adopts it; nothing is created"
flow run workflows/full.yaml "${inputs[@]}" >/dev/null 2>&1
again="$(latest)"
flow status "$again" --output json | python3 -c '
import json, sys
steps = json.load(sys.stdin)["steps"]
actions = {}
for s in steps:
    a = (s.get("outputs") or {}).get("action", "(no resource)")
    actions[a] = actions.get(a, 0) + 1
print("second run:", ", ".join(f"{n} {a}" for a, n in sorted(actions.items())))
'

echo
echo "To destroy: nothing to do here, the emulator's resources vanish when it stops, now."
echo "Against real AWS (your credentials, no AWS_ENDPOINT_URL), the same command deploys for real:"
echo "  ca-a2a-flow run workflows/full.yaml --input region=eu-west-3"
echo "and \`ca-a2a-flow destroy <run-id>\` removes what the stack made, in reverse dependency order."
