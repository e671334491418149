"""Does tinygrok's gradient follow PyTorch's once a run fits its training set beyond float32?

    python benchmarks/softmax_collapse.py RUN

RUN is a run folder of `--preset report` with a checkpoint (any past step 4,000, when its
training loss has fallen below float32's resolution, e.g. `tinygrok run division --preset report
--loss-dtype float64 --steps 5000 --out runs/exact`). At the checkpoint's parameters, on the
next training batch, the script computes every parameter's float32 gradient four ways: PyTorch's
nn.TransformerEncoder in float64 (the reference: the loss's exact gradient), in float32 (what
the report's code computes), and tinygrok's fast model in float32 with the loss computed in
float64 (`--loss-dtype float64`) and in float32 (`--loss-dtype float32`, the preset's). For each
tensor it prints its gradient's norm, each gradient's distance from the reference (relative to
the reference's norm), the cosine between PyTorch's float32 gradient and the reference, and the
distance between tinygrok's float32 loss's gradient and PyTorch's float32 one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from _common import require_torch, set_all_threads

from tinygrok import fast
from tinygrok import layers as L
from tinygrok.checkpoint import load_checkpoint
from tinygrok.folders import CHECKPOINT, read_config
from tinygrok.params import init_params
from tinygrok.tasks import Batches, make_dataset


def main(run: Path) -> None:
    require_torch("softmax_collapse.py")
    import torch
    import torch.nn.functional as F
    from torch_reference import ReportModel, _pairs, load_tinygrok

    set_all_threads(1)
    cfg, _ = read_config(run)
    ckpt = load_checkpoint(run / CHECKPOINT, cfg)
    params, _ = init_params(cfg)
    params.flat[:] = ckpt.params
    data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    tokens, targets = Batches(data, cfg.batch_size, cfg.seed, cfg.epoch_batches)(ckpt.step + 1)

    def tinygrok_grads(loss_dtype: str) -> tuple[float, dict[str, np.ndarray]]:
        c = cfg.replace(dtype="float32", loss_dtype=loss_dtype)
        z, cache = fast.forward(params, tokens, c)
        loss, c_ce = L.cross_entropy_forward(z, targets, c.engine, loss_dtype)
        return loss, fast.backward(L.cross_entropy_backward(1.0, c_ce)[0], cache)

    def torch_grads(dtype: torch.dtype) -> tuple[float, dict[str, np.ndarray]]:
        model = ReportModel(cfg)
        load_tinygrok(model, params, cfg)
        model.to(dtype)
        loss = F.cross_entropy(model(torch.from_numpy(tokens)), torch.from_numpy(targets))
        loss.backward()
        return loss.item(), {
            n: t.grad.numpy().T if tr else t.grad.numpy() for n, t, tr in _pairs(model)
        }

    (l_ref, ref), (l_t32, t32) = torch_grads(torch.float64), torch_grads(torch.float32)
    (l_exact, exact), (l_f32, f32) = tinygrok_grads("float64"), tinygrok_grads("float32")
    print(f"{run}: step {ckpt.step:,}, batch of {len(targets)}")
    print(f"training loss: PyTorch float64 {l_ref:.3e}, float32 {l_t32:.3e}; tinygrok with the")
    print(f"loss in float64 {l_exact:.3e}, in float32 {l_f32:.3e}")

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.astype(np.float64), b.astype(np.float64)
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    print("distance from the float64 reference (relative to its norm):")
    head = ("tensor", "|grad|", "tg loss64", "PT f32", "cos", "tg32-PT32")
    print("{:20s} {:>8s} {:>10s} {:>8s} {:>6s} {:>10s}".format(*head))
    for name, r in ref.items():
        a, b = t32[name].astype(np.float64).ravel(), r.ravel()
        cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        print(
            f"{name:20s} {np.linalg.norm(r):8.1e} {rel(exact[name], r):10.1e} "
            f"{rel(t32[name], r):8.1e} {cos:6.2f} {rel(f32[name], t32[name]):10.1e}"
        )
    print("tg loss64: tinygrok, loss in float64; PT f32: PyTorch float32 (cos: its cosine with")
    print("the reference); tg32-PT32: tinygrok with the loss in float32 against PyTorch float32")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1].strip())
    main(Path(sys.argv[1]))
