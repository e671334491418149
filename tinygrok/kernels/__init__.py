"""Kernels: one file per family, each with its NumPy reference first (the spec and the test
oracle), then the numba kernel, then the public function that dispatches on the engine.

Every numba kernel is compiled with `@njit(cache=True)`, so it is compiled once and then loaded
from the on-disk cache (`__pycache__/*.nbi`, `*.nbc` beside this file). The first time a tinygrok
kernel compiles in a process, one line on stderr says so: the first run takes a while.

FASTMATH is the flag set the kernels use (two use none, `EXACT`, below): contract multiply-adds
into FMAs, approximate reciprocals and functions. It keeps the no-NaN and no-inf assumptions
off, so a NaN or inf still shows in the loss, and it leaves out reassociation ("reassoc", with
"nsz"): a kernel compiled with those and `parallel=True` computed other bits when numba loaded
it from its on-disk cache than when it had just compiled it (the GELU backward, the cross-
entropy forward, the layer-norm backward; numba 0.68). The freshly compiled parallel kernel
equals the serial one, the cached one does not; numba links a parallel loop's body into its
caller and optimizes the result again, and reassociation lets such a pass reorder sums (our
reading of the mechanism; the symptom is what the test pins down). Without reassociation the two
agree bit for bit; the price is that sums over a row no longer vectorize, which these short rows
(C = 128, HS = 32) hardly feel. tests/test_kernels.py compares a cold and a warm process bit for
bit. numba's cache does not notice edits to this file: after changing the set or `dot` (below),
which the kernel files compile into themselves, touch the kernel files (or delete the cache) so
that they recompile.

Most kernels are compiled twice (`kernel`): with `parallel=True`, and serially from the same
source; on one numba thread (tinygrok's default) the serial one runs. A parallel kernel hands
its loop to numba's thread pool and waits for it even with one thread: on this project's idle
virtual machine that cost about 0.2 ms a call (the pool's thread wakes on a sleeping core), 28
calls a step, and the serial twins made the report preset's step 1.4 times as fast. The two
compute the same bits (tests/test_kernels.py runs every kernel at one thread and at two, and
compares both, compiled and cached). The layer norm's forward and the AdamW update are compiled
with no flags (`EXACT`): with FASTMATH the two compilations rounded them differently in the last
bit (the square root and reciprocal of "afn" and "arcp", and which product "contract" fused into
an addition), as a parallel kernel's vector loop and its scalar remainder may, wherever the
threads split the rows. Both compilations use NumPy's error model (`error_model="numpy"`): a
float division by zero gives inf or NaN, as in the NumPy references, instead of Python's
ZeroDivisionError. Numba's parallel loops already compile that way; with Python's model a serial
loop that divides carries a test and a possible exception on every element, and LLVM left it
unvectorized (AdamW's update ran four times slower serially than in parallel on one thread, the
GELU pair ten times).

The parallel kernels run on numba's `workqueue` threading layer (unless NUMBA_THREADING_LAYER
says otherwise): its idle threads sleep, where OpenMP's spin and take the cores that BLAS needs
between two kernels. On this project's 2-core machine OpenMP made a 2-thread step four times
slower, and worse under load (docs/PERFORMANCE.md). workqueue does not allow two Python threads
to run tinygrok kernels at the same time; run parallel trainings as processes (as `tinygrok sweep`
does).

Without reassociation a plain `s += a[c] * b[c]` stays one chain of dependent additions, each
waiting for the one before. The kernels' row sums use `dot`, which keeps four independent chains
(element c in lane c % 4, the lanes added at the end, in an order fixed by the source): the layer
norm's forward and the attention kernels ran 1.4 to 2 times as fast. The layer norm's backward
sums two things per row the same way, eight chains in all (`layernorm._dxhat_sums`).
"""

from __future__ import annotations

import functools
import os
import sys
import types
from collections.abc import Callable

import numba
import numpy as np
from numba import njit
from numba.core import event

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

FASTMATH = {"arcp", "contract", "afn"}
# no flags, IEEE arithmetic as written: for kernels whose two compilations (`kernel`) rounded
# differently with FASTMATH
EXACT: set[str] = set()


class _CompileNotice(event.Listener):
    """Print one line the first time a tinygrok kernel is compiled (a cache miss) in a process."""

    def __init__(self) -> None:
        self.shown = False

    def on_start(self, ev: event.Event) -> None:
        module = getattr(ev.data["dispatcher"].py_func, "__module__", "")
        if not self.shown and module.startswith(__name__):
            self.shown = True
            sys.stderr.write(
                "tinygrok: compiling the numba kernels (first run only, about a minute; "
                "they are cached on disk for later runs)\n"
            )
            sys.stderr.flush()

    def on_end(self, ev: event.Event) -> None:
        pass


event.register("numba:compile", _CompileNotice())


def kernel(f: Callable | None = None, *, fastmath: set[str] = FASTMATH) -> Callable:
    """f compiled in parallel and serially (the `parallel` and `serial` attributes), with the
    `fastmath` flags and NumPy's error model; a call runs the serial one when numba has one
    thread. `@kernel` or `@kernel(fastmath=EXACT)`."""
    if f is None:
        return lambda g: kernel(g, fastmath=fastmath)
    options = {"cache": True, "fastmath": fastmath, "error_model": "numpy"}
    parallel = njit(parallel=True, **options)(f)
    # a copy of the function under its own name: numba names its cache files after it
    twin = types.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    twin.__qualname__, twin.__kwdefaults__ = f.__qualname__ + "_serial", f.__kwdefaults__
    serial = njit(**options)(twin)

    @functools.wraps(f)
    def call(*args):
        return (serial if numba.get_num_threads() == 1 else parallel)(*args)

    call.parallel, call.serial = parallel, serial
    return call


def checked_rows(index: np.ndarray, n: int, what: str) -> np.ndarray:
    """index, checked and in [0, n), for kernels that read and write rows through it without
    bounds checks: a row outside [-n, n) fails here, as NumPy's indexing does in the references,
    instead of reaching memory that is not the array's; a negative row counts from the end, as
    in NumPy (the kernels' flat offsets would not)."""
    if index.size == 0:
        return index
    low, high = index.min(), index.max()
    if low < -n or high >= n:
        raise IndexError(f"{what} index out of range for {n} rows")
    return index % n if low < 0 else index


@njit(cache=True, fastmath=FASTMATH, inline="always")
def dot_at(x, i, y, j, n):
    """sum_c x.flat[i + c] y.flat[j + c] over c < n, in four lanes, in x's dtype: a dot product
    of two runs of n numbers inside C-contiguous arrays of any shape, read at flat offsets
    (cheaper than slicing a view of each run in an inner loop)."""
    zero = x.dtype.type(0)
    s0 = s1 = s2 = s3 = zero
    n4 = n - n % 4
    for c in range(0, n4, 4):
        s0 += x.flat[i + c] * y.flat[j + c]
        s1 += x.flat[i + c + 1] * y.flat[j + c + 1]
        s2 += x.flat[i + c + 2] * y.flat[j + c + 2]
        s3 += x.flat[i + c + 3] * y.flat[j + c + 3]
    for c in range(n4, n):
        s0 += x.flat[i + c] * y.flat[j + c]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def dot(a, b):
    """a, b (n,) -> sum_c a[c] b[c] in four lanes (`dot_at` from the start of each)."""
    return dot_at(a, 0, b, 0, len(a))
