"""Exact top-k for dot-product models that scores only the items a bound says could make a user's list.

A factor model scores ``u . v_j + b_j``. Two Cauchy-Schwarz bounds rule
items out without scoring them:

* **Norm order.** Items are sorted by norm, descending, and read in chunks;
  everything from position ``p`` on scores at most ``|u| * norm[p] +
  max(b[p:])``, so a user whose k-th best so far beats that stops there.
  Implicit ALS factors have norms that grow with popularity and users' lists
  come from the popular head: on the 20M run's ALS model top-10 reaches 2%
  of the (user, item) pairs.
* **Projections.** Within a chunk, ``u . v = u_p . v_p + u_r . v_r`` where
  ``_p`` is the projection on the item matrix's leading right singular
  vectors (a quarter of the factors) and ``_r`` the rest, so ``u_p . v_p +
  |u_r| |v_r|`` bounds the score at a quarter of the product's cost; only
  items whose bound reaches the list's worst entry are scored exactly.
  WARP's item norms are all alike, but its factors are close to low-rank:
  on the 20M run's WARP model 3% of the pairs are scored exactly.

The first chunk is scored by one matrix product (no list yet to compare
with), and so is any row of a chunk where the bounds leave more than an
eighth to score; once half of a block's rows need that, the rest of the
block is scored by products alone (random factors: no worse than scoring
every item). ``benchmarks/bench_scoring.py --model`` measures it.

The result is the same as scoring every item
(:func:`~recspark.models.selection.top_k`): the same total order (score
descending, item index ascending) and bounds compared strictly, so an item
that could tie with the k-th is scored; every bound is widened by 1e-5
relative against float32 rounding. Scores of items taken by a dot product
rather than the matrix product may differ from it in the last bits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recspark.models.jit import jit
from recspark.models.selection import drain_heap, offer_item, sorted_contains, worse

__all__ = ["BoundIndex"]

#: Items per chunk of the norm order: one small matrix product of the projections per block of users.
CHUNK_ITEMS = 2048

#: Relative slack of every bound against float32 rounding, in units of |u| |v| (and |bias|).
_SLACK = 1e-5

#: Items per run whose largest score decides whether the run is read one by one (as in top_k).
_RUN = 16

#: A row whose bounds leave more than 1/_DENSE of a chunk to score exactly gets a matrix product instead.
_DENSE = 8


@jit
def _offer_scores(scores, rows, start, order, excluded, excluded_ptr, heap_s, heap_i):
    """Offer ``scores[p, c]`` (item ``order[start + c]``, scored exactly) to block row ``rows[p]``'s running top-k.

    ``excluded[excluded_ptr[r]:excluded_ptr[r + 1]]`` holds row ``r``'s
    excluded positions in the norm order, sorted; they are looked up only for
    scores that would enter the list. A run of ``_RUN`` scores below the
    list's worst entry is skipped at once.
    """
    n_rows, width = scores.shape
    k = heap_s.shape[1]
    for p in range(n_rows):
        r = rows[p]
        row = scores[p]
        hs = heap_s[r]
        hi = heap_i[r]
        for a in range(0, width, _RUN):
            b = min(a + _RUN, width)
            m = row[a]
            for c in range(a + 1, b):
                m = max(m, row[c])
            if m < hs[0]:
                continue
            for c in range(a, b):
                item = order[start + c]
                if worse(row[c], item, hs[0], hi[0]):
                    continue
                if sorted_contains(excluded, excluded_ptr[r], excluded_ptr[r + 1], start + c):
                    continue
                offer_item(hs, hi, k, row[c], item)


@jit
def _offer_bounded(bounds, rows, start, order, users, user_norms, user_resid, vectors, item_resid, item_slack,
                   bound_bias, bias, excluded, excluded_ptr, heap_s, heap_i, dense):
    """Offer the items ``order[start + c]`` whose bound reaches block row ``rows[p]``'s running top-k.

    ``bounds[p, c]`` holds the projected product ``u_p . v_p``; adding
    ``|u_r| |v_r|`` (Cauchy-Schwarz on the residuals), the bias and the
    rounding slack bounds the score from above. Only items whose bound
    reaches the list's worst entry are scored exactly (a dot product over all
    factors) and, unless excluded, offered; a row where more than
    ``1 / _DENSE`` of the chunk reaches it is left to a matrix product
    instead (its position in ``rows`` goes to ``dense``). ``item_resid``,
    ``item_slack`` and ``bound_bias`` are this chunk's slices. Returns the
    exact scores taken and the number of dense rows.
    """
    n_rows, width = bounds.shape
    k = heap_s.shape[1]
    n_factors = vectors.shape[1]
    n_exact = 0
    n_dense = 0
    for p in range(n_rows):
        r = rows[p]
        row = bounds[p]
        u = users[r]
        resid = user_resid[r]
        norm = user_norms[r]
        hs = heap_s[r]
        hi = heap_i[r]
        root = hs[0]
        n_reach = np.float32(0.0)
        for c in range(width):  # vectorised: every bound, and how many reach the list's worst entry
            value = row[c] + resid * item_resid[c] + norm * item_slack[c] + bound_bias[c]
            row[c] = value
            n_reach += np.float32(1.0) if value >= root else np.float32(0.0)
        if n_reach == 0:
            continue
        if n_reach * _DENSE > width:
            dense[n_dense] = p
            n_dense += 1
            continue
        for c in range(width):
            if row[c] < hs[0]:
                continue
            q = start + c
            if sorted_contains(excluded, excluded_ptr[r], excluded_ptr[r + 1], q):
                continue
            v = vectors[q]
            score = np.float32(0.0)
            for f in range(n_factors):
                score += u[f] * v[f]
            score += bias[q]
            n_exact += 1
            item = order[q]
            if not worse(score, item, hs[0], hi[0]):
                offer_item(hs, hi, k, score, item)
    return n_exact, n_dense


@jit
def _drain_all(heap_s, heap_i, out_items, out_scores):
    for r in range(heap_s.shape[0]):
        drain_heap(heap_s[r], heap_i[r], heap_s.shape[1], out_items[r], out_scores[r])


class BoundIndex:
    """A factor model's items prepared for exact bounded top-k: norm order, projections, residual norms.

    Parameters
    ----------
    item_vectors : ndarray of float32, shape [n_items, n_factors]
    item_bias : ndarray of float32, shape [n_items], optional
    """

    def __init__(self, item_vectors: npt.NDArray[np.float32], item_bias: npt.NDArray[np.float32] | None) -> None:
        self.n_items, n_factors = (int(n) for n in item_vectors.shape)
        wide = item_vectors.astype(np.float64)
        norms = np.linalg.norm(wide, axis=1)
        self.order = np.argsort(-norms, kind="stable")
        self.position = np.empty(self.n_items, dtype=np.int64)
        self.position[self.order] = np.arange(self.n_items)
        wide = wide[self.order]
        self.vectors = np.ascontiguousarray(wide, dtype=np.float32)
        self.norms = norms[self.order]
        # The items' leading right singular vectors: most of a score is the product of the
        # projections on them, and Cauchy-Schwarz bounds the rest by the residuals' norms.
        n_proj = min(n_factors, max(1, n_factors // 4))
        basis = np.linalg.svd(wide, full_matrices=False)[2][:n_proj].T if n_factors else np.zeros((0, 0))
        self.basis = basis.astype(np.float32)
        projected = wide @ basis
        self.projected = np.ascontiguousarray(projected, dtype=np.float32)
        self.resid = np.linalg.norm(wide - projected @ basis.T, axis=1).astype(np.float32)
        self.slack = (_SLACK * self.norms).astype(np.float32)
        bias = np.zeros(self.n_items, dtype=np.float64) if item_bias is None else item_bias[self.order].astype(np.float64)
        self.bias = bias.astype(np.float32)
        self.bound_bias = (bias + _SLACK * np.abs(bias)).astype(np.float32)
        # Largest bias from each position on (the chunk bound's second term).
        self.bias_tail = np.maximum.accumulate(bias[::-1])[::-1].copy()
        #: (user, item) pairs bounded (``bounded_pairs``) and scored exactly (``exact_pairs``) by :meth:`top_k`
        #: so far, against ``n_items`` of each per user when every item is scored.
        self.bounded_pairs = 0
        self.exact_pairs = 0

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
        wide = users.astype(np.float64)
        user_norms = np.linalg.norm(wide, axis=1)
        projected = np.ascontiguousarray(wide @ self.basis, dtype=np.float32)
        user_resid = np.linalg.norm(wide - projected.astype(np.float64) @ self.basis.T, axis=1).astype(np.float32)
        norms32 = user_norms.astype(np.float32)
        active = np.arange(n_rows, dtype=np.int64)
        bounded = False  # the first chunk has no list to compare bounds with: it is scored exactly
        for start in range(0, self.n_items, CHUNK_ITEMS):
            stop = min(start + CHUNK_ITEMS, self.n_items)
            dense = active
            if bounded:
                bounds = projected[active] @ self.projected[start:stop].T
                picked = np.empty(active.size, dtype=np.int64)
                n_exact, n_dense = _offer_bounded(
                    bounds, active, start, self.order, users, norms32, user_resid, self.vectors,
                    self.resid[start:stop], self.slack[start:stop], self.bound_bias[start:stop], self.bias,
                    excluded, ptr, heap_s, heap_i, picked)
                self.exact_pairs += n_exact
                dense = active[picked[:n_dense]]
                bounded = 2 * n_dense <= active.size  # bounds that rule out little are not worth their cost
            else:  # bounds start after the first chunk; a block that gave them up keeps the products
                bounded = start == 0
            if dense.size:
                scores = users[dense] @ self.vectors[start:stop].T
                scores += self.bias[start:stop]
                self.exact_pairs += scores.size
                _offer_scores(scores, dense, start, self.order, excluded, ptr, heap_s, heap_i)
            self.bounded_pairs += (stop - start) * active.size
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
