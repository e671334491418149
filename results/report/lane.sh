#!/usr/bin/env bash
# One lane of the report experiment: its arms one after another, each trained to BUDGET steps
# (default 400,000) by arm.sh, skipping those already done (finished that budget, or diverged).
# A run counts as done by its summary.json in the runs' folder or, for runs finished on an
# earlier machine, in the repository's copy of their files (EVIDENCE). It stops when a run stops
# without being done (interrupted: the next `lane.sh` with the same list resumes it). Two lanes
# run at a time, one per core.
# usage: [BUDGET=N] [EVIDENCE=DIR] [RUNS=DIR] [PINNED=DIR] lane.sh "ARM SEED [options]" ...
set -u
here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-/work/runs/report}
evidence=${EVIDENCE:-/work/main/results/report}
budget=${BUDGET:-400000}
done_() {
  python3 - "$1" "$budget" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(1)
ok = s["status"] == "diverged" or (s["status"] == "finished" and s["step_budget"] >= int(sys.argv[2]))
sys.exit(0 if ok else 1)
PY
}
for spec in "$@"; do
  read -r arm seed opts <<< "$spec"
  summary="$runs/$arm/seed$seed/summary.json"
  done_ "$summary" && continue
  if [ ! -f "$runs/$arm/seed$seed/checkpoint.npz" ] && done_ "$evidence/$arm/seed$seed/summary.json"; then
    continue # finished on an earlier machine
  fi
  # shellcheck disable=SC2086
  BUDGET=$budget "$here/arm.sh" "$arm" "$seed" $opts >> "$runs/$arm-seed$seed.log" 2>&1
  done_ "$summary" || exit 1
done
