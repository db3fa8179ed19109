#!/usr/bin/env bash
# Builds and runs Fanout's benchmarks (bench/README.md), from anywhere:  bash bench/run.sh
# Arguments pick sections (default: all): process chain fan events logging (fanout_bench, the
# engine and the catalog), agent-latency agent-throughput (agent_bench, a real `fanout agent
# --dev`) and pool-rate pool-makespan pool-latency (pool_bench, parents over agent-pools); JOBS=1
# limits the build. The events section also measures PostgreSQL: at $FANOUT_TEST_POSTGRES when
# set, else in a throwaway server (scripts/postgres.sh) started here when PostgreSQL is installed
# and stopped after fanout_bench, else that line says skipped. Exits 1 when a benchmark could not
# run (after running the others), 2 on an unknown section, else 0, even on MISS. Installs what it
# needs first (scripts/install-deps.sh bench: the build's packages and pool-rate's peers).
set -euo pipefail
cd "$(dirname "$0")/.."
engine=()
agent=()
pool=()
for arg in "$@"; do
  case "$arg" in
    process | chain | fan | events | logging) engine+=("$arg") ;;
    agent-latency | agent-throughput) agent+=("$arg") ;;
    pool-rate | pool-makespan | pool-latency) pool+=("$arg") ;;
    *)
      echo "bench/run.sh: unknown section '$arg'; sections: process chain fan events logging" \
        "agent-latency agent-throughput pool-rate pool-makespan pool-latency (default: all)" >&2
      exit 2
      ;;
  esac
done
run_engine=$(( $# == 0 || ${#engine[@]} > 0 ))
run_agent=$(( $# == 0 || ${#agent[@]} > 0 ))
run_pool=$(( $# == 0 || ${#pool[@]} > 0 ))
run_events=$(( $# == 0 ))
for arg in ${engine[@]+"${engine[@]}"}; do
  if [ "$arg" = events ]; then run_events=1; fi
done
targets=()
if (( run_engine )); then targets+=(fanout_bench); fi
if (( run_agent )); then targets+=(agent_bench); fi  # also builds `fanout`, the agent it starts
if (( run_pool )); then targets+=(pool_bench); fi    # the same
bash scripts/install-deps.sh bench
cmake -S . -B build -G Ninja >/dev/null
ninja -C build ${JOBS:+-j"$JOBS"} "${targets[@]}"

# A throwaway PostgreSQL for the events section, stopped as soon as fanout_bench is done (and on
# any exit, including Ctrl-C).
postgres_dir=""
stop_postgres() {
  if [ -n "$postgres_dir" ]; then
    bash scripts/postgres.sh stop "$postgres_dir" || true
    postgres_dir=""
    unset FANOUT_TEST_POSTGRES FANOUT_POSTGRES_DIR
  fi
}
trap stop_postgres EXIT
trap 'exit 130' INT TERM
if (( run_events )) && [ -z "${FANOUT_TEST_POSTGRES:-}" ]; then
  if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; then
    if postgres_env=$(bash scripts/postgres.sh start); then
      eval "$postgres_env"
      postgres_dir=$FANOUT_POSTGRES_DIR
    else
      echo "bench/run.sh: could not start a throwaway PostgreSQL; its events line is skipped" >&2
    fi
  else
    echo "bench/run.sh: PostgreSQL is not installed and FANOUT_TEST_POSTGRES is not set; its" \
      "events line is skipped" >&2
  fi
fi

status=0
if (( run_engine )); then
  build/bench/fanout_bench ${engine[@]+"${engine[@]}"} || status=1
fi
stop_postgres
if (( run_agent )); then
  if (( run_engine )); then echo; fi
  build/bench/agent_bench ${agent[@]+"${agent[@]}"} || status=1
fi
if (( run_pool )); then
  if (( run_engine || run_agent )); then echo; fi
  build/bench/pool_bench ${pool[@]+"${pool[@]}"} || status=1
fi
exit "$status"
