#!/usr/bin/env bash
# lane B, relaunched (2026-12-03, third session): after baseline 0 (pid in $1), its sparse and
# small starts raised to its generalized step (400,000 if it does not generalize), then the
# Xavier-normal and weight-norm controls
S="--init report-xavier --sparse 0.9"; M="--init report-xavier --init-scale 0.01"
while kill -0 "$1" 2>/dev/null; do sleep 10; done
./lane.sh 'baseline 0' || exit 1
G=$(python3 -c "import json; print(json.load(open('baseline/seed0/summary.json'))['generalized_step'] or 400000)")
BUDGET=$G ./lane.sh "sparse0.9 0 $S" "small0.01 0 $M" || exit 1
BUDGET=20000 ./lane.sh 'xavier 42 --init report-xavier' 'norm 42 --init report-norm'
