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
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict
from collections.abc import Callable

from _common import TinygrokSteps, machine_line, median, set_all_threads

from tinygrok import layers, optim
from tinygrok.config import PRESETS, from_preset
from tinygrok.kernels import activation, attention, crossentropy, embedding, layernorm

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


def install_timers(spent: dict[str, float]) -> None:
    """Wrap every function of KINDS so that each call adds its seconds to spent[kind]."""

    def timed(kind: str, f: Callable) -> Callable:
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[kind] += time.perf_counter() - t

        return call

    for kind, (module, names) in KINDS.items():
        for name in names:
            setattr(module, name, timed(kind, getattr(module, name)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS and numba threads")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per engine")
    ap.add_argument("--preset", default="power", choices=list(PRESETS), help="the model and recipe")
    args = ap.parse_args()
    counts = set_all_threads(args.threads)

    spent: dict[str, float] = defaultdict(float)
    install_timers(spent)
    cfg = from_preset(args.preset)
    engines = {name: TinygrokSteps(cfg.replace(engine=name)) for name in ("numba", "numpy")}
    for run in engines.values():
        run.evaluate_once()
        run(3)
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


if __name__ == "__main__":
    main()
