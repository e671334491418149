"""The Python API: train a run folder, load one, and ask its model questions.

    import tinygrok

    cfg = tinygrok.config_from("tiny")               # as `tinygrok run --preset tiny`
    run = tinygrok.run(cfg, "runs/tiny")             # as `... --out runs/tiny`: the same files
    run = tinygrok.load("runs/tiny")                 # any run folder, however it was trained
    run.predict(6, 3)                                # 6 + 3 mod 23 -> 9
    run.evaluate("val")                              # {"loss": ..., "acc": ...}

A thin layer over the engine, with no computation of its own: `run` holds the folder's lock
(runlock.py) and calls `train.train`, `load` reads the files through folders.py and checkpoint.py,
and a query builds `[a, op, b, =]` rows of the run's own tokens (tasks.py) and calls
the fast model's forward with the run's engine. Errors in what is asked are one-line ConfigErrors.

The function that trains is `tinygrok.run`, after the command: `tinygrok.train` is the module of
the training loop, and a package attribute of that name would be replaced by the module as soon as
anything imports it.

Shape legend: N pairs asked about, P answer classes (p, or the whole vocabulary with --head vocab),
NH heads, T = 4 positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from tinygrok import fast, model
from tinygrok.checkpoint import load_checkpoint
from tinygrok.config import EVAL_CHUNK, Config, from_preset, validate
from tinygrok.errors import ConfigError
from tinygrok.folders import CONFIG, make_folder, read_config, read_metrics, read_summary
from tinygrok.params import Params, param_shapes
from tinygrok.tasks import OPERATIONS, SEQ_LEN, canonical_task, describe_tasks, make_dataset

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "val")


def config_from(preset: str = "power", tasks: str | Sequence[str] = (), **options) -> Config:
    """The validated Config of a preset with tasks and options on top, as `tinygrok run TASK
    --preset PRESET --OPTION VALUE` builds it: `config_from("tiny", steps=400)`,
    `config_from(tasks=("division", "multiplication"), sparse=0.9)`. Without tasks the preset's
    (or the default, division) apply. Options are Config's fields; bad ones are a ConfigError."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(
            f"{', '.join(unknown)}: not a setting; the settings are the fields of tinygrok.Config"
        )
    return from_preset(preset, (tasks,) if isinstance(tasks, str) else tuple(tasks), **options)


def run(
    config: Config,
    out_dir: str | Path,
    progress: bool = True,
    force: bool = False,
    threads: int | None = 1,
) -> Run:
    """Train `config` from step 0 in the run folder `out_dir`, as `tinygrok run ... --out
    out_dir` does (config.json, metrics.jsonl, summary.json, checkpoint.npz, curves.png), and
    return it loaded.

    progress shows the status line on stderr. A folder that already holds a run is a ConfigError
    unless `force`, which starts it over. threads sets BLAS's threads for this process (the
    numba kernels run serially): 1, as `tinygrok run` does; None leaves them as they are.
    Ctrl-C finishes the step, saves a checkpoint that `tinygrok resume` continues, and raises
    KeyboardInterrupt; a run that diverged is returned, its status "diverged" and its
    parameters the last good checkpoint's.
    """
    from tinygrok.interrupt import StopFlag
    from tinygrok.runlock import RunLock
    from tinygrok.threads import set_threads
    from tinygrok.train import train

    config = validate(config)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads: must be an integer >= 1 (got {threads})")
    out = make_folder(Path(out_dir), "out_dir")
    stop = StopFlag()
    with RunLock(out):  # checked under the lock: no other process can start a run here meanwhile
        if (out / CONFIG).exists() and not force:
            raise ConfigError(
                f"out_dir: {out} already holds a run; read it with tinygrok.load, or pass "
                "force=True to start it over"
            )
        set_threads(threads)
        with stop:
            summary = train(config, out, progress=progress, stop=stop)
    if summary["status"] == "interrupted":
        raise KeyboardInterrupt(
            f"{out}: interrupted at step {summary['steps_run']:,}; checkpoint saved, "
            f"`tinygrok resume {out}` continues it"
        )
    return load(out)


def load(run_dir: str | Path) -> Run:
    """The run in `run_dir` at its latest checkpoint: config, summary, metrics and parameters,
    each file checked before it is trusted (a missing or damaged one is a ConfigError)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise ConfigError(f"{run_dir}: holds no run (no config.json)")
    cfg, _ = read_config(run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoint.npz", cfg)
    summary, metrics = read_summary(run_dir), read_metrics(run_dir, nan=False)
    return Run(run_dir, cfg, ckpt.step, summary, metrics, ckpt.params)


class Run:
    """A run folder read by `load`, and its model at the checkpoint's step.

    dir       the run folder
    config    its Config (config.json's)
    step      optimizer steps done by the checkpoint
    summary   summary.json, or None while the run has not stopped
    metrics   metrics.jsonl: one dict per evaluation
    params    name -> read-only array of the parameter table (params.param_shapes), e.g.
              "wte" (V, C), "blocks.0.attn.w_qkv" (C, 3C), "head.w" (C, P)
    """

    def __init__(
        self,
        run_dir: Path,
        config: Config,
        step: int,
        summary: dict | None,
        metrics: list[dict],
        flat: np.ndarray,
    ):
        self.dir, self.config, self.step = run_dir, config, step
        self.summary, self.metrics = summary, metrics
        self._model = Params(param_shapes(config), flat)  # flat (N,): the checkpoint's vector
        self.params: dict[str, np.ndarray] = {}
        for name, view in self._model.views.items():
            self.params[name] = view.view()
            self.params[name].flags.writeable = False  # the model's own arrays stay writable

    def __repr__(self) -> str:
        status = (self.summary or {}).get("status", "running")
        tasks = describe_tasks(self.config.tasks, self.config.p)
        return f"Run({str(self.dir)!r}: {tasks}, step {self.step:,}, {status})"

    def metrics_frame(self) -> pd.DataFrame:
        """metrics.jsonl as a pandas DataFrame, one row per evaluation (the per-task values of a
        run of several tasks as columns "per_task.TASK.val_acc", ...). Needs pandas."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Run.metrics_frame needs pandas (pip install pandas); Run.metrics holds the same "
                "records as a list of dicts"
            ) from None
        return pd.json_normalize(self.metrics)

    def tokens(self, a: ArrayLike, b: ArrayLike, task: str | None = None) -> np.ndarray:
        """Token rows [a, op, b, =] (N, 4) of the pairs (a, b) of `task` in this run's vocabulary;
        a and b are ints or arrays of ints, broadcast against each other (N pairs)."""
        t = self._task(task)
        p = self.config.p
        a, b = (np.asarray(v) for v in np.broadcast_arrays(a, b))
        for name, v in (("a", a), ("b", b)):
            if v.size and v.dtype.kind not in "iu":  # [] is float64 to NumPy
                raise ConfigError(f"{name}: must be integers (got {v.dtype})")
            bad = v[(v < 0) | (v >= p)]
            if bad.size:
                raise ConfigError(f"{name}: must be in 0..{p - 1} for this run (got {bad.flat[0]})")
        if OPERATIONS[t].b_nonzero and (b == 0).any():
            raise ConfigError(f"b: {t} is not defined for b = 0")
        op, eq = p + self.config.tasks.index(t), p + len(self.config.tasks)
        x = np.empty((a.size, SEQ_LEN), dtype=np.int64)  # (N, 4)
        x[:, 0], x[:, 1], x[:, 2], x[:, 3] = a.ravel(), op, b.ravel(), eq
        return x

    def logits(self, a: ArrayLike, b: ArrayLike, task: str | None = None) -> np.ndarray:
        """The model's logits (N, P) for the pairs (a, b) of `task` (default: the run's only
        task); in the run's dtype, computed by the run's engine."""
        x = self.tokens(a, b, task)  # (N, 4)
        n_out = self._model["head.b"].shape[0]
        if not len(x):
            return np.empty((0, n_out), dtype=self._model.flat.dtype)
        cfg, chunks = self.config, range(0, len(x), EVAL_CHUNK)
        return np.concatenate(
            [fast.logits(self._model, x[s : s + EVAL_CHUNK], cfg) for s in chunks]
        )  # (N, P)

    def predict(self, a: ArrayLike, b: ArrayLike, task: str | None = None) -> int | np.ndarray:
        """The model's answers to a op b: the argmax of `logits`. An int for two ints, else an
        int array of the shape a and b broadcast to."""
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
        answers = self.logits(a, b, task).argmax(axis=1).reshape(shape)
        return int(answers) if answers.ndim == 0 else answers

    def evaluate(self, split: str = "val", task: str | None = None) -> dict[str, float]:
        """{"loss": mean cross-entropy, "acc": accuracy} on the run's own training ("train") or
        validation ("val") set, as metrics.jsonl reports them: of one task, or with task None of
        every task of the run together."""
        if split not in SPLITS:
            raise ConfigError(f"split: must be one of {', '.join(SPLITS)} (got {split!r})")
        from tinygrok.train import evaluate_run

        cfg = self.config
        data = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
        if task is not None:
            t = self._task(task)
            data = [d for d in data if d.name == t]
        ev = evaluate_run(self._model, data, cfg)
        return {"loss": ev[f"{split}_loss"], "acc": ev[f"{split}_acc"]}

    def attention(
        self, a: ArrayLike, b: ArrayLike, task: str | None = None, layer: int = 0
    ) -> np.ndarray:
        """Attention probabilities (N, NH, T, T) of block `layer` on the pairs (a, b): row i of a
        head's (T, T) matrix is how query position i spreads over key positions 0..i (zero above
        the diagonal). From the textbook forward, every position of every block computed."""
        cfg = self.config
        if not isinstance(layer, (int, np.integer)) or not 0 <= layer < cfg.layers:
            raise ConfigError(f"layer: must be in 0..{cfg.layers - 1} (got {layer})")
        x = self.tokens(a, b, task)  # (N, 4)
        probs = []
        for s in range(0, len(x), EVAL_CHUNK):
            _, cache = model.forward(self._model, x[s : s + EVAL_CHUNK], cfg)
            probs.append(cache.blocks[layer].attn.a)
        if not probs:
            return np.empty((0, cfg.heads, SEQ_LEN, SEQ_LEN), dtype=self._model.flat.dtype)
        return np.concatenate(probs)  # (N, NH, T, T)

    def _task(self, task: str | None) -> str:
        """The run's task `task` names, or its only task for None."""
        tasks = self.config.tasks
        if task is None:
            if len(tasks) > 1:
                raise ConfigError(
                    f"task: this run has several tasks; name one of {', '.join(tasks)}"
                )
            return tasks[0]
        t = canonical_task(task)
        if t not in tasks:
            raise ConfigError(
                f"task: this run was not trained on {t} (its tasks: {', '.join(tasks)})"
            )
        return t
