#!/usr/bin/env bash
# One run of the report experiment from the pinned checkout: start it, or resume it if it has a
# checkpoint. usage: arm.sh ARM SEED [run options of the arm...]
set -u
T=/work/pinned/.venv/bin/tinygrok
out=/work/runs/report/$1/seed$2
if [ -f "$out/checkpoint.npz" ]; then
  exec $T resume "$out" --threads 1
fi
exec $T run division --preset report --seed "$2" --threads 1 --snapshot-every 5000 "${@:3}" --out "$out"
