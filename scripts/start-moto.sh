#!/usr/bin/env bash
# Starts moto (a third-party AWS emulator) in server mode on a free loopback
# port, from a venv with a pinned version, and prints the environment that points
# the AWS SDK at it (to be eval'ed). The server's pid is in $MOTO_PID.
#   eval "$(scripts/start-moto.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

# 5.2.5 returns a GetBucketVersioning body the Rust SDK rejects; 5.1.22 does not.
version="5.1.22"
venv="${CA_A2A_FLOW_MOTO_VENV:-$PWD/.venv-moto}"
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$version')" 2>/dev/null; then
  echo "moto: installing moto[server]==$version into $venv" >&2
  if ! python3 -m venv "$venv" >&2; then
    # Debian's python3 ships venv's ensurepip separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "moto: installing python3-venv" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2 || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2; }
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
    else
      echo "moto: python3 cannot create a venv; install python3-venv" >&2
      exit 1
    fi
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version" >&2
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
log="${TMPDIR:-/tmp}/ca-a2a-flow-moto-$port.log"
# scripts/moto-server.py is moto's server with EC2 tags read by id (the same
# answers; without it, describes slow down with every resource the suite made).
# MOTO_ECS_SERVICE_RUNNING: ECS services otherwise never become stable.
# MOTO_IAM_LOAD_MANAGED_POLICIES: AWS-managed policies can be attached.
# MOTO_ACM_VALIDATION_WAIT: moto issues a certificate at once, records or not;
# aws-sim shows it pending until its DNS validation records exist, as ACM does.
MOTO_ECS_SERVICE_RUNNING=1 MOTO_IAM_LOAD_MANAGED_POLICIES=true MOTO_ACM_VALIDATION_WAIT=0 \
  nohup "$venv/bin/python" scripts/moto-server.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "moto: $version answering at http://127.0.0.1:$port (pid $pid, log $log)" >&2
    cat <<ENV
export MOTO_PID=$pid
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_SESSION_TOKEN=testing
export AWS_REGION=eu-west-3
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE
ENV
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "moto: the server exited; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "moto: not answering on port $port after 10 s; log: $log" >&2
kill "$pid" 2>/dev/null || true
exit 1
