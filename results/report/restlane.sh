#!/usr/bin/env bash
# The other arms of one seed, after all three baselines (42, 0, 1) have ended, in the order the
# issue of the report's experiment affords them: SGD at lr 0.005 and 0.01, division with
# multiplication, all four tasks, division with addition, then the controls (Xavier-normal dense,
# the sparse start's weight norm, the sparse start with its mask kept). Each is trained as far as
# `tinygrok experiment report --stop-at-baseline` would: to G, the step where the seed's baseline
# generalized or the three baselines' median if later, ceil(G / k) steps per task for k tasks.
# Run from the runs' folder, with lane.sh's settings (RUNS, PINNED, EVIDENCE).
# usage: restlane.sh SEED
set -u
G=$(python3 - "$1" "${EVIDENCE:-/work/main/results/report}" <<'PY'
import json, os, statistics, sys
def g(seed):
    b = f"baseline/seed{seed}/summary.json"
    s = json.load(open(b if os.path.isfile(b) else os.path.join(sys.argv[2], b)))
    if s["status"] not in ("finished", "diverged"):
        sys.exit(f"restlane.sh: the baseline of seed {seed} has not ended")
    return s["generalized_step"] or 400000
print(max(g(sys.argv[1]), statistics.median(g(s) for s in (42, 0, 1))))
PY
) || exit 1
S="--optimizer sgd --momentum 0"
BUDGET=$G ./lane.sh "sgd-lr0.005 $1 $S --lr 0.005" "sgd-lr0.01 $1 $S --lr 0.01" || exit 1
BUDGET=$(((G + 1) / 2)) ./lane.sh "div+mul $1 multiplication" || exit 1
BUDGET=$(((G + 3) / 4)) ./lane.sh "all-four $1 multiplication addition subtraction" || exit 1
BUDGET=$(((G + 1) / 2)) ./lane.sh "div+add $1 addition" || exit 1
BUDGET=$G ./lane.sh "xavier $1 --init report-xavier" "norm $1 --init report-norm" \
  "sparse0.9-keep $1 --init report-xavier --sparse 0.9 --keep-mask"
