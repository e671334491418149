#!/usr/bin/env bash
# lane A, relaunched (2026-12-03, third session): after the raise of small0.01 42 (pid in $1),
# baseline 1, then its sparse and small starts raised to its generalized step (400,000 if it does
# not generalize), then the kept-mask control
S="--init report-xavier --sparse 0.9"; M="--init report-xavier --init-scale 0.01"
while kill -0 "$1" 2>/dev/null; do sleep 10; done
./lane.sh 'baseline 1' || exit 1
G=$(python3 -c "import json; print(json.load(open('baseline/seed1/summary.json'))['generalized_step'] or 400000)")
BUDGET=$G ./lane.sh "sparse0.9 1 $S" "small0.01 1 $M" || exit 1
BUDGET=20000 ./lane.sh "sparse0.9-keep 42 $S --keep-mask"
