#!/usr/bin/env bash
# On a new machine: the pinned checkout of the report's runs (commit 1941b4c, which computes
# 8804979's numbers faster: README.md) in /work/pinned with
# its own venv (`pip install -e .`, so that each run's config.json records the commit), its numba
# kernels compiled once, and the runs' folder /work/runs/report with this folder's lane scripts.
# Then start the lanes from /work/runs/report (README.md). Run it with no lane running (it
# replaces the lane scripts, and bash reads a running script as it goes). usage: setup.sh [MAIN]
set -eu
main=${1:-/work/main}
if [ ! -d /work/pinned ]; then
  git -C "$main" worktree prune
  git -C "$main" worktree add /work/pinned 1941b4c
fi
[ -x /work/pinned/.venv/bin/tinygrok ] || {
  python3 -m venv /work/pinned/.venv
  (cd /work/pinned && .venv/bin/pip install -q -e .)
}
/work/pinned/.venv/bin/tinygrok run division --preset report --steps 300 -q --threads 1 \
  --out /tmp/warm --force
mkdir -p /work/runs/report
cp "$main"/results/report/{lane.sh,arm.sh,lane8.sh} /work/runs/report/
echo "ready: cd /work/runs/report and start the lanes"
