"""Grids: the definition of a sweep, the product  seeds x grid[k1] x grid[k2] x ...  of an ordinary
run config, parsed from the command line (`--grid KEY=V1,V2,...`, `--seeds 0-9`) and saved as
`DIR/sweep.json`, and the runs it holds (`Job`: a config and its run folder), each
`DIR/runs/k1=v1,k2=v2,seed=s`.
"""

from __future__ import annotations

import itertools
import re
import types
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinygrok import __version__
from tinygrok.config import Config, validate
from tinygrok.errors import ConfigError
from tinygrok.folders import SWEEP, read_sweep, write_json
from tinygrok.tasks import did_you_mean

RUNS_DIR = "runs"
# More seeds than this is a typo, not a sweep (each is a run folder).
MAX_SEEDS = 100_000
# Config fields a grid may not vary, and what to use instead.
NOT_IN_GRID = {
    "tasks": "give the tasks as arguments; one sweep trains one task list",
    "seed": "give seeds with --seeds",
}


def format_value(v: object) -> str:
    """A grid value as folder names and tables show it: 1.0 -> '1', 0.001 -> '0.001', True ->
    'true'. Floats use the shortest repr that reads back to the same number, so distinct values
    always give distinct names."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        text = repr(v)
        return text[:-2] if text.endswith(".0") else text
    return str(v)


def differences(there: Config, here: Config, skip: set[str] = frozenset()) -> list[str]:
    """The fields but `skip` where two configs differ: ['lr 0.001 there, 0.003 here', ...]."""
    a, b = there.to_dict(), here.to_dict()
    return [
        f"{k} {format_value(a[k])} there, {format_value(b[k])} here"
        for k in a
        if k not in skip and a[k] != b[k]
    ]


def _field_kinds() -> dict[str, tuple[type, bool]]:
    """Config field -> (the type of its values, whether it may be None): `float | None` ->
    (float, True)."""
    kinds = {}
    for name, hint in typing.get_type_hints(Config).items():
        if isinstance(hint, types.UnionType):
            kinds[name] = (next(a for a in typing.get_args(hint) if a is not type(None)), True)
        else:
            kinds[name] = (hint, False)
    return kinds


def _parse_value(key: str, text: str, kind: type, optional: bool) -> object:
    if not text:
        raise ConfigError(f"--grid {key}: empty value; write {key}=V1,V2,...")
    if optional and text.lower() == "none":
        return None
    if kind is bool:
        truth = {"1": True, "true": True, "yes": True, "on": True}
        truth |= {"0": False, "false": False, "no": False, "off": False}
        if text.lower() not in truth:
            raise ConfigError(f"--grid {key}: {text!r} is not a yes/no value (true, false, 1, 0)")
        return truth[text.lower()]
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"--grid {key}: {text!r} is not {what}") from None


def parse_grid(items: tuple[str, ...]) -> dict[str, tuple]:
    """`("weight_decay=0.1,1", "sparse=0,0.9")` -> `{"weight_decay": (0.1, 1.0), "sparse": (0.0,
    0.9)}`. Keys are Config field names (the dashed option spelling works too); values are parsed
    by the field's type. ConfigError for anything else."""
    kinds = _field_kinds()
    grid: dict[str, tuple] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise ConfigError(
                f"--grid: expected KEY=V1,V2,... such as weight_decay=0.1,1 (got {item!r})"
            )
        if key in NOT_IN_GRID:
            raise ConfigError(f"--grid {key}: not a grid key; {NOT_IN_GRID[key]}")
        if key not in kinds:
            hint = did_you_mean(key, [k for k in kinds if k not in NOT_IN_GRID])
            raise ConfigError(
                f"--grid: {key!r} is not a run option; {hint + ' ' if hint else ''}(keys are run "
                "options such as weight_decay, lr, train_frac, sparse)"
            )
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        parsed = tuple(_parse_value(key, v.strip(), *kinds[key]) for v in values.split(","))
        repeated = [format_value(v) for v, n in Counter(parsed).items() if n > 1]
        if repeated:
            raise ConfigError(f"--grid {key}: {repeated[0]} is listed twice")
        grid[key] = parsed
    return grid


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-9' -> 0..9; '0,3,7'; '0-4,10-12'. ConfigError for anything else, a repeated seed, or
    more than MAX_SEEDS seeds (checked before the list is built, so a huge range costs nothing)."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ConfigError(
                f"--seeds: expected seeds such as 0-9, 0,3,7 or 0-4,10 (got {text!r})"
            )
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise ConfigError(f"--seeds: the range {lo}-{hi} runs backwards; write {hi}-{lo}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise ConfigError(f"--seeds: at most {MAX_SEEDS:,} seeds, one run each (got {text!r})")
        seeds.extend(range(lo, hi + 1))
    repeated = [s for s, n in Counter(seeds).items() if n > 1]
    if repeated:
        raise ConfigError(f"--seeds: seed {repeated[0]} is listed twice")
    return tuple(seeds)


@dataclass(frozen=True)
class Job:
    """One run of a sweep or an experiment: a validated config and its run folder."""

    name: str  # how messages name it: "weight_decay=0.1,sparse=0.9,seed=3", "sparse0.9/seed3"
    label: str  # its configuration without the seed: grid values ("" if no grid), or the arm
    values: dict  # what it sets by field name: grid values and the seed
    cfg: Config
    out: Path  # run folder

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.cfg.seed


@dataclass(frozen=True)
class Sweep:
    """The definition of a sweep: every run is `base` with one grid combination and one seed."""

    base: Config  # the config of the first combination: every run is this with `values` replaced
    grid: dict[str, tuple]
    seeds: tuple[int, ...]

    def jobs(self, out: Path) -> list[Job]:
        """Every run, configuration by configuration, seeds innermost; each config validated
        (ConfigError naming the combination otherwise)."""
        jobs = []
        for combo in itertools.product(*self.grid.values()):
            grid_values = dict(zip(self.grid, combo, strict=True))
            label = ",".join(f"{k}={format_value(v)}" for k, v in grid_values.items())
            for seed in self.seeds:
                values = grid_values | {"seed": seed}
                name = ",".join(f"{k}={format_value(v)}" for k, v in values.items())
                try:
                    cfg = validate(self.base.replace(**values))
                except ConfigError as e:
                    raise ConfigError(f"{name}: {e}") from None
                jobs.append(Job(name, label, values, cfg, Path(out) / RUNS_DIR / name))
        return jobs

    def to_dict(self) -> dict:
        """sweep.json: enough to list every run and its config again."""
        return {
            "tinygrok_version": __version__,
            "base": self.base.to_dict(),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "seeds": list(self.seeds),
        }

    def describe(self) -> str:
        """The grid and the seeds in one phrase: 'grid weight_decay=0.1,1; seeds 0,1,2'."""
        grid = " ".join(f"{k}={','.join(map(format_value, v))}" for k, v in self.grid.items())
        return f"grid {grid or 'none'}; seeds {','.join(map(str, self.seeds))}"

    def extended(self, other: Sweep) -> Sweep:
        """This sweep with the grid values and seeds of `other` added after its own: the product
        of them all. ConfigError unless `other` varies the same keys (their recipe, the other
        fields, is checked by the caller)."""
        if list(other.grid) != list(self.grid):
            raise ConfigError(
                f"--extend: the sweep there varies {', '.join(self.grid) or 'nothing'}, this one "
                f"{', '.join(other.grid) or 'nothing'}; a sweep keeps its grid keys (choose "
                "another --out)"
            )
        grid = {k: v + tuple(x for x in other.grid[k] if x not in v) for k, v in self.grid.items()}
        seeds = self.seeds + tuple(s for s in other.seeds if s not in self.seeds)
        return Sweep(self.base, grid, seeds)


def make_sweep(
    build: Callable[[dict], Config],
    grid_items: tuple[str, ...],
    seeds: str | None,
    given: set[str] = frozenset(),
) -> Sweep:
    """The sweep the command line asks for. `build(values)` is the validated config of the run
    options the user gave (the fields in `given`) with `values` on top, exactly as `tinygrok run`
    would build it. Every combination is validated here, before anything runs."""
    grid = parse_grid(grid_items)
    for key in grid:
        if key in given:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"--grid {key}: also given as {flag}; set it in one place")
    if seeds is not None and "seed" in given:
        raise ConfigError("--seed: a sweep takes its seeds from --seeds; give only --seeds")
    first = {k: v[0] for k, v in grid.items()}
    try:
        base = build(first)
    except ConfigError as e:
        name = ",".join(f"{k}={format_value(v)}" for k, v in first.items())
        raise ConfigError(f"{name}: {e}" if name else str(e)) from None
    sweep = Sweep(base, grid, parse_seeds(seeds) if seeds is not None else (base.seed,))
    sweep.jobs(Path("."))  # validates every combination
    return sweep


def load_sweep(out: Path) -> Sweep:
    """The definition saved in `out/sweep.json`, every run of it checked (ConfigError naming the
    file if it is damaged, or if there is none)."""
    path = Path(out) / SWEEP
    saved = read_sweep(out)
    if saved is None:
        raise ConfigError(f"DIR: {out} holds no {SWEEP}; is it a sweep folder?")
    sweep = Sweep(*saved)
    if len(sweep.seeds) > MAX_SEEDS:
        raise ConfigError(f"{path}: at most {MAX_SEEDS:,} seeds (got {len(sweep.seeds):,})")
    try:
        sweep.jobs(Path(out))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return sweep


def save_sweep(sweep: Sweep, out: Path) -> None:
    """Write `out/sweep.json`."""
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / SWEEP, sweep.to_dict())
