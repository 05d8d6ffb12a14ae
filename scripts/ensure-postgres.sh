#!/usr/bin/env bash
# Makes sure the Postgres that the tests use answers at $DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/postgres): starts the local
# cluster if it is installed but stopped, installs it (Debian, as root) if absent.
set -euo pipefail

url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=5432

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if answers; then
  echo "postgres: answering at $host:$port"
  exit 0
fi

case "$host" in
  127.0.0.1|localhost) ;;
  *) echo "postgres: nothing answers at $host:$port (DATABASE_URL); start it or point DATABASE_URL elsewhere" >&2; exit 1 ;;
esac

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "postgres: not installed and cannot install it here (needs root and apt-get); set DATABASE_URL" >&2
    exit 1
  fi
  echo "postgres: installing from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  # Local tests connect as postgres without a password, as on the project's machines.
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+$/\1trust/' "$hba"
  done
fi

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
echo "postgres: starting cluster $version/main"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  answers && { echo "postgres: answering at $host:$port"; exit 0; }
  sleep 1
done
echo "postgres: still not answering at $host:$port after 30 s" >&2
exit 1
