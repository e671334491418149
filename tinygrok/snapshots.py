"""Parameter snapshots of a run, for `tinygrok analyze`.

With `--snapshot-every N` the run folder gets `snapshots/step_0000123.npz` at step 0, at every
evaluation whose step is a multiple of N, and at the last step: each file holds the step and the
flat parameter vector (N_params,) in the order of `params.param_shapes(cfg)`; no pickled objects.
One file per snapshot, written atomically, so an interrupted or resumed run never leaves a torn
one. Size: 4 bytes per parameter each (0.9 MB for Nanda et al.'s model), so choose N with the
step budget in mind.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from tinygrok.errors import ConfigError
from tinygrok.folders import atomic_write

SNAPSHOT_DIR = "snapshots"


def snapshot_path(run_dir: Path, step: int) -> Path:
    """RUN_DIR/snapshots/step_<step, 7 digits>.npz"""
    return Path(run_dir) / SNAPSHOT_DIR / f"step_{step:07d}.npz"


def save_snapshot(run_dir: Path, step: int, flat: np.ndarray) -> Path:
    """Write the flat parameters (N,) of `step`; returns the file."""
    path = snapshot_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, step=np.array(step), params=flat))
    return path


def list_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, file) of every snapshot of a run, by step."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    found = []
    for path in folder.glob("step_*.npz"):
        stem = path.name[len("step_") : -len(".npz")]
        if stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


def load_snapshot(path: Path, size: int) -> tuple[int, np.ndarray]:
    """The step and the flat parameters (size,) of one snapshot file, checked: exactly the arrays
    step (an integer, the one its name gives) and params (float32 or float64, finite, of
    `size`); a ConfigError naming the file otherwise (a damaged, pickled or foreign file)."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a .npy array, not a .npz file")
        with z:
            files = sorted(z.files)
            if files == ["params", "step"]:
                step, params = z["step"], z["params"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise ConfigError(f"{path}: unreadable snapshot ({e})") from None
    if files != ["params", "step"]:
        raise ConfigError(f"{path}: a snapshot holds step and params only (got {', '.join(files)})")
    if step.shape != () or step.dtype.kind not in "iu" or int(step) != int(path.stem[5:]):
        raise ConfigError(f"{path}: step must be the integer {int(path.stem[5:])} its name gives")
    if params.shape != (size,) or params.dtype not in (np.float32, np.float64):
        raise ConfigError(
            f"{path}: params must be float32 or float64 of shape ({size},) (got {params.dtype} "
            f"{params.shape})"
        )
    if not np.isfinite(params).all():
        raise ConfigError(f"{path}: params hold NaN or infinite values")
    return int(step), params


def clear_snapshots(run_dir: Path) -> None:
    """Remove the snapshots of an earlier run in the same folder (a fresh start, --force)."""
    for _, path in list_snapshots(run_dir):
        path.unlink()


def prune_snapshots(run_dir: Path, step: int, every: int) -> None:
    """Keep the snapshots a run resumed from `step` would have at that step: those on the
    schedule of `every` (--snapshot-every) up to `step`. The snapshot of an interruption, of the
    end of a budget since raised, or of steps after the checkpoint (a run killed between two
    checkpoints) goes."""
    for s, path in list_snapshots(run_dir):
        if s > step or (every and s % every):
            path.unlink()
