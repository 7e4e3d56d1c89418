"""Exact top-k for dot-product models that skips the items whose norm says they cannot make a user's list.

A factor model scores ``u . v_j + b_j``, and Cauchy-Schwarz bounds that by
``|u| |v_j| + b_j``. With items sorted by norm, descending, the items from
position ``p`` on score at most ``|u| * norm[p] + max(b[p:])`` for user
``u``; once a user's k-th best score so far beats that bound, nothing further
down the order can enter the list, so the user stops there. Implicit ALS
factors have norms that grow with popularity (the 2M generated set: the
median item's norm is 0.1, the 99th percentile's 0.9) and users' lists come
from the popular head: there top-10 scores 24% of the (user, item) pairs and
takes 0.42x the CPU of scoring them all (``benchmarks/bench_scoring.py
--model``). Models whose item norms are all alike (WARP's) score every
chunk and cost what they did before, within the noise.

The result is the same as scoring every item (:func:`~recspark.models.selection.top_k`):
the same total order (score descending, item index ascending) and a strict
bound, so an item that could tie with the k-th is still read; the bound is
widened by a relative 1e-5 against float32 rounding in the products.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recspark.models.jit import jit
from recspark.models.selection import drain_heap, offer_item, sorted_contains, worse

__all__ = ["NormIndex"]

#: Items scored per matrix product: a block of users x this many float32 scores stays in L2.
CHUNK_ITEMS = 2048

#: Relative slack of the bound against float32 rounding in the products (64 terms: ~1e-6).
_SLACK = 1e-5

#: Items per run whose maximum decides whether the run is read one by one (as in top_k).
_RUN = 16


@jit
def _offer_chunk(scores, rows, start, order, excluded, excluded_ptr, heap_s, heap_i):
    """Offer ``scores[p, c]`` (item ``order[start + c]``) to the running top-k of block row ``rows[p]``.

    ``excluded[excluded_ptr[r]:excluded_ptr[r + 1]]`` holds row ``r``'s excluded
    positions in the norm order, sorted; they are looked up only for scores
    that would enter the list. Each run of ``_RUN`` scores is skipped at once
    when its maximum is below the list's worst entry.
    """
    n_rows, width = scores.shape
    k = heap_s.shape[1]
    for p in range(n_rows):
        r = rows[p]
        row = scores[p]
        hs = heap_s[r]
        hi = heap_i[r]
        lo_ex = excluded_ptr[r]
        hi_ex = excluded_ptr[r + 1]
        for a in range(0, width, _RUN):
            b = min(a + _RUN, width)
            m = row[a]
            for j in range(a + 1, b):
                m = max(m, row[j])
            if m < hs[0]:
                continue
            for j in range(a, b):
                item = order[start + j]
                if worse(row[j], item, hs[0], hi[0]):
                    continue
                if sorted_contains(excluded, lo_ex, hi_ex, start + j):
                    continue
                offer_item(hs, hi, k, row[j], item)


@jit
def _drain_all(heap_s, heap_i, out_items, out_scores):
    for r in range(heap_s.shape[0]):
        drain_heap(heap_s[r], heap_i[r], heap_s.shape[1], out_items[r], out_scores[r])


class NormIndex:
    """A factor model's items in norm order, for exact bounded top-k (built once per task from the broadcast).

    Parameters
    ----------
    item_vectors : ndarray of float32, shape [n_items, n_factors]
    item_bias : ndarray of float32, shape [n_items], optional
    """

    def __init__(self, item_vectors: npt.NDArray[np.float32], item_bias: npt.NDArray[np.float32] | None) -> None:
        self.n_items = int(item_vectors.shape[0])
        norms = np.linalg.norm(item_vectors.astype(np.float64), axis=1)
        self.order = np.argsort(-norms, kind="stable")
        self.position = np.empty(self.n_items, dtype=np.int64)
        self.position[self.order] = np.arange(self.n_items)
        self.vectors = np.ascontiguousarray(item_vectors[self.order])
        bias = np.zeros(self.n_items, dtype=np.float32) if item_bias is None else item_bias
        self.bias = None if item_bias is None else np.ascontiguousarray(bias[self.order])
        self.norms = norms[self.order]
        # Largest bias from each position on (the bound's second term).
        self.bias_tail = np.maximum.accumulate(bias[self.order].astype(np.float64)[::-1])[::-1].copy()
        #: (user, item) pairs scored by :meth:`top_k` so far, against ``n_items`` per user without the bound.
        self.scored_pairs = 0

    def _excluded_positions(
        self, n_rows: int, items: npt.NDArray[np.int64], indptr: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Each row's excluded items as sorted unique positions in the norm order, CSR by row."""
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
        keys = np.unique(rows * self.n_items + self.position[items])
        ptr = np.searchsorted(keys, np.arange(n_rows + 1, dtype=np.int64) * self.n_items)
        return keys - np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(ptr)) * self.n_items, ptr

    def top_k(
        self,
        user_vectors: npt.NDArray[np.float32],
        k: int,
        excluded_items: npt.NDArray[np.int64],
        excluded_ptr: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Each user's ``k`` best items outside ``excluded_items`` (CSR by row), best first.

        Same output as :func:`~recspark.models.selection.top_k` on the full
        score matrix with the excluded items set to ``-inf``: ``items [n, k]``
        (``n_items`` and score ``-inf`` where a user has fewer than ``k``
        eligible items) and their float32 scores. Item indices must lie in
        ``0 .. n_items - 1``.
        """
        users = np.ascontiguousarray(user_vectors, dtype=np.float32)
        n_rows = users.shape[0]
        k = min(int(k), self.n_items)
        heap_s = np.full((n_rows, k), -np.inf, dtype=np.float32)
        heap_i = np.full((n_rows, k), self.n_items, dtype=np.int64)  # placeholders rank after every item
        excluded, ptr = self._excluded_positions(n_rows, np.asarray(excluded_items, dtype=np.int64),
                                                 np.asarray(excluded_ptr, dtype=np.int64))
        user_norms = np.linalg.norm(users.astype(np.float64), axis=1)
        active = np.arange(n_rows, dtype=np.int64)
        for start in range(0, self.n_items, CHUNK_ITEMS):
            stop = min(start + CHUNK_ITEMS, self.n_items)
            scores = users[active] @ self.vectors[start:stop].T
            self.scored_pairs += scores.size
            if self.bias is not None:
                scores += self.bias[start:stop]
            _offer_chunk(scores, active, start, self.order, excluded, ptr, heap_s, heap_i)
            if stop == self.n_items:
                break
            reach = user_norms[active] * self.norms[stop]
            bound = reach + self.bias_tail[stop] + _SLACK * (reach + abs(self.bias_tail[stop]))
            active = active[heap_s[active, 0] <= bound]  # the root is the list's worst entry
            if active.size == 0:
                break
        items = np.empty((n_rows, k), dtype=np.int64)
        values = np.empty((n_rows, k), dtype=np.float32)
        _drain_all(heap_s, heap_i, items, values)
        return items, values
