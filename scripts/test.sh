#!/usr/bin/env bash
# The whole test suite from a clean checkout: installs packages, builds, runs ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
cd build
ctest --output-on-failure -j2 --timeout 300
