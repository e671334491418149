#!/usr/bin/env bash
# lane B of the eighth start (2026-12-04, an Intel Xeon): after baseline 1 (its lane's pid in $1, if given),
# the sparse and small starts of seed 1 from step 0 (the seventh start's, on the AMD, had only
# 20,000 steps and their checkpoints went with that machine) to baseline 1's generalized step
# (400,000 if it does not generalize)
S="--init report-xavier --sparse 0.9"; M="--init report-xavier --init-scale 0.01"
while [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; do sleep 10; done
./lane.sh 'baseline 1' || exit 1
# its generalized step, from the runs' folder or (finished on an earlier machine) the repository
b=baseline/seed1/summary.json; [ -f "$b" ] || b=${EVIDENCE:-/work/main/results/report}/$b
G=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['generalized_step'] or 400000)" "$b")
BUDGET=$G ./lane.sh "sparse0.9 1 $S" "small0.01 1 $M"
