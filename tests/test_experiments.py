"""The experiments of the report "Grokking: Shortening the Delay": several tasks in one model,
sparse and tiny-scale starts with the mask kept, the stability flag, the Grokfast filters, and
`tinygrok experiment` on a tiny config."""

from __future__ import annotations

import json
import math
import statistics
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from tinygrok.cli import main
from tinygrok.config import Config, validate
from tinygrok.grokfast import EMAFilter, MAFilter, make_grad_filter
from tinygrok.lab.comparison import stability_cell
from tinygrok.lab.experiments import noise_arms, plan
from tinygrok.metrics import stability
from tinygrok.params import init_params, is_matrix, matrix_sparsity
from tinygrok.summary import run_summary
from tinygrok.tasks import Batches, make_dataset
from tinygrok.train import train

# A model small enough that a few hundred steps take about a second.
TINY = dict(p=11, d_model=16, heads=2, d_mlp=32, layers=1, batch_size=32, eval_every=25)
TINY_ARGS = [
    "--p", "11", "--d-model", "16", "--heads", "2", "--d-mlp", "32", "--layers", "1",
    "--batch-size", "32", "--eval-every", "25",
]  # fmt: skip


def grokfast_argv(out: Path, arms: str, *options: str) -> list[str]:
    """The command line of a quiet grokfast experiment of the tiny model, only `arms`, into out."""
    return ["experiment", "grokfast", "--arms", arms, *options, "-q", *TINY_ARGS, "--out", str(out)]


def tiny(**changes) -> Config:
    return validate(Config(**(TINY | changes)))


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


# --- starts: --sparse, --init-scale, --keep-mask -------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_and_scale_change_weight_matrices_only(seed):
    dense, _ = init_params(tiny(seed=seed))
    sparse, mask = init_params(tiny(seed=seed, sparse=0.9))
    scaled, _ = init_params(tiny(seed=seed, init_scale=0.01))
    for name, shape in dense.shapes.items():
        if is_matrix(name, shape):
            m = mask[name]
            assert np.count_nonzero(m == 0) == round(0.9 * m.size), name
            # a sparse start is the dense start with the masked entries zeroed
            np.testing.assert_array_equal(sparse[name], dense[name] * m)
            np.testing.assert_allclose(scaled[name], 0.01 * dense[name], rtol=1e-6)
        else:
            assert np.all(mask[name] == 1), name
            np.testing.assert_array_equal(sparse[name], dense[name])
            np.testing.assert_array_equal(scaled[name], dense[name])
    assert matrix_sparsity(sparse) == pytest.approx(0.9, abs=1e-3)
    assert matrix_sparsity(dense) == 0.0


def pruned_after_training(tmp_path: Path, **changes) -> tuple[np.ndarray, dict]:
    """Train a tiny sparse model 300 steps; return the pruned entries' final parameters, and the
    checkpoint's arrays."""
    cfg = tiny(steps=300, patience=0, sparse=0.8, **changes)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["status"] == "finished"
    assert summary["initial_sparsity"] == pytest.approx(0.8, abs=1e-3)
    ckpt = dict(np.load(tmp_path / "run" / "checkpoint.npz"))
    pruned = ckpt["mask"] == 0
    assert pruned.sum() > 1000
    return ckpt["params"][pruned], ckpt | {"summary": summary, "pruned": pruned}


@pytest.mark.parametrize(
    "changes",
    [
        {"optimizer": "adamw"},
        {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.01},
        {"optimizer": "adamw", "grokfast": "ema"},
    ],
)
def test_keep_mask_keeps_pruned_weights_exactly_zero(tmp_path, changes):
    values, ckpt = pruned_after_training(tmp_path, keep_mask=True, **changes)
    assert np.all(values == 0)
    assert ckpt["summary"]["final_sparsity"] == ckpt["summary"]["initial_sparsity"]
    for key in ("optimizer.m", "optimizer.v", "optimizer.buf"):
        if key in ckpt:  # the moments of pruned weights never moved
            assert np.all(ckpt[key][ckpt["pruned"]] == 0), key


def test_without_keep_mask_pruned_weights_grow_back(tmp_path):
    values, ckpt = pruned_after_training(tmp_path, keep_mask=False)
    assert np.count_nonzero(values) > 0.9 * values.size
    assert ckpt["summary"]["final_sparsity"] < 0.1


# --- several tasks in one model ------------------------------------------------------------------


def test_multitask_batches_hold_an_equal_share_of_each_task():
    tasks = ("division", "multiplication", "addition")
    data = make_dataset(tasks, 11, 0.5, seed=0)
    batches = Batches(data, 30, seed=0)
    seen = [set() for _ in tasks]
    for step in range(1, 40):
        tokens, targets = batches(step)
        assert tokens.shape == (30, 4) and targets.shape == (30,)
        ops, counts = np.unique(tokens[:, 1], return_counts=True)
        assert list(ops) == [11, 12, 13] and list(counts) == [10, 10, 10]  # op token p + i
        for i in range(len(tasks)):
            seen[i] |= {tuple(r) for r in tokens[tokens[:, 1] == 11 + i]}
    for i, d in enumerate(data):  # every training example comes up, no validation one
        assert seen[i] == {tuple(r) for r in d.train_x}


def test_multitask_run_reports_per_task_metrics(tmp_path):
    cfg = tiny(tasks=("division", "multiplication"), steps=100, patience=0)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["step_budget"] == 200 and summary["steps_run"] == 200
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == list(range(0, 201, 25))
    for r in records:
        assert set(r["per_task"]) == {"division", "multiplication"}
        for task_row in r["per_task"].values():
            assert {"train_acc", "val_acc", "train_loss", "val_loss"} <= set(task_row)
    keys = {"generalized_step", "progress_pct", "delay_steps", "unstable", "final_val_acc"}
    for task in cfg.tasks:
        assert keys <= set(summary["per_task"][task])
    last = records[-1]
    assert (
        summary["per_task"]["multiplication"]["final_val_acc"]
        == (last["per_task"]["multiplication"]["val_acc"])
    )
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


# --- stability -----------------------------------------------------------------------------------


def test_stability_flags_a_fall_after_generalizing():
    steps = [0, 50, 100, 150, 200]
    assert stability(steps, [0.0, 0.5, 0.97, 0.99, 0.98]) == {
        "unstable": False,
        "min_val_acc_after_generalized": 0.97,
    }
    assert stability(steps, [0.0, 0.96, 0.99, 0.40, 0.97]) == {
        "unstable": True,
        "min_val_acc_after_generalized": 0.40,
    }
    assert stability(steps, [0.0, 0.1, 0.2, 0.9, 0.94]) == {
        "unstable": False,
        "min_val_acc_after_generalized": None,
    }


def test_stability_cell_names_falls_recoveries_and_divergence():
    def run(gen, unstable=False, low=None, final=1.0, status="finished"):
        return {
            "generalized_step": gen,
            "unstable": unstable,
            "min_val_acc_after_generalized": low,
            "final_val_acc": final,
            "status": status,
        }

    assert stability_cell([run(900), run(1000)], 0.95) == "stable"
    fell = [run(900, True, 0.2), run(1000, True, 0.5, final=0.4), run(800)]
    assert stability_cell(fell, 0.95) == "fell back 2 of 3 (lowest 20%), 1 ended below"
    never = [run(None, final=0.01), run(None, final=0.01, status="diverged")]
    assert stability_cell(never, 0.95) == "1 diverged"  # never generalized: not "stable"
    assert stability_cell([run(None)], 0.95) == "-"


def test_summary_marks_unstable_overall_and_per_task():
    cfg = tiny(tasks=("division", "multiplication"))

    def rec(step, div, mul):
        per = {
            "division": {"train_acc": 1.0, "val_acc": div},
            "multiplication": {"train_acc": 1.0, "val_acc": mul},
        }
        return {"step": step, "train_acc": 1.0, "val_acc": (div + mul) / 2, "per_task": per}

    records = [rec(0, 0, 0), rec(25, 0.99, 0.96), rec(50, 0.99, 0.5), rec(75, 0.99, 0.97)]
    s = run_summary(cfg, records, "finished", 1.0, 100)
    assert s["unstable"] is True and s["min_val_acc_after_generalized"] == pytest.approx(0.745)
    assert s["per_task"]["division"]["unstable"] is False
    assert s["per_task"]["multiplication"]["unstable"] is True
    assert s["per_task"]["multiplication"]["min_val_acc_after_generalized"] == 0.5


# --- Grokfast ------------------------------------------------------------------------------------


def reference_ema(grads: list[np.ndarray], alpha: float, lamb: float) -> list[np.ndarray]:
    """Lee et al.'s gradfilter_ema, step by step: mu starts as the first gradient."""
    out, mu = [], None
    for g in grads:
        mu = g.copy() if mu is None else mu
        mu = mu * alpha + g * (1 - alpha)
        out.append(g + mu * lamb)
    return out


def reference_ma(grads: list[np.ndarray], window: int, lamb: float) -> list[np.ndarray]:
    """Lee et al.'s gradfilter_ma (warmup=True): the mean of a full deque of raw gradients."""
    out, queue = [], deque(maxlen=window)
    for g in grads:
        queue.append(g)
        out.append(g + lamb * sum(queue) / len(queue) if len(queue) == window else g)
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ema_filter_matches_its_formula_step_by_step(dtype):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(17).astype(dtype) for _ in range(40)]
    f = EMAFilter(17, dtype, alpha=0.9, lamb=2.0)
    for t, (g, want) in enumerate(zip(grads, reference_ema(grads, 0.9, 2.0), strict=True)):
        got = g.copy()
        f.apply(got)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)
        if t == 0:  # mu_1 = g_1, so the first step is (1 + lamb) g_1
            np.testing.assert_allclose(got, 3.0 * g, rtol=1e-6)


@pytest.mark.parametrize("window", [1, 4, 7])
def test_ma_filter_matches_its_formula_step_by_step(window):
    rng = np.random.default_rng(window)
    grads = [rng.standard_normal(13) for _ in range(5 * window + 3)]
    f = MAFilter(13, np.float64, window=window, lamb=5.0)
    for t, (g, want) in enumerate(zip(grads, reference_ma(grads, window, 5.0), strict=True)):
        got = g.copy()
        f.apply(got)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        if t < window - 1:  # the window is not full yet: unchanged
            np.testing.assert_array_equal(got, g)


@pytest.mark.parametrize("kind", ["ema", "ma"])
def test_filter_state_round_trips(kind):
    cfg = validate(Config(grokfast=kind, grokfast_window=5))
    assert cfg.grokfast_lamb == {"ema": 2.0, "ma": 5.0}[kind]
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(9).astype(np.float32) for _ in range(12)]
    a = make_grad_filter(cfg, 9)
    for g in grads[:7]:
        a.apply(g.copy())
    b = make_grad_filter(cfg, 9)
    b.load_state({k: np.array(v, copy=True) for k, v in a.state().items()})
    for g in grads[7:]:
        ga, gb = g.copy(), g.copy()
        a.apply(ga)
        b.apply(gb)
        np.testing.assert_array_equal(ga, gb)


def test_no_filter_by_default():
    assert make_grad_filter(validate(Config()), 9) is None


# --- the experiment command ----------------------------------------------------------------------


def test_noise_arms_keep_the_baseline_weight_decay_per_step():
    base = validate(Config())
    for arm in noise_arms(base)[1:]:
        c = arm.changes
        assert c["optimizer"] == "sgd"
        shrink = c["lr"] * c["weight_decay"] / (1 - base.momentum)
        assert shrink == pytest.approx(base.lr * base.weight_decay)


def test_plan_covers_every_arm_and_seed(tmp_path):
    specs = plan("diversity", tiny(), (0, 1), tmp_path)
    assert len(specs) == 10
    assert {s.cfg.tasks for s in specs} >= {("division",), ("division", "multiplication")}
    assert specs[0].cfg.tasks == ("division",) and [s.seed for s in specs[:2]] == [0, 1]
    assert len({s.out for s in specs}) == 10
    specs = plan("grokfast", tiny(), (0,), tmp_path, only=("ma",))
    assert [(s.label, s.cfg.grokfast, s.cfg.grokfast_lamb) for s in specs] == [
        ("baseline", "none", None),
        ("ma", "ma", 5.0),
    ]


def test_experiment_report_draws_no_figure_before_a_run_is_done(tmp_path, capsys):
    """With runs started and none finished, --report-only lists them and draws no (empty)
    figure, and removes one left from an earlier state of the folder."""
    out = tmp_path / "exp"
    argv = grokfast_argv(out, "baseline", "--seeds", "0", "--steps", "50")
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert (out / "comparison.png").exists()
    summary_path = out / "baseline" / "seed0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps(summary | {"status": "interrupted"}))
    code, stdout, err = run_cli(argv + ["--report-only"], capsys)
    assert code == 0, err
    assert "Runs started and not done yet" in stdout and "- baseline, seed 0: step 50" in stdout
    assert not (out / "comparison.png").exists()
    assert stdout.rstrip().endswith("(table.md)")


@pytest.mark.slow
def test_stop_at_baseline_runs_the_baselines_then_each_arm_to_its_seeds_generalized_step(
    tmp_path, capsys
):
    """--stop-at-baseline: each arm's budget is the step its seed's baseline generalized at, the
    table's progress % still of the budget asked for, and the command it records says so."""
    out = tmp_path / "exp"
    argv = ["experiment", "grokfast", "--preset", "tiny", "--arms", "ma", "--seeds", "0,1"]
    argv += ["--stop-at-baseline", "-q", "--out", str(out)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err

    def summary(arm: str, seed: int) -> dict:
        return json.loads((out / arm / f"seed{seed}" / "summary.json").read_text())

    steps = [summary("baseline", seed)["generalized_step"] for seed in (0, 1)]
    assert None not in steps and all(summary("baseline", k)["step_budget"] == 2000 for k in (0, 1))
    for seed in (0, 1):  # each arm to its baseline's step, or the two's median if later
        arm = summary("ma", seed)
        assert arm["step_budget"] == math.ceil(max(steps[seed], statistics.median(steps)))
    assert "--stop-at-baseline" in stdout and "step budget 2,000 per task" in stdout
    # the baseline's progress %: its generalized steps over the 2,000 asked for
    row = next(line for line in stdout.splitlines() if line.startswith("| baseline | "))
    lo, hi = sorted(100 * s / 2000 for s in steps)
    progress = f"{(lo + hi) / 2:.3g}" if lo == hi else f"{(lo + hi) / 2:.3g} [{lo:.3g}-{hi:.3g}]"
    assert row.split(" | ")[4] == progress
    code, _, err = run_cli(argv, capsys)  # again: nothing left to run
    assert code == 0 and "4 runs (4 already done)" in err


def test_stop_at_baseline_refuses_arms_started_before_every_baseline_ended(tmp_path, capsys):
    """An arm's cut budget comes from every seed's baseline: a folder whose arms started while a
    baseline has not ended (run without the flag, or with fewer seeds) is refused in one line
    that names both runs, before anything runs."""
    out = tmp_path / "exp"
    argv = grokfast_argv(out, "ma", "--steps", "50")
    code, _, err = run_cli(argv + ["--seeds", "0"], capsys)
    assert code == 0, err
    code, _, err = run_cli(argv + ["--seeds", "0,1", "--stop-at-baseline"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{out / 'ma' / 'seed0'} has started, but {out / 'baseline' / 'seed1'} has not" in err
    assert not (out / "baseline" / "seed1").exists()


def test_cut_to_baseline_divides_the_step_among_an_arms_tasks(tmp_path):
    """A run of k tasks gets ceil(G / k) steps per task (k steps of the run per step of each
    task's budget), G its seed's baseline's generalized step or the baselines' median if later;
    an arm whose baseline never generalized keeps its budget; no arm runs before every baseline
    has ended."""
    from tinygrok.lab.experiments import cut_to_baseline, plan
    from tinygrok.summary import run_summary

    base = validate(Config(tasks=("division",), p=11, steps=1000))
    specs = plan("diversity", base, (0, 1, 2), tmp_path, only=("div+mul",))

    def ended(s, generalized: int | None) -> None:
        s.out.mkdir(parents=True)
        summary = run_summary(
            s.cfg, [{"step": 400, "train_acc": 1.0, "val_acc": 0.1}], "finished", 1.0, 100
        )
        summary |= {"initial_sparsity": 0, "final_sparsity": 0}
        summary["per_task"]["division"]["generalized_step"] = generalized
        (s.out / "summary.json").write_text(json.dumps(summary))
        (s.out / "config.json").write_text(json.dumps({"config": s.cfg.to_dict()}))

    ended(specs[0], 301)
    ended(specs[1], None)
    assert cut_to_baseline(specs) == []  # seed 2's baseline has not ended: no arm yet
    ended(specs[2], 701)
    arms = {a.seed: a for a in cut_to_baseline(specs)}
    assert sorted(arms) == [0, 1, 2] and all(a.label == "div+mul" for a in arms.values())
    # the baselines' median is 701 (301, 701, never): seed 0's arm trains that far, not 301,
    # so that the table's "no speed-up" (runs past the median) can be reached
    assert arms[0].cfg.steps == arms[2].cfg.steps == 351 and arms[1].cfg.steps == 1000


def test_report_only_reads_runs_of_any_budget_where_running_refuses_them(tmp_path, capsys):
    """A run started with another budget is the same run ended elsewhere: --report-only tables
    it (progress % of the budget asked for), while running the experiment with that budget
    refuses the folder rather than mix budgets."""
    out = tmp_path / "exp"
    argv = grokfast_argv(out, "baseline", "--seeds", "0")
    code, _, err = run_cli(argv + ["--steps", "50"], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(argv + ["--steps", "80", "--report-only"], capsys)
    assert code == 0, err
    assert "step budget 80 per task" in stdout and "| baseline | division | " in stdout
    code, _, err = run_cli(argv + ["--steps", "80"], capsys)
    assert code == 2 and "holds a run of another config (steps 50 there, 80 here)" in err


@pytest.mark.slow
def test_experiment_command_writes_table_and_figure_and_skips_done_runs(tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["experiment", "init", "--seeds", "0", "--steps", "100", "--tiny-scale", "0.05", "-q"]
    argv += TINY_ARGS + ["--out", str(out)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "4 runs (0 already done)" in err
    table = (out / "table.md").read_text()
    for arm in ("dense", "sparse0.9", "sparse0.9-keep", "scale0.05"):
        assert f"| {arm} | division | " in table
        summary = json.loads((out / arm / "seed0" / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["steps_run"] == 100
    assert "--tiny-scale 0.05" in table and stdout.startswith("# Experiment init")
    assert (out / "comparison.png").stat().st_size > 10_000
    keep = json.loads((out / "sparse0.9-keep" / "seed0" / "summary.json").read_text())
    assert keep["final_sparsity"] == keep["initial_sparsity"] > 0.89

    stamp = (out / "dense" / "seed0" / "summary.json").stat().st_mtime_ns
    code, _, err = run_cli(argv, capsys)
    assert code == 0 and "4 runs (4 already done)" in err
    assert (out / "dense" / "seed0" / "summary.json").stat().st_mtime_ns == stamp
    (out / "table.md").unlink()
    code, stdout, _ = run_cli(argv + ["--report-only"], capsys)
    assert code == 0 and (out / "table.md").read_text() in stdout
    # the evidence a repository keeps (config, summary, metrics) is enough for the table
    (out / "experiment.json").unlink()
    for path in out.glob("*/seed0/*"):
        if path.name not in ("config.json", "summary.json", "metrics.jsonl"):
            path.unlink()
    code, again, _ = run_cli(argv + ["--report-only"], capsys)
    assert code == 0 and again == stdout

    code, _, err = run_cli(argv[:-2] + ["--lr", "0.01", "--out", str(out)], capsys)
    assert code == 2 and "holds a run of another config" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["experiment", "speed"],
            "EXPERIMENT: must be one of diversity, noise, init, grokfast, report",
        ),
        (["experiment", "noise", "--sgd", "fast"], "--sgd: give LR:BATCH"),
        (["experiment", "init", "--sgd", "0.1:64"], "--sgd: only for the noise experiment"),
        (["experiment", "init", "--seeds", "2-0"], "--seeds: the range 2-0 runs backwards"),
        (["experiment", "grokfast", "--arms", "ema,fir"], "--arms: grokfast has the arms"),
        (["experiment", "init", "--report-only"], "holds no run of this experiment yet"),
        (["run", "div", "--grokfast", "fir"], "--grokfast"),
        (["run", "div", "--grokfast", "ma", "--grokfast-window", "0"], "--grokfast-window"),
        (["run", "div", "--grokfast-alpha", "1.5"], "--grokfast-alpha"),
        (["run", "div", "--grokfast", "ema", "--grokfast-lamb", "-1"], "--grokfast-lamb"),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys, tmp_path):
    code, _, err = run_cli(argv + ["--out", str(tmp_path / "x")], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_report_experiment_plans_the_reports_arms_on_any_seeds(tmp_path):
    """--preset report with seeds 42, 0, 1: the report's arms and the controls, in that order,
    each a valid config of its regime."""
    from tinygrok.config import from_preset

    specs = plan("report", from_preset("report"), (42, 0, 1), tmp_path)
    arms = list(dict.fromkeys(s.label for s in specs))
    assert arms[:6] == ["baseline", "sparse0.9", "small0.01", "xavier", "norm", "sparse0.9-keep"]
    assert [s.seed for s in specs[:3]] == [42, 0, 1]
    by_arm = {s.label: s.cfg for s in specs if s.seed == 0}
    assert by_arm["baseline"].init == "report" and by_arm["baseline"].weight_decay == 1e-3
    assert (by_arm["sparse0.9"].init, by_arm["sparse0.9"].sparse) == ("report-xavier", 0.9)
    assert by_arm["small0.01"].init_scale == 0.01 and not by_arm["sparse0.9"].keep_mask
    assert by_arm["sparse0.9-keep"].keep_mask
    # the report's loss is PyTorch's float32 one; the control computes it exactly
    assert (by_arm["baseline"].loss_dtype, by_arm["exact-loss"].loss_dtype) == (
        "float32",
        "float64",
    )
    assert (by_arm["sgd-lr0.005"].optimizer, by_arm["sgd-lr0.005"].momentum) == ("sgd", 0.0)
    assert by_arm["all-four"].step_budget == 1_600_000
    assert specs[0].out == tmp_path / "baseline" / "seed42"
