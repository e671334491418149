#!/usr/bin/env bash
# A lane of the eighth start (2026-12-04, an Intel Xeon), one per seed: the baseline of seed $1,
# after the process $2 if given (an earlier lane), then that seed's sparse and small starts
# from step 0 (the seventh start's, on the AMD, had only 20,000 steps and their checkpoints went
# with that machine) to the baseline's generalized step (400,000 if it does not generalize).
# usage: lane8.sh SEED [PID]
set -u
S="--init report-xavier --sparse 0.9"; M="--init report-xavier --init-scale 0.01"
while [ -n "${2:-}" ] && kill -0 "$2" 2>/dev/null; do sleep 10; done
./lane.sh "baseline $1" || exit 1
# its generalized step, from the runs' folder or (finished on an earlier machine) the repository
b=baseline/seed$1/summary.json; [ -f "$b" ] || b=${EVIDENCE:-/work/main/results/report}/$b
G=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['generalized_step'] or 400000)" "$b")
BUDGET=$G ./lane.sh "sparse0.9 $1 $S" "small0.01 $1 $M"
