"""Where a training step's time goes, per kind of work, for the numba and the numpy engine.

    python benchmarks/profile_step.py [--threads 1] [--steps 20]

Each kernel dispatch function (in either engine) and the layers' matrix products (with their bias
sums) is wrapped in a timer; the steps of the two engines
alternate, and the table gives each kind of work's median milliseconds per step. "everything
else" is the step's time minus the timed calls: the Python between them, reshapes, copies,
concatenations, gathers and allocation, which the two engines share. So the numba engine cannot
beat the numpy engine by more than

    numpy step / (numpy step's matrix products + everything else)

however fast its kernels become; the script prints that bound. It also counts the minor page
faults of the numba engine's steps: the fresh pages the allocator had to map for a step's arrays
(none means that every array came from memory freed by an earlier step, so reusing buffers across
steps by hand could save only the malloc calls themselves).

Last, an estimate of the least each kind of numba kernel work could take: the time to read
its arrays and write its results once each (of a table read through an index, only the rows
the index names), at the fastest speed this machine copies an array already in cache (64 KiB
to 1 MiB, one thread: the kernels run on the calling thread), plus the cost of calling an empty
kernel once per call (both measured here, in this run). It is an estimate, not a strict bound:
a kernel that mostly reads can move bytes faster than a copy, which writes as much as it reads.
Fusing kernels, so that fewer arrays pass between them, would lower it.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from _common import TinygrokSteps, machine_line, median, set_all_threads

from tinygrok import layers, optim
from tinygrok.config import PRESETS, from_preset
from tinygrok.kernels import (
    activation,
    attention,
    crossentropy,
    embedding,
    kernel,
    layernorm,
)

# what the model calls, by the module it looks them up in, grouped as the table shows them
KINDS = {
    "matrix products (+ bias)": (layers, ["matmul", "affine", "affine_backward"]),
    "attention core": (attention, ["attention_forward", "attention_backward"]),
    "layer norm": (layernorm, ["layernorm_forward", "add_layernorm_forward", "layernorm_backward"]),
    "bias + activation": (activation, ["bias_act_forward", "bias_act_backward"]),
    "cross-entropy": (crossentropy, ["cross_entropy_forward", "cross_entropy_backward"]),
    "scatter-adds (gathers' backward)": (embedding, ["embedding_backward", "scatter_add_rows"]),
    "AdamW update": (optim, ["adamw_update"]),
}
SHARED = ("matrix products (+ bias)", "everything else")
KERNELS = [kind for kind in KINDS if kind != "matrix products (+ bias)"]


def arrays(value) -> list[np.ndarray]:
    """The arrays in value (an array, or a tuple or list of values)."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, tuple | list):
        return [a for v in value for a in arrays(v)]
    return []


# the attention kernels read their keys and values (Ns, 2C) through an index (B, T): the
# positions of the two among their arguments
READ_THROUGH = {"attention_forward": (1, 2), "attention_backward": (2, 3)}


def bytes_moved(f: Callable, args: tuple, kwargs: dict):
    """Call f; return its result and the bytes it read and wrote at the least: every argument
    array read once (a table read through an index: the rows it names), every argument it
    changed written once, and every result that is not an argument's memory written once."""
    given = arrays(args) + arrays(list(kwargs.values()))
    before = [a.copy() for a in given]
    out = f(*args, **kwargs)
    changed = [a for a, b in zip(given, before, strict=True) if not np.array_equal(a, b)]
    fresh = [r for r in arrays(out) if not any(np.shares_memory(r, a) for a in given)]
    nbytes = sum(a.nbytes for a in given + changed + fresh)
    if f.__name__ in READ_THROUGH:
        table, index = (args[i] for i in READ_THROUGH[f.__name__])
        nbytes -= table.nbytes - len(np.unique(index)) * table[0].nbytes
    return out, nbytes


def install_timers(spent: dict[str, float], moved: dict[str, list[int]]) -> None:
    """Wrap every function of KINDS so that each call adds its seconds to spent[kind]; while
    `moved` holds a "count" key (during one step that is not timed), each call instead adds
    itself and its `bytes_moved` to moved[kind] = [calls, bytes]."""

    def timed(kind: str, f: Callable) -> Callable:
        def call(*args, **kwargs):
            if "count" in moved:
                out, nbytes = bytes_moved(f, args, kwargs)
                moved[kind][0] += 1
                moved[kind][1] += nbytes
                return out
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[kind] += time.perf_counter() - t

        return call

    for kind, (module, names) in KINDS.items():
        for name in names:
            setattr(module, name, timed(kind, getattr(module, name)))


@kernel
def _empty_loop(x):
    for i in range(x.shape[0]):
        x[i] += 1


def call_seconds(f: Callable) -> float:
    """Median seconds of one call of the empty kernel f: what every numba kernel call pays
    besides its work."""
    x = np.zeros(2)
    f(x)
    times = []
    for _ in range(500):
        t = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - t)
    return median(times)


def copy_bytes_per_second() -> float:
    """Bytes read plus written per second by np.copyto (one thread) of an array already in
    cache, the fastest median of 64 KiB, 256 KiB and 1 MiB arrays."""
    rates = []
    for nbytes in (1 << 16, 1 << 18, 1 << 20):
        src = np.ones(nbytes // 4, dtype=np.float32)
        dst = np.empty_like(src)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            np.copyto(dst, src)
            times.append(time.perf_counter() - t)
        rates.append(2 * nbytes / median(times))
    return max(rates)


def print_floor(ms: dict[str, float], moved: dict[str, list[int]]) -> None:
    """The numba engine's kernel time per kind beside its floor (see the module docstring)."""
    speed = copy_bytes_per_second()
    call = call_seconds(_empty_loop)
    print(
        f"numba kernels beside their floor: arrays read and written once at {speed / 1e9:.1f} GB/s"
    )
    print(f"(copy in cache); an empty kernel's call {1e6 * call:.1f} us")
    print(f"{'':34s} {'numba':>8s} {'floor':>8s} {'MB':>6s} {'calls':>6s}")
    total = [0.0, 0.0, 0, 0]
    for kind in KERNELS:
        calls, nbytes = moved[kind]
        floor = 1000 * (nbytes / speed + calls * call)
        print(f"{kind:34s} {ms[kind]:8.1f} {floor:8.2f} {nbytes / 1e6:6.1f} {calls:6d}")
        total = [total[0] + ms[kind], total[1] + floor, total[2] + nbytes, total[3] + calls]
    print(
        f"{'all kernels':34s} {total[0]:8.1f} {total[1]:8.2f} {total[2] / 1e6:6.1f} {total[3]:6d}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per engine")
    ap.add_argument("--preset", default="power", choices=list(PRESETS), help="the model and recipe")
    args = ap.parse_args()
    counts = set_all_threads(args.threads)

    spent: dict[str, float] = defaultdict(float)
    moved: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    install_timers(spent, moved)
    cfg = from_preset(args.preset)
    engines = {name: TinygrokSteps(cfg.replace(engine=name)) for name in ("numba", "numpy")}
    for run in engines.values():
        run.evaluate_once()
        run(3)
    moved["count"] = [1, 0]
    engines["numba"](1)
    del moved["count"]
    samples: dict[str, dict[str, list[float]]] = {e: defaultdict(list) for e in engines}
    faults = 0
    for _ in range(args.steps):
        for name, run in engines.items():
            spent.clear()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            run(1)
            step = time.perf_counter() - t
            if name == "numba":
                faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
            for kind in KINDS:
                samples[name][kind].append(1000 * spent[kind])
            samples[name]["everything else"].append(1000 * (step - sum(spent.values())))
            samples[name]["step"].append(1000 * step)

    ms = {e: {kind: median(xs) for kind, xs in s.items()} for e, s in samples.items()}
    print(machine_line())
    print(f"preset {args.preset}, batch {cfg.batch_size}, {cfg.optimizer}, threads {counts}")
    print(f"median ms per step over {args.steps} steps (engines alternating)")
    print(f"{'':34s} {'numba':>8s} {'numpy':>8s}")
    for kind in [*KINDS, "everything else", "step"]:
        print(f"{kind:34s} {ms['numba'][kind]:8.1f} {ms['numpy'][kind]:8.1f}")
    shared = sum(ms["numpy"][k] for k in SHARED)
    kernels = ms["numpy"]["step"] - shared
    print(
        f"numpy engine: {kernels:.1f} ms in kernels, {shared:.1f} ms in products and the rest; "
        f"numba engine at most {ms['numpy']['step'] / shared:.2f}x faster "
        f"(measured {ms['numpy']['step'] / ms['numba']['step']:.2f}x)"
    )
    print(f"minor page faults per numba step: {faults / args.steps:.2f}")
    print_floor(ms["numba"], moved)


if __name__ == "__main__":
    main()
