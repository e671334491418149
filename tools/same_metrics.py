"""Whether two runs' metrics.jsonl agree at every evaluation they share, wall-clock times aside.

    python tools/same_metrics.py A/metrics.jsonl B/metrics.jsonl

Runs of one config on one code version and thread count are deterministic, so two starts of the
same run (on two machines, say) must agree bit for bit up to the shorter one's last evaluation.
Either file may be `git show COMMIT:PATH > FILE` of a run kept in the repository. Prints one line:
how many evaluations the two share, up to which step, and the first step where they differ (exit
1) or that they do not (exit 0).
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
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1].strip())
    sys.exit(main(sys.argv[1], sys.argv[2]))
