#!/usr/bin/env bash
# Times a chain of no-op steps through `ca-a2a-flow run` (release build) and
# through DBOS 3.4 (Python), side by side, each as a whole process as a user
# runs it, on SQLite and on Postgres ($DATABASE_URL, default the local server).
# Rounds alternate ours and theirs, each on a fresh state store; the table gives
# the median per step and the ratio.
#   scripts/compare-dbos.sh [STEPS] [ROUNDS]      (default 1000 steps, 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-1000}"
rounds="${2:-5}"
admin="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
base="${admin%/*}"

cargo build --release --locked --quiet --bin ca-a2a-flow
flow="$PWD/target/release/ca-a2a-flow"
if [ ! -x .venv-dbos/bin/python ]; then
  python3 -m venv .venv-dbos
  .venv-dbos/bin/pip install --quiet 'dbos==3.4.0'
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
{
  echo "name: chain"
  echo "steps:"
  for ((i = 0; i < steps; i++)); do
    echo "  - id: s$i"
    echo "    uses: noop"
    if ((i > 0)); then echo "    needs: [s$((i - 1))]"; fi
  done
} > "$work/chain.yaml"

now_ns() { date +%s%N; }
psql_admin() { psql "$admin" -qAt -c "$1" >/dev/null; }

# ms per step of one whole process
time_it() {
  local start end
  start=$(now_ns)
  "$@" >/dev/null 2>&1
  end=$(now_ns)
  awk -v s="$start" -v e="$end" -v n="$steps" 'BEGIN { printf "%.3f\n", (e - s) / 1e6 / n }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "| store | steps | ca-a2a-flow run (ms/step) | DBOS 3.4 (ms/step) | DBOS / ours |"
echo "|---|---|---|---|---|"
for store in sqlite postgres; do
  ours=() theirs=()
  for ((r = 0; r < rounds; r++)); do
    if [ "$store" = sqlite ]; then
      state="$work/flow-$r.db"
      sys="sqlite:///$work/dbos-$r.sqlite"
    else
      db="flow_cmp_$$_$r"
      psql_admin "CREATE DATABASE ${db}_a"
      psql_admin "CREATE DATABASE ${db}_b"
      state="$base/${db}_a"
      sys="${base/postgres:\/\//postgresql://}/${db}_b"
    fi
    ours+=("$(time_it "$flow" --state "$state" run "$work/chain.yaml")")
    theirs+=("$(time_it .venv-dbos/bin/python benches/dbos_chain.py "$sys" "$steps")")
    if [ "$store" = postgres ]; then
      psql_admin "DROP DATABASE ${db}_a WITH (FORCE)"
      psql_admin "DROP DATABASE ${db}_b WITH (FORCE)"
    fi
  done
  o=$(printf '%s\n' "${ours[@]}" | median)
  t=$(printf '%s\n' "${theirs[@]}" | median)
  echo "| $store | $steps | $o (of ${ours[*]}) | $t (of ${theirs[*]}) | $(awk -v o="$o" -v t="$t" 'BEGIN { printf "%.1f×", t / o }') |"
done
