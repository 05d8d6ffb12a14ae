#!/usr/bin/env bash
# Starts Debian's docker-registry (an OCI registry) on a free loopback port,
# storing under DIR, and prints the environment that names it (to be eval'ed):
# REGISTRY_HOST (127.0.0.1:PORT) and REGISTRY_PID.
#   eval "$(scripts/start-registry.sh DIR)"
set -euo pipefail
dir="${1:?usage: scripts/start-registry.sh DIR}"
command -v docker-registry >/dev/null || { echo "registry: docker-registry is missing (scripts/ensure-image-tools.sh installs it)" >&2; exit 1; }
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$dir/data"
cat >"$dir/config.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $dir/data } }
http: { addr: 127.0.0.1:$port }
YML
nohup docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "registry: answering at 127.0.0.1:$port (pid $pid, log $dir/registry.log)" >&2
    printf 'export REGISTRY_HOST=127.0.0.1:%s\nexport REGISTRY_PID=%s\n' "$port" "$pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.1
done
echo "registry: docker-registry did not answer on 127.0.0.1:$port; its log:" >&2
cat "$dir/registry.log" >&2
exit 1
