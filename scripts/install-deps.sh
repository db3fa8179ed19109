#!/usr/bin/env bash
# Installs the Debian 12 packages Fanout builds and tests with. Skips apt when all are present.
# `install-deps.sh bench` also installs the peers bench/run.sh compares the agent-pool with
# (GNU parallel, Celery with Redis, Dask; bench/peers.py).
set -euo pipefail
if [ $# -gt 1 ] || { [ $# -eq 1 ] && [ "$1" != bench ]; }; then
  echo "usage: scripts/install-deps.sh [bench]" >&2
  exit 2
fi
packages=(
  g++ cmake ninja-build pkg-config
  libyaml-cpp-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev libsqlite3-dev libpq-dev
  libcli11-dev libfmt-dev libspdlog-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  sqlite3
  iproute2
  postgresql
  chromium
)
if [ "${1:-}" = bench ]; then
  packages+=(parallel python3-celery python3-redis redis-server python3-dask python3-distributed)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
