"""Whether two runs' metrics.jsonl agree at every evaluation they share, wall-clock times aside.

    python tools/same_metrics.py A/metrics.jsonl B/metrics.jsonl

Runs of one config on one code version and thread count are deterministic on one kind of CPU,
so two starts of the same run (on two such machines, say) must agree bit for bit up to the
shorter one's last evaluation; on another CPU the same code rounds otherwise (other BLAS kernels,
other vector widths). Either file may be `git show COMMIT:PATH > FILE` of a run kept in the
repository. Prints one line: how many evaluations the two share, up to which step, and the first
step where they differ (exit 1) or that they do not (exit 0); if they differ, a second line: how
far apart they are at the last step they share (weight norm, training loss, validation accuracy).
"""

from __future__ import annotations

import json
import sys


def evaluations(path: str) -> dict[int, dict]:
    """step -> that evaluation's record without its wall-clock field."""
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {r["step"]: {k: v for k, v in r.items() if k != "elapsed_s"} for r in rows}


def main(a: str, b: str) -> int:
    first, second = evaluations(a), evaluations(b)
    shared = sorted(set(first) & set(second))
    if not shared:
        print("no evaluation in common")
        return 1
    differ = [s for s in shared if first[s] != second[s]]
    where = f"first difference at step {differ[0]:,}" if differ else "identical"
    print(f"{len(shared):,} evaluations in common, steps 0 to {shared[-1]:,}: {where}")
    if differ:
        print(f"at step {shared[-1]:,}: {apart(first[shared[-1]], second[shared[-1]])}")
    return 1 if differ else 0


def apart(x: dict, y: dict) -> str:
    """Two evaluations' weight norms, training losses and validation accuracies, side by side."""
    fields = (("weight norm", "weight_norm", "{:.6g}"), ("training loss", "train_loss", "{:.3g}"))
    shown = [f"{name} {f.format(x[k])} and {f.format(y[k])}" for name, k, f in fields if k in x]
    if "val_acc" in x:
        shown.append(f"validation {100 * x['val_acc']:.2f}% and {100 * y['val_acc']:.2f}%")
    return ", ".join(shown)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1].strip())
    sys.exit(main(sys.argv[1], sys.argv[2]))
