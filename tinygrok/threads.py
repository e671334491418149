"""Thread counts of BLAS and the numba kernels, set once per process before a run starts."""

from __future__ import annotations


def set_threads(n: int | None) -> dict:
    """Limit BLAS and the numba kernels to n threads each (None: leave the libraries' defaults,
    one thread per core); return the counts in use, {"blas": ..., "numba": ...}.

    numba's pool is sized when numba starts (NUMBA_NUM_THREADS, default one per core), so numba
    gets min(n, pool size); the returned count says which.
    """
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits

    if n is not None:
        threadpool_limits(n, user_api="blas")
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    infos = [i for i in threadpool_info() if i["user_api"] == "blas"]
    blas = max((i["num_threads"] for i in infos), default=1)
    return {"blas": blas, "numba": numba.get_num_threads()}
