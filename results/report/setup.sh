#!/usr/bin/env bash
# On a new machine: the pinned checkout of the report's runs (PIN, default 316c1dc, the current
# start's commit: results/report-316c1dc/README.md) in PINNED (default /work/pinned9) with its own
# venv (`pip install -e .`, so that each run's config.json records the commit), its numba
# kernels compiled once, and the runs' folder RUNS (default /work/runs/report9) with this
# folder's lane scripts. Then start the lanes from RUNS (that README). Run it with no lane
# running (it replaces the lane scripts, and bash reads a running script as it goes).
# usage: [PIN=COMMIT] [PINNED=DIR] [RUNS=DIR] setup.sh [MAIN_CHECKOUT]
set -eu
main=${1:-/work/main}
pin=${PIN:-316c1dc} pinned=${PINNED:-/work/pinned9} runs=${RUNS:-/work/runs/report9}
if [ ! -d "$pinned" ]; then
  git -C "$main" worktree prune
  git -C "$main" worktree add "$pinned" "$pin"
fi
[ -x "$pinned/.venv/bin/tinygrok" ] || {
  python3 -m venv "$pinned/.venv"
  (cd "$pinned" && .venv/bin/pip install -q -e .)
}
"$pinned/.venv/bin/tinygrok" run division --preset report --steps 300 -q --threads 1 \
  --out /tmp/warm --force
mkdir -p "$runs"
cp "$main"/results/report/{lane.sh,arm.sh,seedlane.sh,restlane.sh} "$runs/"
echo "ready: cd $runs and start the lanes"
