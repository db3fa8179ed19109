#!/usr/bin/env bash
# The demo from a clean checkout: installs packages, builds, then runs the example parent
# package, which loads six regions with child packages (in process, two at a time) and one in
# a separate process, and prints what ran from the catalog.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
fanout="$PWD/build/apps/fanout/fanout"
work=$(mktemp -d /tmp/fanout-demo.XXXXXX)
cp -r examples/. "$work/"
cd "$work"
echo "== fanout run nightly.yaml   (in $work)"
set +e
"$fanout" run nightly.yaml --catalog "sqlite:$work/fanout.db"
status=$?
set -e
echo
echo "== what ran (from the catalog $work/fanout.db)"
sqlite3 -header -column fanout.db "
  SELECT e.package, COALESCE(p.package, '') AS parent, e.status,
         printf('%.0f ms', (julianday(e.ended_at) - julianday(e.started_at)) * 86400000) AS duration
  FROM executions e LEFT JOIN executions p ON p.id = e.parent_id
  ORDER BY e.started_at;"
echo
sqlite3 -header -column fanout.db "
  SELECT task_path, task_type, status, attempt FROM task_runs
  WHERE execution_id = (SELECT id FROM executions WHERE parent_id IS NULL OR parent_id = ''
                        ORDER BY started_at DESC LIMIT 1)
  ORDER BY started_at;"
exit $status
