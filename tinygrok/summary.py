"""The end of a run: summary.json and curves.png, the files written after its final checkpoint.

summary.json holds the grokking metrics (metrics.py) of the whole run and of every task, read from
the evaluation records, with the final accuracies, the step the run stopped at and how it ended
(`status`: finished, interrupted or diverged). The final checkpoint is written first, so a run
killed before these two files exist still has everything they are made of: `complete_run` writes
them again from the checkpoint and metrics.jsonl, training nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tinygrok.checkpoint import RESTART, SavedRun
from tinygrok.config import Config
from tinygrok.errors import ConfigError
from tinygrok.folders import atomic_write, read_metrics, write_json
from tinygrok.metrics import grokking_metrics, json_line, stability
from tinygrok.params import Params, matrix_sparsity, param_shapes


def run_summary(
    cfg: Config,
    records: list[dict],
    status: str,
    wall_s: float,
    n_params: int,
    steps_run: int | None = None,
) -> dict:
    """summary.json: the grokking metrics overall and per task, from the evaluation records.
    `steps_run` defaults to the last record's step; an interrupted run passes the step it
    stopped at, which may come after its last evaluation. Without any record (stopped during the
    first evaluation) the final accuracies are None."""
    steps = [r["step"] for r in records]
    thresholds = (cfg.step_budget, cfg.memorized_threshold, cfg.generalized_threshold)

    def metrics_of(rows: list[dict]) -> dict:
        val_acc = [r["val_acc"] for r in rows]
        return grokking_metrics(
            steps, [r["train_acc"] for r in rows], val_acc, *thresholds
        ) | stability(steps, val_acc, cfg.generalized_threshold)

    last = records[-1] if records else {}

    def final(row: dict) -> dict:
        return {"final_train_acc": row.get("train_acc"), "final_val_acc": row.get("val_acc")}

    if steps_run is None:
        steps_run = last["step"]
    per_task = {
        t: metrics_of([r.get("per_task", {}).get(t, r) for r in records])
        | final(last.get("per_task", {}).get(t, last))
        for t in cfg.tasks
    }
    return {
        "tasks": list(cfg.tasks),
        "seed": cfg.seed,
        "step_budget": cfg.step_budget,
        "steps_run": steps_run,
        **metrics_of(records),
        **final(last),
        "n_params": n_params,
        "wall_s": wall_s,
        "steps_per_s": steps_run / wall_s if wall_s > 0 else None,
        "status": status,
        "per_task": per_task,
    }


def write_end(
    out_dir: Path,
    cfg: Config,
    records: list[dict],
    status: str,
    wall_s: float,
    params: Params,
    mask: Params,
    step: int,
) -> dict:
    """Write summary.json and draw curves.png, the files after a run's final checkpoint; returns
    the summary. A figure that cannot be drawn is a warning on stderr, never a failed run; a run
    with no evaluation yet has no figure."""
    steps_run = records[-1]["step"] if status == "diverged" and records else step
    summary = run_summary(cfg, records, status, wall_s, params.flat.size, steps_run)
    # zeros over the weight matrices: those --sparse set (the mask's), and those left at the end
    summary["initial_sparsity"] = matrix_sparsity(mask)
    summary["final_sparsity"] = matrix_sparsity(params)
    if status == "diverged":
        summary["diverged_step"] = step
    write_json(out_dir / "summary.json", summary)
    if not records:
        return summary
    from tinygrok import plots

    # drawn under a temporary name: a crash while drawing leaves no torn curves.png that looks new
    curves, tmp = out_dir / "curves.png", out_dir / ".curves.tmp.png"
    try:
        plots.plot_curves(out_dir, tmp)
        os.replace(tmp, curves)
    except Exception as e:  # matplotlib's failures are many and none may cost the run
        why = (str(e).strip().splitlines() or [""])[0]
        print(f"tinygrok: warning: {curves} not drawn ({type(e).__name__}: {why})", file=sys.stderr)
    finally:
        tmp.unlink(missing_ok=True)
    return summary


def complete_run(run: SavedRun) -> dict:
    """Write the end of a run that `checkpoint.read_run` found finished but without a current
    summary.json or curves.png (`run.complete_only`): metrics.jsonl again from the checkpoint's
    records and its final evaluation, then summary.json (wall-clock time: the checkpoint's
    elapsed_s) and curves.png. Nothing is trained; returns the summary."""
    ckpt = run.checkpoint
    cfg, records = ckpt.cfg, list(ckpt.records)
    if records[-1]["step"] != ckpt.step:  # the end fell between evaluations on the schedule
        try:
            final = [r for r in read_metrics(run.dir) if r.get("step") == ckpt.step]
        except ConfigError:
            final = []
        if not final:
            raise ConfigError(
                f"{run.dir / 'metrics.jsonl'}: no evaluation at the run's last step "
                f"({ckpt.step:,}), so its summary cannot be rebuilt; " + RESTART.format(dir=run.dir)
            )
        records.append(final[-1])
    lines = "".join(json_line(r) for r in records)
    atomic_write(run.dir / "metrics.jsonl", lambda f: f.write(lines.encode()))
    shapes = param_shapes(cfg)
    params, mask = Params(shapes, ckpt.params), Params(shapes, ckpt.mask)
    return write_end(run.dir, cfg, records, ckpt.status, ckpt.elapsed_s, params, mask, ckpt.step)
