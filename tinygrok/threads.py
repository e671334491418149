"""Thread counts, set once per process before a run starts: BLAS's (the matrix products); the
numba kernels run serially on the calling thread (kernels/__init__.py says why)."""

from __future__ import annotations


def set_threads(n: int | None) -> dict:
    """Limit BLAS to n threads (None: leave its default, one thread per core); return the counts
    in use, {"blas": ..., "numba": 1}, as a run's config.json records them."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if n is not None:
        threadpool_limits(n, user_api="blas")
    infos = [i for i in threadpool_info() if i["user_api"] == "blas"]
    blas = max((i["num_threads"] for i in infos), default=1)
    return {"blas": blas, "numba": 1}
