"""The Python API: `tinygrok.run` writes the run folder `tinygrok run` writes, `tinygrok.load` reads
it back, and a loaded run's answers, logits, evaluation and attention are the engine's own: equal
to a forward pass on hand-built token rows and to the last line of metrics.jsonl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_FIELDS, one_thread

import tinygrok
import tinygrok.train as train_mod
from tinygrok import fast, model
from tinygrok.errors import ConfigError
from tinygrok.params import Params, param_shapes

# the tests' tiny model, its task given by each test
TINY = {k: v for k, v in TINY_FIELDS.items() if k != "tasks"}
FILES = ("config.json", "metrics.jsonl", "summary.json", "checkpoint.npz", "curves.png")


@pytest.fixture(scope="module")
def one_thread_module():
    """One BLAS thread for this module's runs."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def single(tmp_path_factory, one_thread_module) -> tinygrok.Run:
    """A run of addition mod 7, two blocks (so that `attention` has a layer 1)."""
    cfg = tinygrok.config_from(tasks="addition", **TINY | {"layers": 2})
    return tinygrok.run(cfg, tmp_path_factory.mktemp("api") / "single", progress=False)


@pytest.fixture(scope="module")
def double(tmp_path_factory, one_thread_module) -> tinygrok.Run:
    """A run of addition and division mod 7 in one model."""
    cfg = tinygrok.config_from(tasks=("addition", "division"), **TINY)
    return tinygrok.run(cfg, tmp_path_factory.mktemp("api") / "double", progress=False)


def all_pairs(p: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.divmod(np.arange(p * p), p)
    return a, b


def test_run_writes_the_files_of_a_run_and_loads_it(single):
    for name in FILES:
        assert (single.dir / name).stat().st_size > 0, name
    doc = json.loads((single.dir / "config.json").read_text())
    assert doc["config"] == single.config.to_dict()
    assert single.summary == json.loads((single.dir / "summary.json").read_text())
    lines = (single.dir / "metrics.jsonl").read_text().splitlines()
    assert single.metrics == [json.loads(line) for line in lines]
    assert single.step == single.summary["steps_run"] == single.config.step_budget
    loaded = tinygrok.load(str(single.dir))
    assert loaded.config == single.config and loaded.step == single.step
    assert loaded.metrics == single.metrics and loaded.summary == single.summary
    assert "addition mod 7" in repr(loaded) and "finished" in repr(loaded)


def test_params_are_the_parameter_table_and_read_only(single):
    shapes = param_shapes(single.config)
    assert list(single.params) == list(shapes)
    assert {k: v.shape for k, v in single.params.items()} == shapes
    assert "blocks.1.attn.w_qkv" in single.params
    with np.load(single.dir / "checkpoint.npz") as z:
        flat = z["params"]
    assert np.array_equal(np.concatenate([v.ravel() for v in single.params.values()]), flat)
    with pytest.raises(ValueError, match="read-only"):
        single.params["wte"][0, 0] = 1.0


def test_predict_is_the_argmax_of_logits_and_of_a_hand_built_forward(single):
    cfg, p = single.config, single.config.p
    a, b = all_pairs(p)
    logits = single.logits(a, b)
    assert logits.shape == (p * p, p) and logits.dtype == np.float32
    answers = single.predict(a, b)
    assert np.array_equal(answers, logits.argmax(axis=1))
    # [a, op, b, =] with op = p (the run's first task) and = p + 1, through both models' forward
    tokens = np.stack([a, np.full_like(a, p), b, np.full_like(a, p + 1)], axis=1)
    with np.load(single.dir / "checkpoint.npz") as z:
        params = Params(param_shapes(cfg), z["params"])
    for engine, forward in (
        ("numpy", fast.forward),
        ("numpy", model.forward),
        (cfg.engine, fast.forward),
    ):
        by_hand, _ = forward(params, tokens, cfg.replace(engine=engine))
        np.testing.assert_allclose(logits, by_hand, rtol=1e-4, atol=1e-5)
    assert np.array_equal(answers, fast.logits(params, tokens, cfg).argmax(axis=1))
    # two ints give an int, arrays broadcast
    assert single.predict(3, 4) == answers[3 * p + 4] and isinstance(single.predict(3, 4), int)
    assert single.predict(np.int64(3), 4) == answers[3 * p + 4]
    assert np.array_equal(single.predict([1, 2, 3], 5), answers[[1 * p + 5, 2 * p + 5, 3 * p + 5]])
    assert single.predict(np.arange(p)[:, None], np.arange(p)).shape == (p, p)
    assert single.logits([], []).shape == (0, p)


def test_evaluate_is_the_last_evaluation_of_the_run(single):
    last = single.metrics[-1]
    assert last["step"] == single.step  # the run evaluated at its final step
    for split in ("train", "val"):
        ev = single.evaluate(split)
        assert set(ev) == {"loss", "acc"}
        assert ev["acc"] == last[f"{split}_acc"]
        assert ev["loss"] == pytest.approx(last[f"{split}_loss"], rel=1e-6)
    assert single.evaluate() == single.evaluate("val")


def test_attention_rows_are_causal_distributions(single):
    cfg = single.config
    a, b = all_pairs(cfg.p)
    for layer in range(cfg.layers):
        att = single.attention(a, b, layer=layer)
        assert att.shape == (len(a), cfg.heads, 4, 4)
        np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=1e-5)
        assert (att >= 0).all()
        assert (att[..., np.triu_indices(4, k=1)[0], np.triu_indices(4, k=1)[1]] == 0).all()
    # one pair alone is the same pair in the batch, to float32's rounding: BLAS may choose another
    # kernel for one row than for 49 (OpenBLAS on an AMD EPYC does), so not bit for bit
    np.testing.assert_allclose(
        single.attention(2, 3)[0], single.attention(a, b)[2 * cfg.p + 3], rtol=1e-5, atol=1e-7
    )
    # the two blocks attend differently: the layer is really chosen
    assert not np.allclose(single.attention(a, b, layer=0), single.attention(a, b, layer=1))
    with pytest.raises(ConfigError, match=r"^layer: must be in 0\.\.1 \(got 2\)$"):
        single.attention(1, 2, layer=2)


def test_several_tasks_need_a_task_and_use_its_operation_token(double):
    p = double.config.p
    with pytest.raises(ConfigError, match="^task: this run has several tasks"):
        double.predict(1, 2)
    with pytest.raises(ConfigError, match="^task: this run was not trained on subtraction"):
        double.predict(1, 2, task="subtraction")
    with pytest.raises(ConfigError, match="^b: division is not defined for b = 0$"):
        double.predict([1, 2], [3, 0], task="division")
    assert double.tokens(4, 5, task="add").tolist() == [[4, p, 5, p + 2]]
    assert double.tokens(4, 5, task="division").tolist() == [[4, p + 1, 5, p + 2]]
    assert double.predict(0, 0, task="addition") in range(p)
    last = double.metrics[-1]
    for task in ("addition", "division"):
        assert double.evaluate("val", task)["acc"] == last["per_task"][task]["val_acc"]
    assert double.evaluate("train")["acc"] == last["train_acc"]


@pytest.mark.parametrize(
    "a, b, message",
    [
        (-1, 2, r"^a: must be in 0\.\.6 for this run \(got -1\)$"),
        (1, 7, r"^b: must be in 0\.\.6 for this run \(got 7\)$"),
        ([0, 9], 2, r"^a: must be in 0\.\.6 for this run \(got 9\)$"),
        (1.5, 2, r"^a: must be integers \(got float64\)$"),
        (1, [True], r"^b: must be integers \(got bool\)$"),
    ],
)
def test_bad_pairs_are_one_line_config_errors(single, a, b, message):
    for query in (single.predict, single.logits, single.attention, single.tokens):
        with pytest.raises(ConfigError, match=message):
            query(a, b)


def test_bad_questions_are_config_errors(single):
    with pytest.raises(ConfigError, match="^TASK: unknown task 'nope'"):
        single.predict(1, 2, task="nope")
    with pytest.raises(ConfigError, match=r"^split: must be one of train, val \(got 'test'\)$"):
        single.evaluate("test")


def test_a_folder_without_a_run_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="holds no run"):
        tinygrok.load(tmp_path)
    with pytest.raises(ConfigError, match="holds no run"):
        tinygrok.load(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match='no "config" object'):
        tinygrok.load(tmp_path)


def test_a_damaged_checkpoint_is_a_config_error(single, tmp_path):
    for name in ("config.json", "metrics.jsonl"):
        (tmp_path / name).write_bytes((single.dir / name).read_bytes())
    (tmp_path / "checkpoint.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="truncated or corrupted"):
        tinygrok.load(tmp_path)


def test_run_refuses_a_folder_that_holds_a_run_unless_forced(tmp_path, one_thread_module):
    cfg = tinygrok.config_from(tasks="subtraction", **TINY | {"steps": 10})
    first = tinygrok.run(cfg, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        tinygrok.run(cfg.replace(seed=1), tmp_path, progress=False)
    assert tinygrok.load(tmp_path).config.seed == 0
    again = tinygrok.run(cfg.replace(seed=1), tmp_path, progress=False, force=True)
    assert again.config.seed == 1 and not np.array_equal(again.params["wte"], first.params["wte"])
    with pytest.raises(ConfigError, match=r"^threads: must be an integer >= 1 \(got 0\)$"):
        tinygrok.run(cfg, tmp_path / "other", threads=0)


def test_ctrl_c_saves_the_run_and_raises_keyboard_interrupt(
    tmp_path, monkeypatch, one_thread_module
):
    real = train_mod.learning_rate

    def learning_rate(cfg, step):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the handler finishes this step
        return real(cfg, step)

    monkeypatch.setattr(train_mod, "learning_rate", learning_rate)
    handler = signal.getsignal(signal.SIGINT)
    cfg = tinygrok.config_from(tasks="addition", **TINY)
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 5; checkpoint saved"):
        tinygrok.run(cfg, tmp_path, progress=False)
    assert signal.getsignal(signal.SIGINT) is handler
    stopped = tinygrok.load(tmp_path)
    assert stopped.step == 5 and stopped.summary["status"] == "interrupted"


def test_config_from_validates_as_the_command_line_does():
    cfg = tinygrok.config_from("tiny", steps=200)
    assert isinstance(cfg, tinygrok.Config)
    assert cfg.tasks == ("addition",) and cfg.p == 23 and cfg.steps == 200
    assert tinygrok.config_from().tasks == ("division",)
    assert tinygrok.config_from(tasks=["div", "mul"]).tasks == ("division", "multiplication")
    assert tinygrok.config_from(tasks="s5").p == 120
    with pytest.raises(ConfigError, match=r"^--p: division needs a prime p \(got 96"):
        tinygrok.config_from(tasks="division", p=96)
    with pytest.raises(ConfigError, match="^--preset: must be one of"):
        tinygrok.config_from("huge")
    with pytest.raises(ConfigError, match="^learning_rate, wd: not a setting"):
        tinygrok.config_from(wd=1.0, learning_rate=1e-3)


def test_metrics_frame_is_a_dataframe_or_says_what_it_needs(single, double, monkeypatch):
    try:
        import pandas  # noqa: F401
    except ImportError:
        pass
    else:
        frame = single.metrics_frame()
        assert list(frame["step"]) == [r["step"] for r in single.metrics]
        frame = double.metrics_frame()
        assert "per_task.division.val_acc" in frame.columns
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(ImportError, match=r"needs pandas \(pip install pandas\)"):
        single.metrics_frame()


def test_import_tinygrok_is_cheap_and_run_stays_the_function():
    code = (
        "import sys, tinygrok; assert 'numpy' not in sys.modules, 'numpy imported'\n"
        "import tinygrok.train, tinygrok.api\n"
        "assert callable(tinygrok.run) and tinygrok.load is tinygrok.api.load\n"
        "assert tinygrok.train.train is not tinygrok.run\n"
        "from tinygrok import Config, Run, config_from\n"
        "print(tinygrok.__version__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == tinygrok.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tinygrok.nope  # noqa: B018
