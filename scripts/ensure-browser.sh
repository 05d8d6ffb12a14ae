#!/usr/bin/env bash
# Makes sure the `ui` page's tests have their browser: Debian's headless
# Chromium and its ChromeDriver (WebDriver on loopback). Installs them from
# Debian's packages (as root) when missing, else fails loudly.
set -euo pipefail

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
  echo "browser: $(chromium --version 2>/dev/null | head -n 1) and its driver are here"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "browser: missing ${missing[*]} and cannot install them here (needs root and apt-get)" >&2
  exit 1
fi
echo "browser: installing ${missing[*]} from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -qq && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
command -v chromium >/dev/null && command -v chromedriver >/dev/null \
  || { echo "browser: chromium or chromedriver still missing after installing" >&2; exit 1; }
