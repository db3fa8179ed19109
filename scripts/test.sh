#!/usr/bin/env bash
# The whole test suite from a clean checkout: installs packages, builds, starts a throwaway
# PostgreSQL server, runs ctest, stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bash scripts/build.sh
# The PostgreSQL halves of the catalog and sql tests need a server: a throwaway one (see
# scripts/postgres.sh), stopped on exit whatever happens, unless FANOUT_TEST_POSTGRES names one.
if [ -z "${FANOUT_TEST_POSTGRES:-}" ]; then
  postgres_env=$(bash scripts/postgres.sh start)  # an assignment, so that set -e sees a failure
  eval "$postgres_env"
  trap 'bash "$repo/scripts/postgres.sh" stop "$FANOUT_POSTGRES_DIR"' EXIT
fi
cd build
ctest --output-on-failure -j2 --timeout 300
