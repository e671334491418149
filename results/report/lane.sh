#!/usr/bin/env bash
# One lane of the report experiment: its arms one after another, each started or resumed by
# arm.sh, skipping those already done. It stops when a run stops without being done (interrupted:
# the next `lane.sh` with the same list resumes it). Two lanes run at a time, one per core.
# usage: lane.sh "ARM SEED [options]" "ARM SEED [options]" ...
set -u
here=$(cd "$(dirname "$0")" && pwd)
runs=/work/runs/report
for spec in "$@"; do
  read -r arm seed opts <<< "$spec"
  summary="$runs/$arm/seed$seed/summary.json"
  if [ -f "$summary" ] && grep -Eq '"status": "(finished|diverged)"' "$summary"; then
    continue
  fi
  # shellcheck disable=SC2086
  "$here/arm.sh" "$arm" "$seed" $opts >> "$runs/$arm-seed$seed.log" 2>&1
  grep -Eq '"status": "(finished|diverged)"' "$summary" 2>/dev/null || exit 1
done
