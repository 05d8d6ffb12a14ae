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
# The `ui` page is tested in a real headless Chromium, through ChromeDriver.
scripts/ensure-browser.sh

# AWS steps are tested against moto on loopback, never against AWS, through
# aws-sim (sim/), the layer that makes moto answer as AWS does where it is kinder
# (DryRun, pages of 5, throttling, the time resources take to become usable):
# every AWS test talks to the layer, the layer to moto.
eval "$(scripts/start-moto.sh)"
export CA_A2A_FLOW_MOTO_URL="$AWS_ENDPOINT_URL"
# The suite's account has used ECS before: ECS's service-linked role exists.
# (On an account new to ECS the first cluster makes it, and ECS cannot use it
# for a moment; the layer simulates that, and its own test uses another account.)
# moto's own venv has boto3.
"${CA_A2A_FLOW_MOTO_VENV:-$PWD/.venv-moto}/bin/python" - "$CA_A2A_FLOW_MOTO_URL" <<'PY'
import json, sys, boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
         "Principal": {"Service": "ecs.amazonaws.com"}}]}
iam.create_role(RoleName="AWSServiceRoleForECS", Path="/aws-service-role/ecs.amazonaws.com/",
                AssumeRolePolicyDocument=json.dumps(trust))
PY

log="$(mktemp)"
sim_out="$(mktemp)"
sim_report="$(mktemp)"
SIM_PID=""
REGISTRY_PID=""
registry_dir="$(mktemp -d)"
trap 'for pid in "$SIM_PID" "$REGISTRY_PID"; do if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; done; kill "$MOTO_PID" 2>/dev/null || true; rm -rf "$log" "$sim_out" "$sim_report" "$registry_dir"' EXIT

# Full deploys build the stack's five images (examples/agents) with podman and
# push them to one registry on loopback (the image tests start their own). The
# sample services' base is an image made of this machine's static busybox:
# nothing is downloaded.
eval "$(scripts/start-registry.sh "$registry_dir")"
export CA_A2A_FLOW_TEST_REGISTRY="$REGISTRY_HOST"
export CA_A2A_FLOW_TEST_BASE_IMAGE="$(scripts/busybox-base-image.sh)"

# Everything is built first: the layer's binary starts before the tests run.
cargo test --workspace --locked --lib --bins --tests --no-run "$@"
# Realistic profile at 300 simulated seconds per real second: a NAT gateway is
# pending for about 0.4 s, an RDS instance creating for about 1.2 s, and the
# token buckets of AWS's API throttling refill 300 times faster than AWS's.
"${CARGO_TARGET_DIR:-target}/debug/aws-sim" --upstream "$CA_A2A_FLOW_MOTO_URL" --time-scale 300 --report "$sim_report" >"$sim_out" &
SIM_PID=$!
for _ in $(seq 1 100); do
  if grep -q '^listening on ' "$sim_out"; then break; fi
  if ! kill -0 "$SIM_PID" 2>/dev/null; then echo "aws-sim exited before listening" >&2; exit 1; fi
  sleep 0.1
done
AWS_ENDPOINT_URL="$(sed -n 's/^listening on //p' "$sim_out")"
if [ -z "$AWS_ENDPOINT_URL" ]; then echo "aws-sim did not say where it listens after 10 s" >&2; exit 1; fi
export AWS_ENDPOINT_URL
echo "aws-sim: answering at $AWS_ENDPOINT_URL, in front of moto at $CA_A2A_FLOW_MOTO_URL" >&2

# Unit tests of every crate and the integration tests; no doc tests (there are
# none) and no benches (they measure, they do not test).
cargo test --workspace --locked --lib --bins --tests "$@" 2>&1 | tee "$log"

# What the layer saw, from its report (written on SIGTERM).
kill -TERM "$SIM_PID" && wait "$SIM_PID" || true
SIM_PID=""
python3 - "$sim_report" <<'PY' || true
import json, sys
report = json.load(open(sys.argv[1]))
total = sum(sum(actions.values()) for actions in report["requests"].values())
made = ", ".join(f"{n} {what}" for what, n in sorted(report["simulated"].items())) or "none"
print(f"aws-sim: {total} AWS requests through the layer; answered by the layer itself: {made}")
print(f"aws-sim: {report['throttled']} answers throttled; {len(report['resources'])} resources took AWS's time to become usable")
PY
# The benchmark must keep compiling (it is run by hand: BENCHMARKS.md); this
# reuses the test build's dependencies, so it compiles only the bench itself.
cargo build --workspace --locked --benches --quiet

# One closing line with the totals of every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
