#!/usr/bin/env bash
# Makes sure the image tests' tools are here: podman and buildah (built with
# --isolation=chroot: no container engine needs to run), Debian's
# docker-registry (each test serves its own on loopback) and a static busybox
# (the test images are FROM scratch: nothing is downloaded from a hub).
# Installs what is missing from Debian's packages (as root), else fails loudly.
set -euo pipefail

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v buildah >/dev/null || missing+=(buildah)
command -v docker-registry >/dev/null || missing+=(docker-registry)
[ -x /bin/busybox ] || missing+=(busybox-static)

if [ ${#missing[@]} -eq 0 ]; then
  echo "image tools: podman, buildah, docker-registry and busybox are here"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "image tools: missing ${missing[*]} and cannot install them here (needs root and apt-get)" >&2
  exit 1
fi
echo "image tools: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -q "${missing[@]}" >/dev/null; }
# The registry package starts a system service where an init system runs; the
# tests start their own, so a stray one is stopped.
pkill -x docker-registry 2>/dev/null || true
