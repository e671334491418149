#!/usr/bin/env bash
# Every 30 minutes while the runs train: copy their evidence into DEST (collect.sh) and
# commit it, DEST only, so that a session cut off before its stop loses at most 30
# minutes of the runs' files. Run it in the background from a copy outside the checkout (bash
# reads a script as it goes), for the runs in RUNS (default /work/runs/report) and their files in
# DEST (default results/report). usage: [RUNS=DIR] [DEST=DIR] autocollect.sh [MAIN_CHECKOUT]
cd "${1:-/work/main}" || exit 1
while true; do
  sleep 1800
  runs=${RUNS:-/work/runs/report} dest=${DEST:-results/report}
  bash results/report/collect.sh "$runs" "$dest" >/dev/null 2>&1
  steps=$(for d in "$runs"/*/seed*; do
    n=$(tail -1 "$d/metrics.jsonl" 2>/dev/null |
      python3 -c "import json,sys; print(json.load(sys.stdin)['step'])" 2>/dev/null)
    echo -n "${d#"$runs"/} ${n:-0}; "
  done)
  git add -A "$dest" &&
    git commit -q -m "Evidence, copied during the runs ($(date -u +%H:%M) UTC): ${steps% }" -- "$dest"
done
