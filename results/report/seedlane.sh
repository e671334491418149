#!/usr/bin/env bash
# The lane of one seed: its baseline, after the process $2 if given (an earlier lane), then its
# sparse and small starts, from step 0, to the step where that baseline generalized (400,000 if
# it did not). Run from the runs' folder, with lane.sh's settings (RUNS, PINNED, EVIDENCE).
# usage: seedlane.sh SEED [PID]
set -u
S="--init report-xavier --sparse 0.9"; M="--init report-xavier --init-scale 0.01"
while [ -n "${2:-}" ] && kill -0 "$2" 2>/dev/null; do sleep 10; done
./lane.sh "baseline $1" || exit 1
# its generalized step, from the runs' folder or (finished on an earlier machine) the repository
b=baseline/seed$1/summary.json; [ -f "$b" ] || b=${EVIDENCE:-/work/main/results/report}/$b
G=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['generalized_step'] or 400000)" "$b")
BUDGET=$G ./lane.sh "sparse0.9 $1 $S" "small0.01 $1 $M"
