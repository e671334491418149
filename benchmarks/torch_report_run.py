"""The report's model trained in PyTorch, beside tinygrok's run of the same recipe: does tinygrok's
`--preset report` follow PyTorch's dynamics, not only its gradients?

    python benchmarks/torch_report_run.py [--init report|report-xavier] [--sparse 0.9]
        [--init-scale 0.01] [--seed 42] [--steps 4000] [--threads 1]

PyTorch's side is the report's code path: `nn.TransformerEncoder` (ReportModel in
torch_reference.py) initialized by PyTorch from torch.manual_seed(seed), then, for
report-xavier, every nn.Linear module redrawn as the report's sparse and small starts do (Xavier
normal, dropped with probability --sparse and the survivors scaled by 1/sqrt(1 - s), times
--init-scale, zero bias); torch.optim.AdamW(lr 1e-3, betas (0.9, 0.98), weight decay 1e-3);
tinygrok's batches (DataLoader-style epochs of 512) and split. tinygrok's side starts from its
own initialization of the same rule and seed. Both evaluate on the full train and validation
sets every 50 steps; the script prints the steps where each reached 95% training and validation
accuracy, and the validation accuracy at the end; every 500 steps, for PyTorch then tinygrok,
training / validation accuracy and the training set's loss.
"""

from __future__ import annotations

import argparse
import math
import sys

from _common import set_all_threads

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    sys.exit("install PyTorch to compare: pip install -e '.[parity]'")

from torch_reference import ReportModel

from tinygrok.config import from_preset
from tinygrok.fast import evaluate, loss_and_grads
from tinygrok.optim import make_optimizer
from tinygrok.params import Params, init_params
from tinygrok.tasks import Batches, make_dataset


def report_init(model: nn.Module, sparse: float, scale: float) -> None:
    """The report's sparse/small rule on every nn.Linear module (its initializations.py)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                std = math.sqrt(2.0 / (w.shape[0] + w.shape[1]))
                w.normal_(0, std * scale)
                if sparse > 0:
                    w.mul_((torch.rand_like(w) > sparse).float() / math.sqrt(1.0 - sparse))
                nn.init.zeros_(module.bias)


def row(log: dict[str, list[float]]) -> str:
    """The last evaluation: training and validation accuracy, training loss."""
    train, val, loss = log["train"][-1], log["val"][-1], log["loss"][-1]
    return f"  {100 * train:5.1f}% /{100 * val:5.1f}% loss {loss:7.1e}"


def first(steps: list[int], values: list[float], threshold: float) -> int | None:
    return next((s for s, v in zip(steps, values, strict=True) if v >= threshold), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", default="report-xavier", choices=["report", "report-xavier"])
    ap.add_argument("--sparse", type=float, default=0.9)
    ap.add_argument("--init-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_all_threads(args.threads)
    sparse = args.sparse if args.init == "report-xavier" else 0.0
    cfg = from_preset(
        "report", init=args.init, sparse=sparse, init_scale=args.init_scale, seed=args.seed
    )
    (data,) = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    batches = Batches([data], cfg.batch_size, cfg.seed, cfg.epoch_batches)
    sets = {"train": (data.train_x, data.train_y), "val": (data.val_x, data.val_y)}

    torch.manual_seed(args.seed)
    model = ReportModel(cfg)
    if args.init == "report-xavier":
        report_init(model, sparse, args.init_scale)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=1e-3)

    params, _ = init_params(cfg)
    grads = Params.zeros(params.shapes, params.flat.dtype)
    tg_opt = make_optimizer(cfg, params.flat.size)

    @torch.no_grad()
    def torch_eval(x, y) -> tuple[float, float]:
        z, t = model(torch.from_numpy(x)), torch.from_numpy(y)
        return F.cross_entropy(z, t).item(), float((z.argmax(1) == t).float().mean())

    log: dict[str, dict[str, list[float]]] = {
        side: {"train": [], "val": [], "loss": []} for side in ("pytorch", "tinygrok")
    }
    steps = []
    for step in range(1, args.steps + 1):
        tokens, targets = batches(step)
        loss = F.cross_entropy(model(torch.from_numpy(tokens)), torch.from_numpy(targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_and_grads(params, tokens, targets, cfg, grads)
        tg_opt.step(params.flat, grads.flat, cfg.lr)
        if step % cfg.eval_every == 0:
            steps.append(step)
            for split, (x, y) in sets.items():
                for side, (loss_, acc) in (
                    ("pytorch", torch_eval(x, y)),
                    ("tinygrok", evaluate(params, x, y, cfg)),
                ):
                    log[side][split].append(acc)
                    if split == "train":
                        log[side]["loss"].append(loss_)
            if step % 500 == 0:
                print(f"step {step:6,}", *(row(log[side]) for side in log), flush=True)
    print(
        f"--init {args.init} --sparse {sparse:g} --init-scale {args.init_scale:g} "
        f"--seed {args.seed}, {args.steps:,} steps"
    )
    for side, acc in log.items():
        mem, gen = first(steps, acc["train"], 0.95), first(steps, acc["val"], 0.95)
        print(
            f"{side:9s} train >= 95% at {mem}, val >= 95% at {gen}, "
            f"final val {100 * acc['val'][-1]:.1f}%"
        )


if __name__ == "__main__":
    main()
