#!/usr/bin/env bash
# Install what building and testing dsyncd needs, from the distribution's packages (Debian/Ubuntu).
# Does nothing when everything is there already; uses sudo when not run as root.
set -euo pipefail

packages=(
  meson ninja-build pkg-config gcc
  libssl-dev libevent-dev libhiredis-dev libcjson-dev libinih-dev
  openssl curl python3 redis-server spin iproute2 iptables valgrind
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
