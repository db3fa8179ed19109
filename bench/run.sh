#!/usr/bin/env bash
# Builds and runs Fanout's benchmarks (bench/README.md), from anywhere:  bash bench/run.sh
# Arguments pick sections (default: all): process chain fan (fanout_bench, the engine) and
# agent-latency agent-throughput (agent_bench, a real `fanout agent --dev`); JOBS=1 limits the
# build. Exits 1 when a benchmark could not run (after running the others), else 0, even on MISS.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=()
agent=()
for arg in "$@"; do
  case "$arg" in
    process | chain | fan) engine+=("$arg") ;;
    agent-latency | agent-throughput) agent+=("$arg") ;;
    *)
      echo "bench/run.sh: unknown section '$arg'; sections: process chain fan agent-latency" \
        "agent-throughput (default: all)" >&2
      exit 2
      ;;
  esac
done
run_engine=$(( $# == 0 || ${#engine[@]} > 0 ))
run_agent=$(( $# == 0 || ${#agent[@]} > 0 ))
targets=()
if (( run_engine )); then targets+=(fanout_bench); fi
if (( run_agent )); then targets+=(agent_bench); fi  # also builds `fanout`, the agent it starts
cmake -S . -B build -G Ninja >/dev/null
ninja -C build ${JOBS:+-j"$JOBS"} "${targets[@]}"
status=0
if (( run_engine )); then
  build/bench/fanout_bench ${engine[@]+"${engine[@]}"} || status=1
fi
if (( run_agent )); then
  if (( run_engine )); then echo; fi
  build/bench/agent_bench ${agent[@]+"${agent[@]}"} || status=1
fi
exit "$status"
