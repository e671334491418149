"""Shared fixtures: a small configuration that trains in well under a second, and one thread.

The tests run tiny matrices, for which BLAS and numba threads only add overhead (on a busy
2-core machine a forward pass of the gradient-check model took 16 ms on two numba threads and
1.2 ms on one), so tests that run many small steps ask for `single_thread`. Races in the numba
kernels are the kernel tests' business, not these.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy  # noqa: F401  (loads BLAS, so that threadpool_limits finds it)
import pytest
from threadpoolctl import threadpool_limits

from tinygrok.config import Config, validate


@contextmanager
def one_thread():
    """One BLAS and one numba thread inside the block; the counts before are restored."""
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(before)


@pytest.fixture
def single_thread():
    """One BLAS and one numba thread for a test."""
    with one_thread():
        yield


# Addition mod 7 on a one-layer model of width 8: a whole run takes well under a second.
TINY_FIELDS = dict(
    tasks=("addition",),
    p=7,
    train_frac=0.5,
    batch_size=16,
    layers=1,
    d_model=8,
    heads=2,
    d_mlp=16,
    steps=40,
    eval_every=10,
    patience=0,
)


@pytest.fixture
def tiny_cfg() -> Config:
    """The config of TINY_FIELDS, validated."""
    return validate(Config(**TINY_FIELDS))
