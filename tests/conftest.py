"""Shared fixtures: a small configuration that trains in well under a second, and one thread.

The tests run tiny matrices, for which BLAS threads only add overhead, so tests that run many
small steps ask for `single_thread` (the numba kernels run on the calling thread anyway).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy  # noqa: F401  (loads BLAS, so that threadpool_limits finds it)
import pytest
from threadpoolctl import threadpool_limits

from tinygrok.config import Config, validate


@contextmanager
def one_thread():
    """One BLAS thread inside the block; the count before is restored."""
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture
def single_thread():
    """One BLAS thread for a test."""
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
