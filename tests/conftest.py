"""Shared fixtures: small configurations that run in milliseconds, and one BLAS thread.

The tests run tiny matrices, for which a multi-threaded BLAS only adds overhead (and, on a busy
machine, threads that wait for each other), so every test process uses one BLAS thread.
"""

from __future__ import annotations

import numpy  # noqa: F401  (loads BLAS, so that the limit below finds it)
import pytest
from threadpoolctl import threadpool_limits

from tinygrok.config import Config, validate


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """Limit BLAS to one thread for the whole session."""
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture
def tiny_cfg() -> Config:
    """Addition mod 7 on a one-layer model of width 8: a whole run takes well under a second."""
    return validate(
        Config(
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
    )
