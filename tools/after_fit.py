"""What runs did after they memorized: over a window of steps, each run's training loss (lowest
and highest), its lowest training accuracy and its highest validation accuracy.

    python tools/after_fit.py [--from 4000] [--to 20000] RUN [RUN ...]

RUN is a run folder (or any folder with a metrics.jsonl, such as results/report/ARM/seedK). Two
lines per run: its folder, then its numbers. A loss that settles shows a narrow range; one that
spikes back up after fitting (as a float32 loss does once the training set is fit beyond
float32's resolution) a wide one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def window(path: Path, start: int, stop: int) -> list[dict]:
    """The evaluations of path/metrics.jsonl with start <= step <= stop."""
    with open(path / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if start <= r["step"] <= stop]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="start", type=int, default=4000)
    ap.add_argument("--to", dest="stop", type=int, default=20000)
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    print(f"steps {args.start:,} to {args.stop:,}: training loss low-high, lowest training and")
    print("highest validation accuracy, last step")
    for run in args.runs:
        try:
            rows = window(run, args.start, args.stop)
        except (OSError, ValueError, KeyError) as e:
            print(f"{run}: cannot read its metrics.jsonl ({e})", file=sys.stderr)
            return 2
        if not rows:
            print(f"{run}: no evaluation in that window")
            continue
        loss = [r["train_loss"] for r in rows]
        print(
            f"{run}\n  loss {min(loss):.1e}-{max(loss):.1e}, "
            f"train >= {100 * min(r['train_acc'] for r in rows):.1f}%, "
            f"val <= {100 * max(r['val_acc'] for r in rows):.1f}%, step {rows[-1]['step']:,}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
