"""Promises the docs make that no other test pins down: a resumed run on the numba engine is the
run left alone; evaluation reads the validation set; the split, the initialization and the batches
draw from independent streams, and each task has its own split; `analyze --key-freqs` restricts to
the frequencies given; an experiment table's medians, ranges, speedups and "never" are the
arithmetic its header states."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clirun import TINY, run_cli

from tinygrok.checkpoint import load_checkpoint, read_run
from tinygrok.config import Config, validate
from tinygrok.fast import evaluate
from tinygrok.folders import read_config
from tinygrok.interrupt import StopFlag
from tinygrok.lab.comparison import in_progress, table
from tinygrok.lab.experiments import plan
from tinygrok.params import Params, init_params, param_shapes
from tinygrok.tasks import SPLIT_STREAM, Batches, make_dataset
from tinygrok.train import resume, train

pytestmark = pytest.mark.usefixtures("single_thread")


def numba_cfg() -> Config:
    return validate(
        Config(
            tasks=("addition", "division"),
            p=11,
            layers=2,
            d_model=16,
            heads=2,
            d_mlp=32,
            batch_size=32,
            steps=60,
            eval_every=10,
            checkpoint_every=20,
            patience=0,
            engine="numba",
        )
    )


def test_a_resumed_numba_run_is_the_run_left_alone(tmp_path, monkeypatch):
    """Stopped at step 35 (between checkpoints) and resumed: metrics, summary and parameters
    equal, bit for bit, those of the run never stopped, on the default engine."""
    cfg = numba_cfg()
    train(cfg, tmp_path / "ref", progress=False)
    stop = StopFlag()
    import tinygrok.train as train_mod

    real = train_mod.learning_rate

    def learning_rate(c, step):
        if step == 35:
            stop.reason = "SIGINT"
        return real(c, step)

    monkeypatch.setattr(train_mod, "learning_rate", learning_rate)
    assert train(cfg, tmp_path / "cut", progress=False, stop=stop)["status"] == "interrupted"
    monkeypatch.setattr(train_mod, "learning_rate", real)
    resume(read_run(tmp_path / "cut"), progress=False)

    def drop_clock(line: str) -> dict:
        r = json.loads(line)
        r.pop("elapsed_s")
        return r

    def metrics(run: Path) -> list[dict]:
        return [drop_clock(x) for x in (run / "metrics.jsonl").read_text().splitlines()]

    assert metrics(tmp_path / "cut") == metrics(tmp_path / "ref")
    a, b = (
        load_checkpoint(d / "checkpoint.npz", cfg) for d in (tmp_path / "cut", tmp_path / "ref")
    )
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.optimizer["m"], b.optimizer["m"])


def test_validation_accuracy_is_measured_on_the_validation_set(tmp_path):
    """The logged train and validation figures are those of the run's own two sets: recomputed
    from the final parameters, and different from each other in a model that has memorized."""
    cfg = validate(Config(tasks=("addition",), p=11, layers=1, d_model=16, heads=2, d_mlp=32))
    cfg = cfg.replace(batch_size=60, steps=300, eval_every=50, patience=0, lr=1e-2)
    cfg = cfg.replace(weight_decay=0.0)  # it memorizes and does not generalize
    train(cfg, tmp_path, progress=False)
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz", read_config(tmp_path)[0])
    params = Params(param_shapes(cfg), ckpt.params)
    (d,) = make_dataset(cfg.tasks, cfg.p, cfg.train_frac, cfg.seed)
    train_loss, train_acc = evaluate(params, d.train_x, d.train_y, cfg)
    val_loss, val_acc = evaluate(params, d.val_x, d.val_y, cfg)
    assert (last["train_acc"], last["val_acc"]) == (train_acc, val_acc)
    assert last["val_loss"] == pytest.approx(val_loss) and last["train_loss"] == pytest.approx(
        train_loss
    )
    assert train_acc > val_acc + 0.3, "a memorizing model: its two sets must differ"


def test_split_init_and_batches_draw_from_independent_streams():
    """Changing what one stream decides leaves the others' draws alone: another train fraction
    keeps the initialization, another init keeps the split and the batches' order."""
    base = validate(Config(tasks=("addition",), p=13, d_model=16, heads=2, d_mlp=32))
    a, _ = init_params(base)
    b, _ = init_params(base.replace(train_frac=0.3))
    np.testing.assert_array_equal(a.flat, b.flat)
    (da,) = make_dataset(base.tasks, base.p, 0.5, base.seed)
    # the split is one permutation: a smaller fraction takes its first part
    (db,) = make_dataset(base.tasks, base.p, 0.3, base.seed)
    np.testing.assert_array_equal(db.train_x, da.train_x[: len(db.train_x)])
    # the batch stream is not the split's: batch 1 is not the training set's first rows
    x, _ = Batches([da], 16, base.seed)(1)
    assert not np.array_equal(x, da.train_x[:16])
    # nor the split's permutation replayed on the training set (a batch stream keyed like the
    # split's, [seed, SPLIT_STREAM, task], would deal exactly that)
    perm = Batches([da], 16, base.seed)._perm(0, 0)
    replayed = np.random.default_rng([base.seed, SPLIT_STREAM, 0]).permutation(len(da.train_y))
    assert not np.array_equal(perm, replayed)


def test_each_task_has_its_own_split():
    """Addition and subtraction have the same pairs, but their splits differ."""
    add, sub = make_dataset(("addition", "subtraction"), 11, 0.5, seed=0)
    assert not np.array_equal(add.train_x[:, [0, 2]], sub.train_x[:, [0, 2]])


@pytest.mark.slow
def test_analyze_restricts_to_the_key_frequencies_given(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--steps", "40", "--patience", "0", "--snapshot-every", "20"]
    assert run_cli("run", "addition", *args, "--out", run).code == 0
    assert run_cli("analyze", run, "--threads", "1").code == 0
    found = json.loads((run / "analysis.json").read_text())
    other = [k for k in range(1, 6) if k not in found["key_frequencies"]][:2]
    r = run_cli("analyze", run, "--threads", "1", "--key-freqs", ",".join(map(str, other)))
    assert r.code == 0, r.err
    given = json.loads((run / "analysis.json").read_text())
    assert given["key_frequencies"] == sorted(other)
    assert given["restricted_loss"] != found["restricted_loss"]
    r = run_cli("analyze", run, "--key-freqs", "9")  # p = 11 has frequencies 1..5
    assert r.code == 2 and "frequencies must be in 1..5" in r.err


def run_summary(tasks: list[str], seed: int, status: str) -> dict:
    """A summary.json of a run that reached nothing, for the fields a test does not set."""
    never = {
        "memorized_step": None,
        "generalized_step": None,
        "delay_steps": None,
        "progress_pct": None,
        "unstable": False,
        "min_val_acc_after_generalized": None,
        "final_train_acc": 0.1,
        "final_val_acc": 0.1,
    }
    return {
        "tasks": tasks,
        "seed": seed,
        "step_budget": 2000,
        "steps_run": 2000,
        **never,
        "n_params": 1,
        "wall_s": 1.0,
        "steps_per_s": 2000.0,
        "status": status,
        "per_task": {t: never for t in tasks},
        "initial_sparsity": 0.0,
        "final_sparsity": 0.0,
    }


def write_done(spec, generalized: int | None, steps_run: int) -> None:
    """A finished run's summary.json: generalized at that step (or never) after steps_run."""
    task = {
        "memorized_step": 200,
        "generalized_step": generalized,
        "progress_pct": None if generalized is None else 100 * generalized / 2000,
        "delay_steps": None if generalized is None else generalized - 200,
        "final_train_acc": 1.0,
        "final_val_acc": 0.1 if generalized is None else 0.99,
        "unstable": False,
        "min_val_acc_after_generalized": None,
    }
    summary = run_summary(list(spec.cfg.tasks), spec.seed, "finished") | task
    spec.out.mkdir(parents=True, exist_ok=True)
    (spec.out / "summary.json").write_text(
        json.dumps(summary | {"steps_run": steps_run, "per_task": {"division": task}})
    )


def table_rows(specs) -> dict[str, list[str]]:
    """The experiment table's rows: arm -> its cells after the task's."""
    lines = table(specs).splitlines()[2:]
    return {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[3:-1]] for ln in lines}


def test_experiment_table_arithmetic(tmp_path):
    """Medians and [min-max] over seeds with 'never' for a seed that did not generalize (counted
    as +inf), speedups as the baseline's median over the arm's, and '-' where either is never."""
    base = validate(Config(tasks=("division",), p=11, d_model=16, heads=2, d_mlp=32, steps=2000))
    specs = plan("init", base, (0, 1, 2), tmp_path)
    generalized = {
        "dense": [1000, 1400, 1200],
        "sparse0.9": [300, None, 400],
        "sparse0.9-keep": [None, None, None],
    }
    for spec in specs:
        if spec.label in generalized:  # scale0.1: no run done yet
            write_done(spec, generalized[spec.label][spec.seed], 2000)
    rows = table_rows(specs)
    # seeds generalized, generalized step, progress %, delay, speedups (steps, progress, delay)
    assert rows["dense"][:4] == ["3 of 3", "1,200 [1,000-1,400]", "60 [50-70]", "1,000 [800-1,200]"]
    assert rows["dense"][4:7] == ["-", "-", "-"]
    assert rows["sparse0.9"][:4] == [
        "2 of 3",
        "400 [300-never]",
        "20 [15-never]",
        "200 [100-never]",
    ]
    assert rows["sparse0.9"][4:7] == ["3x", "3x", "5x"]
    assert rows["sparse0.9-keep"][:2] == ["0 of 3", "never"]
    # never, in runs that trained past the baseline's median (1,200): slower than the baseline
    slower = "no speed-up (> 2,000 steps)"
    assert rows["sparse0.9-keep"][4:7] == [slower, slower, "-"]
    assert rows["scale0.1"][0] == "no run done yet"


def test_an_arm_stopped_where_the_baseline_generalized_has_no_speedup(tmp_path):
    """An arm whose runs never generalized is called slower only if each of them trained at
    least to the baseline's median generalized step; stopped before it, it has no verdict. An arm
    done before the baseline has none either (and the table is still written)."""
    base = validate(Config(tasks=("division",), p=11, d_model=16, heads=2, d_mlp=32, steps=2000))
    specs = {(s.label, s.seed): s for s in plan("init", base, (0, 1, 2), tmp_path)}

    def rows() -> dict[str, list[str]]:
        return table_rows(list(specs.values()))

    write_done(specs["sparse0.9", 0], None, 1300)
    assert rows()["sparse0.9"][4:7] == ["-", "-", "-"]  # no baseline run done yet
    for seed, gen in enumerate([1000, 1400, 1200]):
        write_done(specs["dense", seed], gen, 2000)
    for seed, steps_run in enumerate([1300, 1250, 1500]):
        write_done(specs["sparse0.9", seed], None, steps_run)
    write_done(specs["scale0.1", 0], None, 1100)  # stopped before the baseline's 1,200
    # half of an even count never generalized: the other seed was sooner, no verdict
    write_done(specs["sparse0.9-keep", 0], 500, 2000)
    write_done(specs["sparse0.9-keep", 1], None, 2000)
    got = rows()
    assert got["sparse0.9"][4:6] == ["no speed-up (> 1,250 steps)"] * 2
    assert got["scale0.1"][4:7] == ["-", "-", "-"]
    assert got["sparse0.9-keep"][1] == "never [500-never]"
    assert got["sparse0.9-keep"][4:7] == ["-", "-", "-"]


def test_progress_is_of_the_planned_budget_when_resume_changed_it(tmp_path):
    """A run ended sooner with `resume --steps N` has its own progress % of N; the table's is of
    the budget the experiment planned, as for the other runs."""
    base = validate(Config(tasks=("division",), p=11, d_model=16, heads=2, d_mlp=32, steps=2000))
    specs = plan("init", base, (0,), tmp_path)
    write_done(specs[0], 1000, 2000)
    write_done(specs[1], 500, 1000)
    doc = json.loads((specs[1].out / "summary.json").read_text())
    doc["per_task"]["division"]["progress_pct"] = 50.0  # of its changed budget, 1,000
    (specs[1].out / "summary.json").write_text(json.dumps(doc))
    got = table_rows(specs)
    assert got["sparse0.9"][2:3] == ["25"] and got["sparse0.9"][4:6] == ["2x", "2x"]


def test_experiment_report_lists_the_runs_in_progress(tmp_path):
    """A run with evaluations and no final summary is listed with its last step and accuracies,
    and the budget its config.json holds now (a resume with --steps raised it past the plan's and
    the interrupted summary's 2,000)."""
    base = validate(Config(tasks=("division",), p=11, d_model=16, heads=2, d_mlp=32, steps=2000))
    specs = plan("init", base, (0,), tmp_path)
    run = specs[1].out
    run.mkdir(parents=True)
    rows = [
        {"step": s, "lr": 1e-3, "train_loss": 1.0, "train_acc": a, "val_loss": 2.0, "val_acc": v}
        | {"weight_norm": 10.0, "elapsed_s": 1.0}
        for s, a, v in [(0, 0.1, 0.1), (50, 1.0, 0.3), (100, 1.0, 0.2)]
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps(run_summary(["division"], 0, "interrupted")))
    resumed = {"config": specs[1].cfg.replace(steps=3000).to_dict(), "tinygrok_version": "0.1.0"}
    resumed |= {"engine": "numba", "threads": {"blas": 1, "numba": 1}, "n_params": 1}
    resumed["provenance"] = {}
    (run / "config.json").write_text(json.dumps(resumed))
    assert in_progress(specs) == (
        "- sparse0.9, seed 0: step 100 of 3,000, division training 100.0%, validation 20.0% "
        "(at most 30.0% so far)\n"
    )
