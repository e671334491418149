#!/usr/bin/env bash
# One run of the report experiment from the pinned checkout, trained to BUDGET steps (default the
# report's 400,000): start it, or resume it from its checkpoint, raising the budget of a run that
# finished a smaller one, with the tinygrok of the checkout PINNED (default /work/pinned) into the
# runs' folder RUNS (default /work/runs/report).
# usage: [BUDGET=N] [PINNED=DIR] [RUNS=DIR] arm.sh ARM SEED [run options of the arm...]
set -u
T=${PINNED:-/work/pinned}/.venv/bin/tinygrok
budget=${BUDGET:-400000}
out=${RUNS:-/work/runs/report}/$1/seed$2
if [ -f "$out/checkpoint.npz" ]; then
  exec $T resume "$out" --threads 1 --steps "$budget"
fi
exec $T run division --preset report --seed "$2" --threads 1 --snapshot-every 5000 \
  --steps "$budget" "${@:3}" --out "$out"
