#!/usr/bin/env bash
# Configures and builds everything into ./build (Release with debug info) with Ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build -j"${FANOUT_JOBS:-2}"
