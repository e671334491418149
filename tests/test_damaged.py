"""Damaged files never give a traceback: every file a command reads from a run, sweep or
experiment folder (config.json, summary.json, metrics.jsonl, the snapshots, sweep.json) is
damaged at random (truncated, bytes flipped, not UTF-8, a key removed or added, a value made NaN,
infinite, negative, out of range or of the wrong type; for a snapshot: arrays of the wrong shape
or dtype, an object array, NaN, a member missing or added), and every command that reads it runs
in this process. It must exit 0, 2 (one line naming the file) or 3, and leave every file it is not
there to write as it was. The checkpoint's own checks are tested with `resume` in test_robust.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from clirun import TINY, run_cli

TINY_RUN = [*TINY, "--steps", "30"]
SWEEP = ["sweep", "add", *TINY_RUN, "--seeds", "0-1", "--workers", "1"]
PHASE = ["phase", "add", *TINY_RUN, "--grid", "weight_decay=0,1", "--seeds", "0", "--workers", "1"]
EXPERIMENT = ["experiment", "grokfast", "--arms", "baseline", *TINY_RUN, "--seeds", "0"]
# What each command is there to write (a file it may change even when it succeeds).
ANALYSIS_OUTPUTS = ("analysis.json", "analysis-")
AGGREGATES = ("runs.csv", "summary.md", "sweep.png")
REPORT = ("table.md", "comparison.png")
# A value put in place of another: each is wrong for most fields (NaN and inf for all).
BAD_VALUES = [float("nan"), float("inf"), -1, 1.5, 10**30, "x", None, True, [], {}]


@pytest.fixture(scope="module", autouse=True)
def no_rendering():
    """Figures are built (so their code reads every value) but not rendered to pixels, which
    takes seconds on a loaded machine: savefig writes an empty file."""
    from matplotlib.figure import Figure

    real = Figure.savefig
    Figure.savefig = lambda self, path, **kw: Path(path).write_bytes(b"")
    yield
    Figure.savefig = real


@pytest.fixture(scope="module")
def folders(tmp_path_factory, no_rendering) -> dict[str, Path]:
    """One finished run with snapshots and logged measures (and a copy of it as if killed after
    its final checkpoint), one sweep and one phase diagram of two runs each, and one experiment
    of one run, made once per module and copied for each case."""
    root = tmp_path_factory.mktemp("originals")
    made = {
        "run": [
            "run",
            "add",
            *TINY_RUN,
            "--threads",
            "1",
            "--snapshot-every",
            "10",
            "--measures-every",
            "10",
        ],
        "sweep": SWEEP,
        "phase": PHASE,
        "experiment": EXPERIMENT,
    }
    for name, args in made.items():
        r = run_cli(*args, "--out", root / name)
        assert r.code == 0, r.err
    # a run killed after its final checkpoint: resume writes its summary from metrics.jsonl
    ended = shutil.copytree(root / "run", root / "ended")
    (ended / "summary.json").unlink()
    (ended / "curves.png").unlink()
    return {name: root / name for name in [*made, "ended"]}


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (the lock aside), by path relative to it."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ---- damage -----------------------------------------------------------------------------------


def truncate(path: Path, rng: random.Random) -> None:
    """Cut the file at a random byte."""
    data = path.read_bytes()
    path.write_bytes(data[: rng.randrange(len(data))])


def flip_bytes(path: Path, rng: random.Random) -> None:
    """Flip one to four random bits."""
    data = bytearray(path.read_bytes())
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def not_utf8(path: Path, rng: random.Random) -> None:
    """Insert two bytes that are not UTF-8."""
    data = path.read_bytes()
    at = rng.randrange(len(data))
    path.write_bytes(data[:at] + b"\xff\xfe" + data[at:])


def json_paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a JSON document's objects and lists, the root's children first."""
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    out = []
    for k, v in items:
        out.append((*prefix, k))
        out += json_paths(v, (*prefix, k))
    return out


def edit_json(doc: object, rng: random.Random) -> object:
    """`doc` with one random edit: a key removed, a key added, or a value replaced."""
    depth = rng.choice([1, 2, 2, 3])  # mostly the fields themselves, not provenance's depths
    paths = [p for p in json_paths(doc) if len(p) <= depth]
    *parent_path, key = rng.choice(paths)
    parent = doc
    for k in parent_path:
        parent = parent[k]
    kind = rng.choice(["remove", "add", "replace", "replace"])
    if kind == "remove":
        del parent[key]
    elif kind == "add" and isinstance(parent, dict):
        parent["unexpected"] = rng.choice(BAD_VALUES)
    else:
        parent[key] = rng.choice(BAD_VALUES)
    return doc


def edit_json_file(path: Path, rng: random.Random) -> None:
    """One random edit (`edit_json`) of a JSON file."""
    path.write_text(json.dumps(edit_json(json.loads(path.read_text()), rng)))


def edit_json_line(path: Path, rng: random.Random) -> None:
    """One random edit (`edit_json`) of one line of a JSON-lines file."""
    lines = path.read_text().splitlines()
    i = rng.randrange(len(lines))
    lines[i] = json.dumps(edit_json(json.loads(lines[i]), rng))
    path.write_text("\n".join(lines) + "\n")


def swap_json_lines(path: Path, rng: random.Random) -> None:
    """Two neighbouring lines swapped (their steps then go backwards)."""
    lines = path.read_text().splitlines()
    i = rng.randrange(len(lines) - 1)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_text("\n".join(lines) + "\n")


def rewrite_snapshot(path: Path, rng: random.Random) -> None:
    """The snapshot written again with one array wrong (or one too many or too few)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    params = arrays["params"]
    choices: dict[str, Callable[[], None]] = {
        "shape": lambda: arrays.update(params=params[: rng.randrange(params.size)]),
        "2-d": lambda: arrays.update(params=params.reshape(1, -1)),
        "int": lambda: arrays.update(params=params.astype(np.int64)),
        "float16": lambda: arrays.update(params=params.astype(np.float16)),
        "complex": lambda: arrays.update(params=params.astype(np.complex64)),
        "object": lambda: arrays.update(params=np.array([None, "x"], dtype=object)),
        "nan": lambda: arrays.update(params=np.where(np.arange(params.size) == 3, np.nan, params)),
        "inf": lambda: arrays.update(params=np.full_like(params, np.inf)),
        "step other": lambda: arrays.update(step=np.array(int(arrays["step"]) + 1)),
        "step float": lambda: arrays.update(step=np.array(0.5)),
        "step vector": lambda: arrays.update(step=np.arange(3)),
        "missing": lambda: arrays.pop(rng.choice(["step", "params"])),
        "extra": lambda: arrays.update(extra=np.zeros(2)),
    }
    choices[rng.choice(sorted(choices))]()
    np.savez(path, allow_pickle=True, **arrays)  # an object array is pickled: it must be refused


def npy_not_npz(path: Path, rng: random.Random) -> None:
    """A .npy array in place of the .npz snapshot."""
    np.save(path.with_suffix(".npy"), np.zeros(rng.randint(1, 9)))
    path.with_suffix(".npy").replace(path)


TEXT_DAMAGE = [truncate, flip_bytes, not_utf8]
JSON_DAMAGE = [*TEXT_DAMAGE, edit_json_file]
METRICS_DAMAGE = [*TEXT_DAMAGE, edit_json_line, swap_json_lines]
SNAPSHOT_DAMAGE = [truncate, flip_bytes, rewrite_snapshot, npy_not_npz]


# ---- commands ---------------------------------------------------------------------------------

# folder, file to damage (a glob), damage kinds, the commands that read it: (arguments after the
# folder, whether the folder is given with --out, the files the command is there to write).
Command = tuple[list[str], bool, tuple[str, ...]]
ANALYZE: Command = (["analyze", "--threads", "1"], False, ANALYSIS_OUTPUTS)
RESUME: Command = (["resume", "--threads", "1"], False, ("*",))
SUMMARIZE: Command = (["summarize"], False, AGGREGATES)
RERUN: Command = (SWEEP, True, ("*",))
PHASE_RERUN: Command = (PHASE, True, ("*",))
REPORT_ONLY: Command = ([*EXPERIMENT, "--report-only"], True, REPORT)
RUN_FILE = "runs/seed=1/{}"
EXPERIMENT_FILE = "baseline/seed0/{}"
CASES = {
    "run config.json": ("run", "config.json", JSON_DAMAGE, [ANALYZE, RESUME]),
    "run summary.json": ("run", "summary.json", JSON_DAMAGE, [RESUME]),
    "run metrics.jsonl": ("run", "metrics.jsonl", METRICS_DAMAGE, [ANALYZE]),
    "ended metrics.jsonl": ("ended", "metrics.jsonl", METRICS_DAMAGE, [RESUME]),
    "run snapshot": ("run", "snapshots/step_00000*0.npz", SNAPSHOT_DAMAGE, [ANALYZE]),
    "sweep.json": ("sweep", "sweep.json", JSON_DAMAGE, [SUMMARIZE, RERUN]),
    "sweep run config.json": ("sweep", RUN_FILE.format("config.json"), JSON_DAMAGE, [SUMMARIZE]),
    "sweep run summary.json": ("sweep", RUN_FILE.format("summary.json"), JSON_DAMAGE, [SUMMARIZE]),
    "sweep rerun config.json": ("sweep", RUN_FILE.format("config.json"), JSON_DAMAGE, [RERUN]),
    "sweep rerun summary.json": ("sweep", RUN_FILE.format("summary.json"), JSON_DAMAGE, [RERUN]),
    "phase sweep.json": ("phase", "sweep.json", JSON_DAMAGE, [PHASE_RERUN]),
    "phase summary.json": ("phase", "runs/*/summary.json", JSON_DAMAGE, [PHASE_RERUN]),
    "experiment config.json": (
        "experiment",
        EXPERIMENT_FILE.format("config.json"),
        JSON_DAMAGE,
        [REPORT_ONLY],
    ),
    "experiment summary.json": (
        "experiment",
        EXPERIMENT_FILE.format("summary.json"),
        JSON_DAMAGE,
        [REPORT_ONLY],
    ),
    "experiment metrics.jsonl": (
        "experiment",
        EXPERIMENT_FILE.format("metrics.jsonl"),
        METRICS_DAMAGE,
        [REPORT_ONLY],
    ),
}


def writes(name: str, outputs: tuple[str, ...]) -> bool:
    """Whether a command that writes `outputs` (file names or their starts; "*": anything) is
    there to change the file `name`."""
    base = Path(name).name
    return any(o == "*" or base.startswith(o) for o in outputs)


def check_case(folders: dict[str, Path], tmp: Path, case: str, damage: str, seed: int) -> None:
    """Damage one file of a fresh copy as CASES[case] says, run each command that reads it."""
    kind, pattern, damages, commands = CASES[case]
    damaging = {d.__name__: d for d in damages}[damage]
    for i, (args, as_out, outputs) in enumerate(commands):
        rng = random.Random(f"{case}/{damage}/{seed}/{i}")
        folder = tmp / f"{kind}{i}"
        shutil.copytree(folders[kind], folder)
        target = rng.choice(sorted(folder.glob(pattern)))
        damaging(target, rng)
        before = digests(folder)
        r = run_cli(*args, "--out", folder) if as_out else run_cli(*args[:1], folder, *args[1:])
        what = f"{case}, {damage}, {args[0]}: exit {r.code}\n{r.err}"
        assert r.code in (0, 2, 3), what
        assert "Traceback" not in r.out + r.err, what
        if r.code == 2:
            assert len(r.err_lines) == 1 and r.err.startswith("tinygrok: error: "), what
            # the damaged file, or its folder (an edit can leave a valid file of another run)
            assert str(target.parent) in r.err, what
        after = digests(folder)
        changed = [n for n in before if after.get(n) != before[n] and not writes(n, outputs)]
        assert not changed or r.code == 0 and "*" in outputs, (what, changed)


PAIRS = [(case, d.__name__) for case in sorted(CASES) for d in CASES[case][2]]


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("case, damage", PAIRS)
def test_a_damaged_file_exits_0_2_or_3_and_changes_nothing_else(
    folders, tmp_path, case, damage, seed
):
    check_case(folders, tmp_path, case, damage, seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 30))
@pytest.mark.parametrize("case, damage", PAIRS)
def test_many_damaged_files(folders, tmp_path, case, damage, seed):
    check_case(folders, tmp_path, case, damage, seed)


def test_a_damaged_snapshot_is_named(folders, tmp_path):
    """An object array in a snapshot is refused with one line naming the snapshot (the pickle
    is never loaded), and analyze writes nothing."""
    run = shutil.copytree(folders["run"], tmp_path / "run")
    snap = run / "snapshots" / "step_0000010.npz"
    np.savez(snap, allow_pickle=True, step=np.array(10), params=np.array([None], dtype=object))
    before = digests(run)
    r = run_cli("analyze", run, "--threads", "1")
    assert r.code == 2 and len(r.err_lines) == 1, r.err
    assert str(snap) in r.err and "pickle" in r.err, r.err
    assert digests(run) == before


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("final_val_acc", 1.5, "final_val_acc must be a number in [0, 1]"),
        ("steps_run", -3, "steps_run must be an integer >= 0"),
        ("memorized_step", 2.5, "memorized_step must be an integer >= 0 or null"),
        ("wall_s", float("inf"), "wall_s must be a finite number >= 0"),
        ("status", "done", "status must be one of"),
        ("seed", 0, "the summary of another run"),
    ],
)
def test_a_summary_out_of_range_is_named_in_one_line(folders, tmp_path, field, value, words):
    """summarize names the summary and the field, for a value of the right type out of range."""
    sweep = shutil.copytree(folders["sweep"], tmp_path / "sweep")
    path = sweep / RUN_FILE.format("summary.json")
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(doc | {field: value}))
    r = run_cli("summarize", sweep)
    assert r.code == 2 and len(r.err_lines) == 1, r.err
    assert str(path) in r.err and words in r.err, r.err


# ---- every field ------------------------------------------------------------------------------

# file of a folder, the command that reads it, and the keys that may be absent (KEY, "*": any
# key of the object KEY: a config's settings, which take their defaults when absent)
FIELD_FILES = {
    "run config.json": ("run", "config.json", ANALYZE, ("resumes", ("config", "*"))),
    "run metrics.jsonl": ("run", "metrics.jsonl", ANALYZE, ("per_task", "measures")),
    "sweep.json": ("sweep", "sweep.json", SUMMARIZE, (("base", "*"),)),
    "sweep run summary.json": ("sweep", RUN_FILE.format("summary.json"), SUMMARIZE, ()),
}


def field_edits(path: Path) -> list[tuple[tuple, str]]:
    """(key path, "remove" or "nan") for every field of the file (of its last line, for
    metrics.jsonl) down to two levels; provenance's fields are free text."""
    doc = json.loads(
        path.read_text().splitlines()[-1] if path.suffix == ".jsonl" else path.read_text()
    )
    keys = [k for k in json_paths(doc) if len(k) <= 2 and k[0] != "provenance"]
    keys = [k for k in keys if not isinstance(k[-1], int)]  # a list's entries: not fields
    return [(k, how) for k in keys for how in ("remove", "nan")]


def edited(text: str, keys: tuple, how: str, jsonl: bool) -> str:
    """`text` (a JSON document, or JSON lines whose last one is edited) with `keys` removed or
    made NaN."""
    lines = text.splitlines()
    doc = json.loads(lines[-1] if jsonl else text)
    parent = doc
    for k in keys[:-1]:
        parent = parent[k]
    if how == "remove":
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = float("nan")
    return "\n".join([*lines[:-1], json.dumps(doc)]) + "\n" if jsonl else json.dumps(doc)


def check_fields_of(folders: dict[str, Path], tmp: Path, name: str, sample: int | None) -> None:
    """Every field removed, and every field made NaN, is refused in one line naming the file
    (a field that may be absent aside), `sample` of them at random or all (None)."""
    kind, rel, (args, _, _), optional_keys = FIELD_FILES[name]
    folder = shutil.copytree(folders[kind], tmp / kind)
    path = folder / rel
    text = path.read_text()
    edits = field_edits(path)
    if sample is not None:
        edits = random.Random(name).sample(edits, min(sample, len(edits)))
    for keys, how in edits:
        path.write_text(edited(text, keys, how, path.suffix == ".jsonl"))
        r = run_cli(*args[:1], folder, *args[1:])
        if how == "remove" and len(keys) == 1 and keys[0] in optional_keys:
            assert r.code == 0, (keys, r.err)
        elif how == "remove" and (keys[0], "*") in optional_keys:
            # the default in its place may be another run's setting: refused further on, or not
            assert r.code in (0, 2) and (r.code == 0 or len(r.err_lines) == 1), (keys, r.err)
            assert "Traceback" not in r.err, r.err
        else:
            assert r.code == 2 and len(r.err_lines) == 1, (keys, how, r.code, r.err)
            assert str(path) in r.err, (keys, how, r.err)
    path.write_text(text)


@pytest.mark.parametrize("name", sorted(FIELD_FILES))
def test_a_missing_or_nan_field_is_refused(folders, tmp_path, name):
    check_fields_of(folders, tmp_path, name, sample=8)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIELD_FILES))
def test_every_missing_or_nan_field_is_refused(folders, tmp_path, name):
    check_fields_of(folders, tmp_path, name, sample=None)


def test_a_config_from_before_an_option_existed_reads_with_its_default(folders, tmp_path):
    """A run folder written by an older tinygrok lacks the settings added since: each takes its
    default (what that tinygrok did), and the run reads and resumes as before."""
    from tinygrok.config import Config
    from tinygrok.folders import read_config

    run = shutil.copytree(folders["run"], tmp_path / "old")
    doc = json.loads((run / "config.json").read_text())
    del doc["config"]["measures_every"], doc["config"]["epoch_batches"]
    (run / "config.json").write_text(json.dumps(doc))
    cfg, _ = read_config(run)
    assert (cfg.measures_every, cfg.epoch_batches) == (Config.measures_every, Config.epoch_batches)
    assert run_cli("analyze", run, "--threads", "1").code == 0
