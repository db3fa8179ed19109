#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests. Installs nothing (scripts/install-deps.sh does).
#
#   eval "$(bash scripts/postgres.sh start)"   # prints export FANOUT_TEST_POSTGRES=... and
#                                              # FANOUT_POSTGRES_DIR=...
#   bash scripts/postgres.sh stop [DIR]        # DIR defaults to $FANOUT_POSTGRES_DIR
#
# `start` creates a cluster in a new temporary directory, listening only on 127.0.0.1 on a free
# port (its Unix socket in that directory too), with a role and database for the tests reached
# by password (the role may create roles: tests of read-only and limited roles make their own). PostgreSQL refuses to run as root, so as root the cluster belongs to the
# `postgres` system user; otherwise to the current user. `stop` stops it and removes the
# directory. Only stdout carries the export lines; progress and errors go to stderr.
set -euo pipefail

die() {
  echo "postgres.sh: $*" >&2
  exit 1
}

# The newest installed server's programs (Debian keeps them out of PATH).
find_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  else
    die "no PostgreSQL server found (initdb); install it with scripts/install-deps.sh"
  fi
}

# Runs a command as the cluster's owner, from a directory that owner can read.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
  local bindir dir port password started=0
  bindir=$(find_bindir)
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 ||
      die "running as root needs the 'postgres' system user (from the postgresql package)"
    dir=$(mktemp -d /tmp/fanout-postgres.XXXXXX)
    chown postgres: "$dir"
  else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/fanout-postgres.XXXXXX")
  fi
  touch "$dir/.fanout-postgres"  # marks the directory as ours for `stop`
  # Undo a half-finished start, whatever made it fail.
  START_DIR=$dir
  trap 'stop_dir "$START_DIR" >/dev/null 2>&1 || true' EXIT

  as_owner mkdir -m 700 "$dir/socket"
  as_owner "$bindir/initdb" --pgdata="$dir/data" --username=postgres --encoding=UTF8 \
    --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 --no-sync \
    >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    die "initdb failed"
  }
  # Throwaway data: durability settings off for speed.
  as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/socket'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

  # A port is free only until someone takes it: retry with another if the server cannot bind.
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 40000))
    port_in_use "$port" && continue
    if as_owner "$bindir/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait \
      --timeout=60 --options="-p $port" start >/dev/null 2>&1; then
      started=1
      break
    fi
  done
  if [ "$started" -ne 1 ]; then
    cat "$dir/server.log" >&2 2>/dev/null || true
    die "the server did not start"
  fi
  echo "$port" >"$dir/port"

  password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  as_owner "$bindir/psql" --no-psqlrc --quiet --host="$dir/socket" --port="$port" \
    --username=postgres --dbname=postgres --set=ON_ERROR_STOP=1 \
    --command="CREATE ROLE fanout LOGIN CREATEROLE PASSWORD '$password'" \
    --command="CREATE DATABASE fanout_test OWNER fanout" >/dev/null
  trap - EXIT

  echo "postgres.sh: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on" \
    "127.0.0.1:$port, data in $dir" >&2
  echo "export FANOUT_TEST_POSTGRES='postgresql://fanout:$password@127.0.0.1:$port/fanout_test'"
  echo "export FANOUT_POSTGRES_DIR='$dir'"
}

stop_dir() {
  local dir=$1 bindir
  [ -f "$dir/.fanout-postgres" ] || die "$dir is not a directory made by postgres.sh start"
  if [ -f "$dir/data/postmaster.pid" ]; then
    bindir=$(find_bindir)
    as_owner "$bindir/pg_ctl" --pgdata="$dir/data" --mode=fast --wait --timeout=60 stop \
      >/dev/null 2>&1 || echo "postgres.sh: pg_ctl stop failed; see $dir/server.log" >&2
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop)
    dir=${2:-${FANOUT_POSTGRES_DIR:-}}
    [ -n "$dir" ] || die "stop: give the directory, or set FANOUT_POSTGRES_DIR"
    stop_dir "$dir"
    ;;
  pause | resume)
    # Outage tests: stop the server keeping its data, then start it again on the same port.
    dir=${2:-${FANOUT_POSTGRES_DIR:-}}
    [ -f "$dir/.fanout-postgres" ] || die "$1: $dir is not a directory made by postgres.sh start"
    bindir=$(find_bindir)
    if [ "$1" = pause ]; then
      as_owner "$bindir/pg_ctl" --pgdata="$dir/data" --mode=fast --wait --timeout=60 stop >/dev/null
    else
      as_owner "$bindir/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        --options="-p $(cat "$dir/port")" start >/dev/null
    fi
    ;;
  *) die "usage: postgres.sh start | stop [DIR] | pause [DIR] | resume [DIR]" ;;
esac
