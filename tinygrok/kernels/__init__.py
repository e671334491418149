"""Kernels: one file per family, each with its NumPy reference first (the spec and the test
oracle), then the numba kernel, then the public function that dispatches on the engine.

Every numba kernel is compiled with `@njit(cache=True)`, so it is compiled once and then loaded
from the on-disk cache (`__pycache__/*.nbi`, `*.nbc` beside this file). The first time a tinygrok
kernel compiles in a process, one line on stderr says so: the first run takes a while.

FASTMATH is the flag set every kernel uses: contract multiply-adds into FMAs, approximate
reciprocals and functions, and reassociate sums ("reassoc", with "nsz"), so that a sum over a
row's channels vectorizes instead of running as one chain of dependent additions (the layer
norm's forward and backward ran about twice as fast with it as with four chains written by hand;
`benchmarks/kernels.py`, docs/PERFORMANCE.md). It keeps the no-NaN and
no-inf assumptions off, so a NaN or inf still shows in the loss. The cross-entropy kernels
leave reassociation out (`ORDERED`): whether a float32 row's sum of exponentials rounds to
exactly 1 decides its gradient there, and their sums run in column order, as they did when
checked against PyTorch (`benchmarks/softmax_collapse.py`). numba's cache does not notice
edits to this file: after changing the set or `dot_at` (below), which the kernel files compile
into themselves, touch the kernel files (or delete the cache) so that they recompile.

The kernels are compiled serially, and run on the calling thread; `--threads` gives BLAS its
threads. They were compiled in parallel too, for numba's thread pool, until measurement showed
the pool never paid on a model this small: a parallel kernel hands its loop to the pool and
waits for it, about 0.2 ms a call on this project's idle 2-core virtual machine, where the
serial kernel takes 0.02 to 1.6 ms for its whole work. Serial, with reassociation (above), the
2-thread training step became 1.11 times (default preset) and 1.24 times (report preset) as
fast as with both compilations (docs/PERFORMANCE.md, `benchmarks/compare_commits.py`). The
parallel compilations also kept reassociation out: loaded from numba's on-disk cache they
rounded differently from the freshly compiled ones (numba 0.68), which the serial kernels do not
(tests/test_kernels.py compares a cold and a warm process bit for bit). numba's OpenMP pool is
cheaper to call (about 1 us), but right after a BLAS product on two threads its threads and
OpenBLAS's contend for the cores, and the pair ran 11 times slower than with the serial kernel
(`benchmarks/numba_pool.py`, docs/PERFORMANCE.md). A machine with many cores is better used by
one run per core (`tinygrok sweep`) than by one run's kernels.

The kernels use NumPy's error model (`error_model="numpy"`): a float division by zero gives inf
or NaN, as in the NumPy references, instead of Python's ZeroDivisionError; with Python's model a
loop that divides carries a test and a possible exception on every element, and LLVM leaves it
unvectorized (AdamW's update ran four times slower, the GELU pair ten times).

The attention kernels read a head's 32 numbers at flat offsets (`dot_at`): there a view per row
costs more than the arithmetic. Before reassociation, `dot_at` kept four independent chains of
additions by hand; it is now the plain sum, which reassociation vectorizes (the attention
kernels' times moved within the machine's noise).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
from numba import njit
from numba.core import event

FASTMATH = {"arcp", "contract", "afn", "reassoc", "nsz"}
# FASTMATH without reassociation: sums in the order written (the cross-entropy's, whose float32
# rounding is the point: kernels/crossentropy.py)
ORDERED = FASTMATH - {"reassoc", "nsz"}


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
    """f compiled by numba (on first use, then loaded from the on-disk cache) with the `fastmath`
    flags and NumPy's error model: `@kernel`, or `@kernel(fastmath=ORDERED)`."""
    if f is None:
        return lambda g: kernel(g, fastmath=fastmath)
    return njit(cache=True, fastmath=fastmath, error_model="numpy")(f)


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
    """sum_c x.flat[i + c] y.flat[j + c] over c < n, in x's dtype: a dot product of two runs of n
    numbers inside C-contiguous arrays of any shape, read at flat offsets (cheaper than slicing
    a view of each run in an inner loop); FASTMATH's reassociation vectorizes the sum."""
    s = x.dtype.type(0)
    for c in range(n):
        s += x.flat[i + c] * y.flat[j + c]
    return s
