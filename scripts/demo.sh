#!/usr/bin/env bash
# The demo from a clean checkout: installs packages and builds, starts three local agents that
# share one catalog, deploys the example child package and job to all three, runs the example
# parent that balances 24 children of different lengths over them, shows which agent ran what
# and the parent's overview report (also as HTML with a timeline), and stops the agents.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
fanout="$PWD/build/apps/fanout/fanout"
examples="$PWD/examples/remote"
work=$(mktemp -d /tmp/fanout-demo.XXXXXX)
catalog="sqlite:$work/fanout.db"
(umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token")

pids=()
stop_agents() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_agents EXIT

echo "== starting three agents (slots: 2 each) in $work"
urls=()
for n in 1 2 3; do
  mkdir -p -m 0755 "$work/srv$n"  # agents refuse a data_dir others may write in
  cat > "$work/srv$n/agent.yaml" <<EOF
name: srv$n
listen: 127.0.0.1:0
data_dir: $work/srv$n/data
slots: 2
token_file: $work/token
catalog: "$catalog"
EOF
  "$fanout" agent --config "$work/srv$n/agent.yaml" >"$work/srv$n/agent.out" 2>"$work/srv$n/agent.err" &
  pids+=($!)
done
for n in 1 2 3; do
  for _ in $(seq 100); do
    grep -q "listening on" "$work/srv$n/agent.out" 2>/dev/null && break
    sleep 0.05
  done
  url=$(head -1 "$work/srv$n/agent.out" | awk '{print $NF}')
  [ -n "$url" ] || { echo "agent srv$n did not start:"; cat "$work/srv$n/agent.err"; exit 1; }
  echo "   srv$n at $url"
  urls+=("$url")
done

echo
echo "== fanout deploy load-region.yaml load-region.job.yaml to all three"
"$fanout" deploy "$examples/load-region.yaml" "$examples/load-region.job.yaml" \
  --agent "${urls[0]}" --agent "${urls[1]}" --agent "${urls[2]}" --token-file "$work/token"

echo
echo "== fanout run nightly-remote.yaml: 24 regions over the pool"
set +e
"$fanout" run "$examples/nightly-remote.yaml" --catalog "$catalog" \
  --set srv1_url="${urls[0]}" --set srv2_url="${urls[1]}" --set srv3_url="${urls[2]}" \
  --set token_file="$work/token"
status=$?
set -e

echo
echo "== which agent ran what (from the catalog $work/fanout.db)"
sqlite3 -header -column "$work/fanout.db" "
  WITH parent AS (SELECT id FROM executions WHERE package = 'nightly-remote'
                  ORDER BY started_at DESC LIMIT 1)
  SELECT c.agent,
         COUNT(*) AS children,
         printf('%.1f s', SUM((julianday(c.ended_at) - julianday(c.started_at)) * 86400)) AS busy,
         GROUP_CONCAT(p.value, ' ') AS regions
  FROM executions c
  JOIN execution_parameters p ON p.execution_id = c.id AND p.name = 'region'
  WHERE c.parent_id = (SELECT id FROM parent)
  GROUP BY c.agent ORDER BY c.agent;"

parent=$(sqlite3 "$work/fanout.db" "SELECT id FROM executions WHERE package = 'nightly-remote'
                                     ORDER BY started_at DESC LIMIT 1")
echo
echo "== fanout report overview $parent"
"$fanout" report overview "$parent" --catalog "$catalog"
"$fanout" report overview "$parent" --catalog "$catalog" --html "$work/overview.html"

echo
echo "== stopping the agents"
stop_agents
trap - EXIT
echo "done; everything is in $work"
exit $status
