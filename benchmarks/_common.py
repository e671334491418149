"""What the benchmark scripts share: thread settings, a tinygrok training step, the matrix
products of a step (for FLOP counts and the BLAS rate), and robust timing.

The scripts run as `python benchmarks/NAME.py`, so this folder is on sys.path.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date

import numpy as np

from tinygrok import fast
from tinygrok.config import Config
from tinygrok.fast import evaluate, loss_and_grads
from tinygrok.optim import learning_rate, make_optimizer
from tinygrok.params import Params, init_params
from tinygrok.provenance import cpu_model
from tinygrok.tasks import SEQ_LEN, Batches, make_dataset, vocab_size
from tinygrok.threads import set_threads

MISSING_TORCH = "install PyTorch to compare: pip install -e '.[parity]'"


def require_torch(script: str, alone: str = "") -> None:
    """Exit with one line and code 2 if PyTorch cannot be imported; `alone` names the option
    that runs the script without it."""
    try:
        import torch  # noqa: F401
    except ImportError:
        hint = f" (or pass {alone} to time tinygrok alone)" if alone else ""
        print(f"{script}: {MISSING_TORCH}{hint}", file=sys.stderr)
        sys.exit(2)


def set_all_threads(n: int) -> dict:
    """BLAS and (when the script uses it) PyTorch on n threads; returns the counts."""
    counts = set_threads(n)
    torch = sys.modules.get("torch")
    if torch is None:
        return counts
    torch.set_num_threads(n)
    return counts | {"torch": torch.get_num_threads()}


def blas_name() -> str:
    """NumPy's BLAS library and version, as threadpoolctl reports them."""
    from threadpoolctl import threadpool_info

    infos = [i for i in threadpool_info() if i["user_api"] == "blas"]
    return ", ".join(f"{i['internal_api']} {i.get('version') or ''}".strip() for i in infos)


def machine_line() -> str:
    """The date, the CPU, the BLAS and the load: printed above every table."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{date.today()}  {cpu_model()}  {os.cpu_count()} cores  {blas_name()}  "
        f"load average {load:.1f}  numpy {np.__version__}"
    )


class TinygrokSteps:
    """tinygrok's training step (the fast model's loss and gradients, the optimizer) on the run's
    own batches, on the config's engine."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
        self.batches = Batches(self.data, cfg.batch_size, cfg.seed, cfg.epoch_batches)
        self.params, _ = init_params(cfg)
        self.grads = Params.zeros(self.params.shapes, self.params.flat.dtype)
        self.opt = make_optimizer(cfg, self.params.flat.size)
        self.t = 0

    def evaluate_once(self) -> None:
        """Evaluate the first task's validation set, as a run does at step 0. Its large arrays also
        settle glibc's allocator, which then serves a step's arrays from the heap instead of
        fresh, zeroed pages."""
        task = self.data[0]
        evaluate(self.params, task.val_x, task.val_y, self.cfg)

    def __call__(self, n: int) -> None:
        """Take n steps."""
        for _ in range(n):
            self.t += 1
            tokens, targets = self.batches(self.t)
            loss_and_grads(self.params, tokens, targets, self.cfg, self.grads)
            self.opt.step(self.params.flat, self.grads.flat, learning_rate(self.cfg, self.t))


def step_products(
    cfg: Config, kind: str, tokens: np.ndarray | None = None
) -> list[tuple[int, int, int]]:
    """The matrix products (M, K, N) of one training step, forward and backward.

    kind "full": every block on every position (the usual PyTorch model); "last": the last block
    projects queries, and runs attention's output projection and its MLP, for the last position
    only (PyTorch with tinygrok's first shortcut); "fast": what tinygrok's fast model runs on the
    batch `tokens` (the first block's projections on its distinct (token, position) rows, the
    prefix positions once per distinct prefix before the last block; fast.py). The attention
    scores (T x T per head) are left out: they are below 0.1% of the FLOPs and tinygrok computes
    them in its attention kernel.
    """
    B, T, C, F = cfg.batch_size, SEQ_LEN, cfg.d_model, cfg.d_mlp
    n_out = n_tokens(cfg) if cfg.head == "vocab" else cfg.p
    prods: list[tuple[int, int, int]] = []

    def linear(rows: int, cin: int, cout: int) -> None:
        # y = x @ w;  dx = dy @ w.T;  dw = x.T @ dy
        prods.extend([(rows, cin, cout), (rows, cout, cin), (cin, rows, cout)])

    if kind == "fast":
        lay = fast.layout(tokens, n_tokens(cfg), cfg.layers)
        R = lay.later.prefix.size + B * (T - fast.PREFIX)  # stream rows: prefixes, own positions
    for i in range(cfg.layers):
        last = i == cfg.layers - 1
        if kind == "fast":
            n_src = len(lay.etok) if i == 0 else R
            n_q = B if last else R
        else:
            n_src, n_q = B * T, (B if last and kind == "last" else B * T)
        if n_q < n_src:
            linear(n_q, C, C)  # queries of the query rows
            linear(n_src, C, 2 * C)  # keys and values of every source row
        else:
            linear(n_src, C, 3 * C)
        linear(n_q, C, C)  # attention output projection
        linear(n_q, C, F)
        linear(n_q, F, C)
    linear(B, C, n_out)  # unembedding of the last position
    return prods


def gflop(prods: list[tuple[int, int, int]]) -> float:
    """FLOPs of the products, in units of 1e9 (a multiply-add counts 2)."""
    return sum(2 * m * k * n for m, k, n in prods) / 1e9


def blas_products(prods: list[tuple[int, int, int]], dtype=np.float32) -> Callable[[int], None]:
    """A step's matrix products alone, on random matrices: BLAS's rate on the model's shapes."""
    rng = np.random.default_rng(0)
    pairs = [
        (rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))
        for m, k, n in prods
    ]

    def run(n: int) -> None:
        for _ in range(n):
            for a, b in pairs:
                a @ b

    return run


def ms_per_step(
    runners: dict[str, Callable[[int], None]],
    steps: dict[str, int],
    rounds: int,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Milliseconds per step of every runner, one sample per round; the runners take turns
    within each round, so a slow minute on a shared machine hits all of them alike."""
    for run in runners.values():
        run(warmup)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t = time.perf_counter()
            run(steps[name])
            samples[name].append(1000 * (time.perf_counter() - t) / steps[name])
    return samples


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def n_tokens(cfg: Config) -> int:
    """Vocabulary size of the config's model."""
    return vocab_size(cfg.p, len(cfg.tasks))
