"""Train addition mod p and plot the grokking curve: memorize first, generalize much later.

A small model (1 block, d_model 64) on addition mod 53 with 40% of the pairs for training, full
batch, AdamW with weight decay 1. Training accuracy reaches 99% within a few hundred steps while
validation accuracy is still low; validation accuracy reaches 95% much later. The run is an
ordinary run folder (config.json, metrics.jsonl, summary.json, checkpoint.npz, curves.png).

    python examples/04_train_addition.py [--out DIR] [--figure PNG] [--quick]

--quick trains a tiny model for a few dozen steps: it checks the pipeline and draws the figure,
but is far too short to grok, so the grokking claims are only asserted without it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from tinygrok.config import Config, validate
from tinygrok.folders import read_metrics
from tinygrok.runlock import RunLock
from tinygrok.threads import set_threads
from tinygrok.train import train

RUN = {
    "tasks": ("addition",),
    "p": 53,
    "train_frac": 0.4,
    "layers": 1,
    "d_model": 64,
    "heads": 4,
    "d_mlp": 256,
    "lr": 3e-3,
    "steps": 3000,
    "eval_every": 50,
    "patience": 500,
}
QUICK = RUN | {
    "p": 11,
    "train_frac": 0.5,
    "d_model": 16,
    "d_mlp": 64,
    "steps": 40,
    "eval_every": 10,
}


def command(fields: dict) -> str:
    """The `tinygrok run` command line of the same run."""
    defaults = Config()
    opts = [
        f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
        for k, v in fields.items()
        if k != "tasks" and v != getattr(defaults, k)
    ]
    return " ".join(["tinygrok run", *fields["tasks"], *opts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/examples/04_train_addition"))
    parser.add_argument("--figure", type=Path, help="also copy curves.png here")
    parser.add_argument("--threads", type=int, default=1, help="small matrices: 1 is fastest")
    parser.add_argument("--quick", action="store_true", help="a tiny run that cannot grok")
    args = parser.parse_args()
    fields = QUICK if args.quick else RUN
    cfg = validate(Config(**fields))
    set_threads(args.threads)
    print(f"the same run from the shell: {command(fields)}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    with RunLock(args.out):
        s = train(cfg, args.out, progress=False)

    records = read_metrics(args.out)
    print(
        f"{'step':>6s}  {'train acc':>9s}  {'val acc':>7s}  {'train loss':>10s}  {'val loss':>8s}"
    )
    shown = {0, s["memorized_step"], s["generalized_step"], records[-1]["step"]}
    for r in records:
        if r["step"] in shown or r["step"] in (100, 500, 1000, 2000):
            print(
                f"{r['step']:6d}  {r['train_acc']:9.1%}  {r['val_acc']:7.1%}  "
                f"{r['train_loss']:10.4f}  {r['val_loss']:8.4f}"
            )
    mem, gen = s["memorized_step"], s["generalized_step"]
    print(f"\nmemorized (train >= 99%):   {'step ' + str(mem) if mem else 'not reached'}")
    print(f"generalized (val >= 95%):   {'step ' + str(gen) if gen else 'not reached'}")
    if s["delay_steps"] is not None:
        print(f"delay:                      {s['delay_steps']} steps")
    print(f"curve: {args.out / 'curves.png'}")
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "curves.png", args.figure)
        print(f"copied to {args.figure}")

    assert [r["step"] for r in records][:2] == [0, cfg.eval_every]
    assert (args.out / "curves.png").stat().st_size > 0
    if not args.quick:
        assert mem is not None and gen is not None, "the run should memorize and generalize"
        val_at_mem = next(r["val_acc"] for r in records if r["step"] == mem)
        assert val_at_mem < 0.5, "validation accuracy is still low when training is memorized"
        assert gen >= 2 * mem, "generalization comes well after memorization"
        print(f"validation accuracy when memorized: {val_at_mem:.1%}: it grokked later")


if __name__ == "__main__":
    main()
