#!/usr/bin/env bash
# Makes (once) a container image of this machine's static busybox, for the
# sample services of examples/agents to build on without downloading their
# usual base, and prints its name. Needs podman and /bin/busybox (static):
# scripts/ensure-image-tools.sh installs both.
set -euo pipefail
name="localhost/ca-a2a-flow-busybox:local"
if podman image exists "$name"; then
  echo "$name"
  exit 0
fi
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin"
cp /bin/busybox "$dir/bin/busybox"
tar -C "$dir" -cf "$dir/rootfs.tar" bin
podman import --quiet "$dir/rootfs.tar" "$name" >/dev/null
echo "$name"
