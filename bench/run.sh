#!/usr/bin/env bash
# Builds and runs Fanout's benchmarks (bench/README.md), from anywhere:  bash bench/run.sh
# Arguments go to fanout_bench (e.g. `bash bench/run.sh chain fan`); JOBS=1 limits the build.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja >/dev/null
ninja -C build ${JOBS:+-j"$JOBS"} fanout_bench
exec build/bench/fanout_bench "$@"
