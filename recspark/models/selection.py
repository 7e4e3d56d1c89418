"""Top-k lists and held-out ranks from a block of scores, in one compiled pass over each row.

After the GEMM that scores a block of users against every item, top-N output
(:mod:`recspark.models.topk`) needs each row's ``k`` best items and evaluation
(:mod:`recspark.evaluation.ranking`) needs the rank of each held-out item. In
NumPy both take several full passes over the block (``argpartition``, masks
for ties, ``nonzero``, ``isfinite``), each about as slow as the GEMM itself.
Here they are compiled loops written so that LLVM vectorises them: a rank is
two branch-free counts over the row (scores above the target, ties below its
index), and top-k reads the row in chunks, each first tested with one such
count against the k-th best score so far, so that the heap of the best k is
touched only by the few items that enter it.

Both functions use the one total order of every ranking in recspark: score
descending, then item index ascending; so "rank < k" in a metric means "in the
top-k list". Excluded items are set to ``-inf`` by the caller beforehand.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recspark.errors import DataValidationError
from recspark.models.jit import inline, jit

__all__ = ["finite_rows", "item_ranks", "top_k"]

#: Items per chunk of the row scan: one vectorised count decides whether the chunk is read further.
_CHUNK = 64


#: A float32 count is exact up to 2**24: counts are summed in runs of this many items.
_RUN = 2**20


@inline
def _n_above(row, start, stop, threshold):
    """How many of ``row[start:stop]`` are > ``threshold``: sums of 0/1 in float32, which LLVM vectorises."""
    total = 0
    for first in range(start, stop, _RUN):
        n = np.float32(0.0)
        for j in range(first, min(first + _RUN, stop)):
            n += np.float32(1.0) if row[j] > threshold else np.float32(0.0)
        total += int(n)
    return total


@inline
def _worse(score_a, item_a, score_b, item_b):
    """True when (score_a, item_a) ranks after (score_b, item_b)."""
    return score_a < score_b or (score_a == score_b and item_a > item_b)


@inline
def _sift_down(heap_s, heap_i, size, pos):
    """Restore the heap (worst entry at the root) below ``pos``."""
    while True:
        child = 2 * pos + 1
        if child >= size:
            return
        if child + 1 < size and _worse(heap_s[child + 1], heap_i[child + 1], heap_s[child], heap_i[child]):
            child += 1
        if not _worse(heap_s[child], heap_i[child], heap_s[pos], heap_i[pos]):
            return
        heap_s[pos], heap_s[child] = heap_s[child], heap_s[pos]
        heap_i[pos], heap_i[child] = heap_i[child], heap_i[pos]
        pos = child


@jit
def _top_k_rows(scores, k, out_items, out_scores):
    """Fill ``out_*[r]`` with row ``r``'s ``k`` best (score, item), best first."""
    n_rows, n_items = scores.shape
    heap_s = np.empty(k, dtype=scores.dtype)
    heap_i = np.empty(k, dtype=np.int64)
    for r in range(n_rows):
        row = scores[r]
        # A heap of the k best so far, the worst at the root. The first k items fill it.
        for j in range(k):
            heap_s[j] = row[j]
            heap_i[j] = j
        for pos in range(k // 2 - 1, -1, -1):
            _sift_down(heap_s, heap_i, k, pos)
        # Items are scanned in ascending order, so an item tied with the root ranks after it.
        # Whole chunks first: a fixed trip count lets LLVM unroll and vectorise the test.
        start = k
        while start + _CHUNK <= n_items:
            threshold = heap_s[0]
            n = np.float32(0.0)
            for j in range(start, start + _CHUNK):
                n += np.float32(1.0) if row[j] > threshold else np.float32(0.0)
            if n > 0:
                for j in range(start, start + _CHUNK):
                    if row[j] > heap_s[0]:
                        heap_s[0] = row[j]
                        heap_i[0] = j
                        _sift_down(heap_s, heap_i, k, 0)
            start += _CHUNK
        for j in range(start, n_items):
            if row[j] > heap_s[0]:
                heap_s[0] = row[j]
                heap_i[0] = j
                _sift_down(heap_s, heap_i, k, 0)
        # Pop the worst first: the list fills from its end.
        size = k
        while size > 0:
            size -= 1
            out_scores[r, size] = heap_s[0]
            out_items[r, size] = heap_i[0]
            heap_s[0] = heap_s[size]
            heap_i[0] = heap_i[size]
            _sift_down(heap_s, heap_i, size, 0)


@jit
def _ranks(scores, rows, items, targets, below, out):
    """``out[p]``: the rank of ``items[p]`` in row ``rows[p]``, two vectorised counts over the row.

    ``targets[p]`` is the item's score and ``below[p]`` the next float under
    it, so that "> below" is ">= target": ties rank first below the item's index.
    """
    n_items = scores.shape[1]
    for p in range(rows.size):
        row, item = scores[rows[p]], items[p]
        out[p] = _n_above(row, 0, item, below[p]) + _n_above(row, item, n_items, targets[p])


@jit
def _finite_rows(scores, out):
    for r in range(scores.shape[0]):
        total = 0.0
        for j in range(scores.shape[1]):
            total += scores[r, j] * 0.0  # 0 for a finite score, NaN for inf or NaN
        out[r] = total == 0.0


def finite_rows(scores: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """True for each row of ``scores`` whose values are all finite: one vectorised pass, no temporaries.

    ``np.isfinite(scores).all(axis=1)`` builds a boolean matrix as large as
    the block and costs about as much as the GEMM that made the scores.
    """
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    out = np.empty(scores.shape[0], dtype=np.bool_)
    _finite_rows(np.ascontiguousarray(scores), out)
    return out


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataValidationError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def top_k(
    scores: npt.NDArray[np.floating], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.floating]]:
    """Top-``k`` items of each row, ordered by score descending then item index ascending.

    A deterministic function of the scores (popularity scores tie a lot).
    O(n_rows * n_items) reads plus O(log k) per item that enters a row's
    running top-k.

    Parameters
    ----------
    scores : ndarray of float, shape [n_rows, n_items]
        No NaN; ``-inf`` marks excluded items (they sort last; callers drop them).
    k : int
        Number of items per row, >= 1; capped at ``n_items``.

    Returns
    -------
    items : ndarray of int64, shape [n_rows, min(k, n_items)]
    top_scores : ndarray, same dtype as ``scores`` (float32 or float64), same shape as ``items``

    Examples
    --------
    >>> s = np.array([[0.1, 0.7, 0.7, 0.3], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    >>> items, vals = top_k(s, 2)
    >>> items.tolist()
    [[1, 2], [0, 1]]
    """
    k = _check_k(k)
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    items = np.empty((n_rows, k), dtype=np.int64)
    values = np.empty((n_rows, k), dtype=scores.dtype)
    if n_rows and k:
        _top_k_rows(np.ascontiguousarray(scores), k, items, values)
    return items, values


def item_ranks(
    scores: npt.NDArray[np.floating], rows: npt.ArrayLike, items: npt.ArrayLike
) -> npt.NDArray[np.int64]:
    """0-based rank of ``scores[rows[i], items[i]]`` within row ``rows[i]``.

    The rank is the number of items ordered before the target in the total
    order (score descending, then item index ascending), i.e.
    ``#{j : s_j > s_t} + #{j < t : s_j == s_t}``: one vectorised count over
    the row per target (a row of 100k float32 stays in L2 between a user's
    targets); a row is never sorted.

    Excluded items are expected to be set to ``-inf`` beforehand: with finite
    target scores they then never count as ranked above a target, so the rank
    is the rank among eligible items.

    Parameters
    ----------
    scores : ndarray of float, shape [n_rows, n_items]
        Scores with excluded entries set to ``-inf``; target entries must be finite.
    rows, items : ndarray of int, shape [n_pairs]
        Row and item index of each target.

    Returns
    -------
    ndarray of int64, shape [n_pairs]

    Examples
    --------
    >>> s = np.array([[0.5, 0.9, 0.5, -np.inf, 0.1]], dtype=np.float32)
    >>> item_ranks(s, [0, 0, 0, 0], [1, 0, 2, 4]).tolist()
    [0, 1, 2, 3]
    """
    scores = np.asarray(scores)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if rows.shape != items.shape or rows.ndim != 1:
        raise DataValidationError(f"rows and items must be 1-D of one length, got {rows.shape} and {items.shape}")
    n_rows, n_items = scores.shape
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows or items.min() < 0 or items.max() >= n_items):
        raise DataValidationError(f"a (row, item) pair lies outside the {n_rows} x {n_items} score matrix")
    scores = np.ascontiguousarray(scores)
    targets = scores[rows, items]
    ranks = np.empty(rows.size, dtype=np.int64)
    _ranks(scores, rows, items, targets, np.nextafter(targets, -np.inf), ranks)
    return ranks
