"""Backward of the token and position embedding, x[b, t] = wte[tokens[b, t]] + wpe[t]:

    dwte[v] = sum over (b, t) with tokens[b, t] = v of dx[b, t]      (a scatter-add)
    dwpe[t] = sum_b dx[b, t]

and of any gather of rows, y = table[index] (the fast model's):

    dtable[r] = sum over m with index[m] = r of dy[m]                 (the same scatter-add)

Many rows share a token (the operation and `=` tokens are in every example), so the scatter-add
cannot run in parallel over examples. The numba kernel runs in parallel over blocks of
CHANNELS_PER_BLOCK channels instead: every block owns its columns of dwte and dwpe, and adds the
examples in order.

Shapes: B batch, T positions, C channels, V vocabulary.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from tinygrok.kernels import checked_rows, kernel

CHANNELS_PER_BLOCK = 16


def embedding_backward_ref(
    dx: np.ndarray, tokens: np.ndarray, n_vocab: int
) -> tuple[np.ndarray, np.ndarray]:
    """dx (B, T, C), tokens (B, T) ints -> dwte (V, C), dwpe (T, C)."""
    C = dx.shape[-1]
    dwte = np.zeros((n_vocab, C), dtype=dx.dtype)
    np.add.at(dwte, tokens.reshape(-1), dx.reshape(-1, C))
    return dwte, dx.sum(axis=0)


def scatter_add_rows_ref(dy: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """dy (M, K), index (M,) ints in [0, n) -> dtable (n, K), dtable[r] = sum of dy[index == r]."""
    dtable = np.zeros((n, dy.shape[1]), dtype=dy.dtype)
    np.add.at(dtable, index, dy)
    return dtable


@kernel
def _scatter_add_rows_nb(dy, index, columns_per_block, dtable):
    """Fills dtable (n, K); see `scatter_add_rows_ref`. Each block of columns adds the rows in
    order, so every sum has the same order whatever the blocks and threads. Rows are read and
    written at flat offsets: a view per row cost up to a third of the time."""
    M, K = dy.shape
    zero = dy.dtype.type(0)
    for blk in prange(-(-K // columns_per_block)):
        lo, hi = blk * columns_per_block, min(K, (blk + 1) * columns_per_block)
        for r in range(dtable.shape[0]):
            for c in range(lo, hi):
                dtable.flat[r * K + c] = zero
        for m in range(M):
            out, row = index[m] * K, m * K  # dtable[index[m]] and dy[m] start here
            for c in range(lo, hi):
                dtable.flat[out + c] += dy.flat[row + c]


@kernel
def _embedding_backward_nb(dx, tokens, channels_per_block, dwte, dwpe):
    """Fills dwte (V, C) and dwpe (T, C); see `embedding_backward_ref`."""
    B, T, C = dx.shape
    zero = dx.dtype.type(0)
    for blk in prange(-(-C // channels_per_block)):
        lo, hi = blk * channels_per_block, min(C, (blk + 1) * channels_per_block)
        dwte[:, lo:hi] = zero
        dwpe[:, lo:hi] = zero
        for b in range(B):
            for t in range(T):
                row, d = dwte[tokens[b, t]], dx[b, t]
                for c in range(lo, hi):
                    row[c] += d[c]
                    dwpe[t, c] += d[c]


def embedding_backward(
    dx: np.ndarray, tokens: np.ndarray, n_vocab: int, engine: str
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the engine; see `embedding_backward_ref`."""
    if engine != "numba":
        return embedding_backward_ref(dx, tokens, n_vocab)
    tokens = checked_rows(tokens, n_vocab, "token")
    B, T, C = dx.shape
    dwte, dwpe = np.empty((n_vocab, C), dtype=dx.dtype), np.empty((T, C), dtype=dx.dtype)
    _embedding_backward_nb(np.ascontiguousarray(dx), tokens, CHANNELS_PER_BLOCK, dwte, dwpe)
    return dwte, dwpe


def scatter_add_rows(dy: np.ndarray, index: np.ndarray, n: int, engine: str) -> np.ndarray:
    """Dispatch on the engine; see `scatter_add_rows_ref`."""
    if engine != "numba":
        return scatter_add_rows_ref(dy, index, n)
    index = checked_rows(index, n, "scatter")
    K = dy.shape[1]
    # one block of columns per thread (a multiple of 16, so each row's add stays vectorized)
    columns = -(-K // numba.get_num_threads() // 16) * 16
    dtable = np.empty((n, K), dtype=dy.dtype)
    _scatter_add_rows_nb(np.ascontiguousarray(dy), index, max(16, columns), dtable)
    return dtable
