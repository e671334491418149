"""Subnormal floats as zero in this thread's arithmetic: x86-64's flush-to-zero and
denormals-are-zero modes.

A float below its dtype's smallest normal number (1.2e-38 in float32) is subnormal, and x86 CPUs
compute with it on a slow path: on an Intel Xeon a matrix product with a fifth of one operand's
entries subnormal ran 70 to 110 times as long (benchmarks/subnormals.py). Deep in a fit a
run's gradients are full of them: the rows it fits best send back gradients that shrink layer
by layer into the subnormal range, and the report's float32 baselines ran at half speed there
(docs/PERFORMANCE.md, "Subnormal numbers"). With the MXCSR register's FTZ bit (15) a subnormal
result is 0, with its DAZ bit (6) a subnormal operand reads as 0, in every SSE and AVX
instruction of the thread: NumPy's, the numba kernels', and BLAS's on the calling thread.

BLAS's worker threads (with `--threads 2` and more) keep their own register, and a product is as
slow as its slowest part: at two threads, deep in a fit, a step with the calling thread's register
set alone took 20.7 ms, with the worker's too 17.1 (docs/PERFORMANCE.md). A new thread starts
with its creator's register (pthread_create copies the floating-point environment), so the block
restarts OpenBLAS's workers after setting it, and the same workers again after restoring it
(`blas_thread_shutdown_`, then `blas_thread_init`: OpenBLAS's own functions, exported by the
library NumPy loads). Set the thread count before the block: workers of an OpenBLAS on one
thread when the block starts are not restarted. Other BLAS libraries, and an OpenBLAS built on
OpenMP's pool, keep their threads' registers as they are.

A subnormal can only move a sum smaller than 2^24 times the smallest normal number (2e-31 in
float32), so a parameter's gradient, a sum over the batch, keeps its bits unless every one of
its terms is that small. A run still drifts from the run without the flush, in the end: resumed
both ways from a checkpoint deep in a fit, the two first differed 900 steps later, in the last
digits of the training loss (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

FTZ_DAZ = 0x8040  # MXCSR: flush to zero (bit 15), denormals are zero (bit 6)
X86_64 = platform.machine().lower() in ("x86_64", "amd64")  # where the MXCSR register exists


@intrinsic
def _mxcsr_update(typingctx, keep, add):
    """MXCSR = (MXCSR & keep) | add, in LLVM's x86 intrinsics; returns the register before."""
    sig = types.uint32(types.uint32, types.uint32)

    def codegen(context, builder, signature, args):
        i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p])
        store = builder.module.declare_intrinsic("llvm.x86.sse.stmxcsr", fnty=fnty)
        load = builder.module.declare_intrinsic("llvm.x86.sse.ldmxcsr", fnty=fnty)
        slot = builder.alloca(i32)
        ptr = builder.bitcast(slot, i8p)
        builder.call(store, [ptr])
        before = builder.load(slot)
        builder.store(builder.or_(builder.and_(before, args[0]), args[1]), slot)
        builder.call(load, [ptr])
        return before

    return sig, codegen


@njit(cache=True)
def _update_mxcsr(keep, add):
    return _mxcsr_update(keep, add)


_POOL_FUNCTIONS = ("blas_thread_shutdown_", "blas_thread_init")  # OpenBLAS's, exported


def openblas_pools(min_threads: int = 2) -> list[str]:
    """The paths of the OpenBLAS libraries in this process whose own pthreads pool can be
    restarted (they export `blas_thread_shutdown_` and `blas_thread_init`) and that run on at
    least `min_threads` threads."""
    from threadpoolctl import threadpool_info

    return [
        info["filepath"]
        for info in threadpool_info()
        if info["internal_api"] == "openblas"
        and info.get("threading_layer") == "pthreads"
        and info["num_threads"] >= min_threads
        and all(hasattr(ctypes.CDLL(info["filepath"]), f) for f in _POOL_FUNCTIONS)
    ]


def _restart_blas_workers(libs: list[str]) -> None:
    """Restart the worker threads of the OpenBLAS libraries at the paths `libs`, so that they
    start with this thread's MXCSR. The pool is the whole process's: a process whose BLAS runs
    on one thread (a sweep's or experiment's worker) never restarts it, so no other thread's
    product can be running meanwhile."""
    for path in libs:
        lib = ctypes.CDLL(path)
        lib.blas_thread_shutdown_()
        lib.blas_thread_init()


@contextmanager
def subnormals_as_zero(blas_workers: bool = True) -> Iterator[bool]:
    """Within the block, subnormal floats are zero in this thread (FTZ and DAZ) and, with
    `blas_workers`, in OpenBLAS's worker threads, on an x86-64 CPU; the registers are restored
    after. Yields whether it could (elsewhere the arithmetic stays as it is)."""
    if not X86_64:
        yield False
        return
    before = _update_mxcsr(np.uint32(0xFFFFFFFF), np.uint32(FTZ_DAZ))
    restarted: list[str] = []
    try:
        if blas_workers:
            restarted = openblas_pools()
            _restart_blas_workers(restarted)
        yield True
    finally:
        _update_mxcsr(np.uint32(0), before)
        _restart_blas_workers(restarted)
