"""Backward of the token and position embedding, x[b, t] = wte[tokens[b, t]] + wpe[t]:

    dwte[v] = sum over (b, t) with tokens[b, t] = v of dx[b, t]      (a scatter-add)
    dwpe[t] = sum_b dx[b, t]

and of any gather of rows, y = table[index] (the fast model's):

    dtable[r] = sum over m with index[m] = r of dy[m]                 (the same scatter-add)

Many rows share a token (the operation and `=` tokens are in every example); the numba kernels
add the rows in order, each row's channels in one vectorized loop.

Shapes: B batch, T positions, C channels, V vocabulary.
"""

from __future__ import annotations

import numpy as np

from tinygrok.kernels import checked_rows, kernel


def embedding_backward_ref(
    dx: np.ndarray, tokens: np.ndarray, n_vocab: int
) -> tuple[np.ndarray, np.ndarray]:
    """dx (B, T, C), tokens (B, T) ints -> dwte (V, C), dwpe (T, C)."""
    C = dx.shape[-1]
    dwte = np.zeros((n_vocab, C), dtype=dx.dtype)
    np.add.at(dwte, tokens.reshape(-1), dx.reshape(-1, C))
    return dwte, dx.sum(axis=0)


def scatter_add_rows_ref(
    dy: np.ndarray, index: np.ndarray, n: int, out: np.ndarray | None = None
) -> np.ndarray:
    """dy (M, K), index (M,) ints in [0, n) -> dtable (n, K), dtable[r] = sum of dy[index == r];
    given `out` (n, K), the sums are added into it and it is returned."""
    dtable = np.zeros((n, dy.shape[1]), dtype=dy.dtype) if out is None else out
    np.add.at(dtable, index, dy)
    return dtable


@kernel
def _scatter_add_rows_nb(dy, index, dtable):
    """Adds into dtable (n, K); see `scatter_add_rows_ref`. Rows are read and written at flat
    offsets: a view per row cost up to a third of the time."""
    M, K = dy.shape
    for m in range(M):
        out, row = index[m] * K, m * K  # dtable[index[m]] and dy[m] start here
        for c in range(K):
            dtable.flat[out + c] += dy.flat[row + c]


@kernel
def _embedding_backward_nb(dx, tokens, dwte, dwpe):
    """Fills dwte (V, C) and dwpe (T, C); see `embedding_backward_ref`."""
    B, T, C = dx.shape
    dwte[:] = dx.dtype.type(0)
    dwpe[:] = dx.dtype.type(0)
    for b in range(B):
        for t in range(T):
            row, d, pos = dwte[tokens[b, t]], dx[b, t], dwpe[t]
            for c in range(C):
                row[c] += d[c]
                pos[c] += d[c]


def embedding_backward(
    dx: np.ndarray, tokens: np.ndarray, n_vocab: int, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `embedding_backward_ref`."""
    if engine != "numba":
        return embedding_backward_ref(dx, tokens, n_vocab)
    tokens = checked_rows(tokens, n_vocab, "token")
    B, T, C = dx.shape
    dwte, dwpe = np.empty((n_vocab, C), dtype=dx.dtype), np.empty((T, C), dtype=dx.dtype)
    _embedding_backward_nb(np.ascontiguousarray(dx), tokens, dwte, dwpe)
    return dwte, dwpe


def scatter_add_rows(
    dy: np.ndarray, index: np.ndarray, n: int, engine: str, out: np.ndarray | None = None
) -> np.ndarray:
    """Dispatch on the engine; see `scatter_add_rows_ref`."""
    if out is not None and (
        out.shape != (n, dy.shape[1]) or out.dtype != dy.dtype or not out.flags.c_contiguous
    ):  # the kernel adds into out's own memory
        raise ValueError(f"scatter: out {out.shape} {out.dtype} for {n} rows of {dy.shape}")
    if engine != "numba":
        return scatter_add_rows_ref(dy, index, n, out)
    index = checked_rows(index, n, "scatter")
    if out is None:
        # not np.zeros: its calloc took fresh pages from the system on every call (757 minor
        # page faults per step of the report preset, against 0.8 so; profile_step.py counts them)
        out = np.empty((n, dy.shape[1]), dtype=dy.dtype)
        out.fill(0)
    _scatter_add_rows_nb(np.ascontiguousarray(dy), index, out)
    return out
