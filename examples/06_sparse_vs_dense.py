"""A sparse start against a dense one on division: when does each memorize, and generalize?

`--sparse 0.9` zeroes a random 90% of every weight matrix (embeddings, projections, unembedding)
at initialization; biases and layer-norm parameters are left alone, and training may then move
every weight (the "sparse start" of the report "Grokking: Shortening the Delay"). Both runs share
everything else: the split, the batches and the dense part of the initialization (the mask draws
from its own random stream). Same as

    tinygrok run division --sparse 0.9   (with the small model below)

    python examples/06_sparse_vs_dense.py [--out DIR] [--quick]

--quick trains a tiny model for a few dozen steps: it checks both runs and the comparison, but is
too short to memorize or generalize.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinygrok.config import Config, validate
from tinygrok.params import init_params, matrix_sparsity
from tinygrok.runlock import RunLock
from tinygrok.threads import set_threads
from tinygrok.train import train

RUN = {
    "tasks": ("division",),
    "p": 47,
    "train_frac": 0.5,
    "layers": 1,
    "d_model": 64,
    "heads": 4,
    "d_mlp": 256,
    "lr": 3e-3,
    "steps": 4000,
    "eval_every": 50,
    "patience": 200,
}
QUICK = RUN | {"p": 11, "d_model": 16, "d_mlp": 64, "steps": 30, "eval_every": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/examples/06_sparse_vs_dense"))
    parser.add_argument("--threads", type=int, default=1, help="small matrices: 1 is fastest")
    parser.add_argument("--quick", action="store_true", help="tiny runs that cannot grok")
    args = parser.parse_args()
    set_threads(args.threads)
    base = QUICK if args.quick else RUN
    dense_start, _ = init_params(validate(Config(**base)))
    summaries = {}
    for name, sparse in (("dense", 0.0), ("sparse", 0.9)):
        cfg = validate(Config(**base, sparse=sparse))
        start, mask = init_params(cfg)
        zeros = matrix_sparsity(start)
        assert abs(zeros - sparse) < 0.01, f"{name}: {zeros:.1%} of the weight matrices are zero"
        assert np.array_equal(start.flat, dense_start.flat * mask.flat), "the dense start, masked"
        print(f"{name:6s} start: {zeros:5.1%} of the weight-matrix entries are zero; training ...")
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        with RunLock(out):
            summaries[name] = train(cfg, out, progress=False)

    print(
        f"\ndivision mod {base['p']}, {base['layers']} layer, d_model {base['d_model']}, ", end=""
    )
    print(f"budget {base['steps']} steps\n")
    print(f"{'start':8s} {'memorized':>9s} {'generalized':>11s} {'delay':>6s} {'final val':>9s}")
    for name, s in summaries.items():
        mem, gen, delay = s["memorized_step"], s["generalized_step"], s["delay_steps"]
        cells = ["-" if v is None else str(v) for v in (mem, gen, delay)]
        print(f"{name:8s} {cells[0]:>9s} {cells[1]:>11s} {cells[2]:>6s} {s['final_val_acc']:9.1%}")
        assert delay is None or delay == gen - mem
    d, s = summaries["dense"], summaries["sparse"]
    if d["generalized_step"] and s["generalized_step"]:
        ratio = s["generalized_step"] / d["generalized_step"]
        print(f"\ngeneralized step, sparse / dense: {ratio:.2f}")
    print(f"run folders (curves.png, metrics.jsonl, summary.json): {args.out}/dense, sparse")


if __name__ == "__main__":
    main()
