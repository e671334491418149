#!/usr/bin/env bash
# Every 30 minutes while the runs train: copy their evidence into this folder (collect.sh) and
# commit it, this folder only, so that a session cut off before its stop loses at most 30
# minutes of the runs' files. Run it in the background from a copy outside the checkout (bash
# reads a script as it goes). usage: autocollect.sh [MAIN_CHECKOUT]
cd "${1:-/work/main}" || exit 1
while true; do
  sleep 1800
  bash results/report/collect.sh >/dev/null 2>&1
  steps=$(for d in /work/runs/report/*/seed*; do
    n=$(tail -1 "$d/metrics.jsonl" 2>/dev/null |
      python3 -c "import json,sys; print(json.load(sys.stdin)['step'])" 2>/dev/null)
    echo -n "${d#/work/runs/report/} ${n:-0}; "
  done)
  git add -A results/report &&
    git commit -q -m "Evidence, copied during the runs ($(date -u +%H:%M) UTC): ${steps% }" -- results/report
done
