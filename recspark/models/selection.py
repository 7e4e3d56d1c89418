"""Top-k lists and held-out ranks from a block of scores, in compiled passes over each row.

After the GEMM that scores a block of users against every item, top-N output
(:mod:`recspark.models.topk`) needs each row's ``k`` best items and evaluation
(:mod:`recspark.evaluation.ranking`) needs the rank of each held-out item. In
NumPy both take several full passes over the block (``argpartition``, masks
for ties, ``nonzero``, ``isfinite``), each about as slow as the GEMM itself.
Here they are compiled loops written so that LLVM vectorises them: a rank is
a branch-free count over the row (scores above the target, ties below its
index), taken for all of a row's targets tile by tile while the tile is in
L1; top-k first takes each chunk's maximum, which bounds the k-th best score
from below, then reads one by one only the few chunks that can still enter
the heap of the best k.

Both functions use the one total order of every ranking in recspark: score
descending, then item index ascending; so "rank < k" in a metric means "in the
top-k list". Excluded items are set to ``-inf`` by the caller beforehand.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recspark.errors import DataValidationError
from recspark.models.jit import inline, jit

__all__ = ["drain_heap", "finite_rows", "item_ranks", "offer_item", "sorted_contains", "top_k", "worse"]

#: Items per chunk of the top-k scan: each chunk's maximum decides whether its items are read one by one.
_CHUNK = 16

#: Items per tile of the rank pass: a tile stays in L1 while every target of its row counts over it.
_TILE = 512


@inline
def _n_above(row, start, stop, threshold):
    """How many of ``row[start:stop]`` (at most a tile) are > ``threshold``: a float32 sum of 0/1 that LLVM vectorises."""
    n = np.float32(0.0)
    for j in range(start, stop):
        n += np.float32(1.0) if row[j] > threshold else np.float32(0.0)
    return int(n)


@inline
def sorted_contains(values, start, stop, value):
    """True when ``value`` is in ``values[start:stop]`` (sorted ascending): a binary search."""
    lo, hi = start, stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo < stop and values[lo] == value


@inline
def worse(score_a, item_a, score_b, item_b):
    """True when (score_a, item_a) ranks after (score_b, item_b)."""
    return score_a < score_b or (score_a == score_b and item_a > item_b)


@inline
def _sift_down(heap_s, heap_i, size, pos):
    """Restore the heap (worst entry at the root) below ``pos``."""
    while True:
        child = 2 * pos + 1
        if child >= size:
            return
        if child + 1 < size and worse(heap_s[child + 1], heap_i[child + 1], heap_s[child], heap_i[child]):
            child += 1
        if not worse(heap_s[child], heap_i[child], heap_s[pos], heap_i[pos]):
            return
        heap_s[pos], heap_s[child] = heap_s[child], heap_s[pos]
        heap_i[pos], heap_i[child] = heap_i[child], heap_i[pos]
        pos = child


@inline
def offer_item(heap_s, heap_i, k, score, item):
    """Put (score, item) in the heap of the best ``k`` in place of its root (the caller checked it beats the root)."""
    heap_s[0] = score
    heap_i[0] = item
    _sift_down(heap_s, heap_i, k, 0)


@inline
def _offer(row, start, stop, heap_s, heap_i, k):
    """Push each item of ``row[start:stop]`` that beats the heap's root into the heap of the best ``k``."""
    for j in range(start, stop):
        if not worse(row[j], j, heap_s[0], heap_i[0]):
            offer_item(heap_s, heap_i, k, row[j], j)


@inline
def drain_heap(heap_s, heap_i, size, out_items, out_scores):
    """Empty a heap of ``size`` entries into ``out_*[:size]``, best first (it pops the worst first)."""
    while size > 0:
        size -= 1
        out_scores[size] = heap_s[0]
        out_items[size] = heap_i[0]
        heap_s[0] = heap_s[size]
        heap_i[0] = heap_i[size]
        _sift_down(heap_s, heap_i, size, 0)


@jit
def _top_k_rows(scores, k, out_items, out_scores):
    """Fill ``out_*[r]`` with row ``r``'s ``k`` best (score, item), best first.

    Two passes over each row. The first takes the maximum of every chunk of
    ``_CHUNK`` items (vectorised); the k-th largest of those maxima is a lower
    bound of the k-th best score, since k disjoint chunks each hold an item at
    least that high. The heap of the best k starts as k placeholders at that
    bound (ranked after any real item with the same score, so real items
    replace all of them), and the second pass reads one by one only the
    chunks whose maximum reaches the heap's root: about k of them.
    """
    n_rows, n_items = scores.shape
    n_chunks = n_items // _CHUNK
    maxima = np.empty(n_chunks, dtype=scores.dtype)
    chunk_ids = np.empty(k, dtype=np.int64)
    heap_s = np.empty(k, dtype=scores.dtype)
    heap_i = np.empty(k, dtype=np.int64)
    for r in range(n_rows):
        row = scores[r]
        for c in range(n_chunks):
            m = row[c * _CHUNK]
            for j in range(c * _CHUNK + 1, (c + 1) * _CHUNK):
                m = max(m, row[j])
            maxima[c] = m
        bound = -np.inf
        if n_chunks >= k:  # the k-th largest chunk maximum, by a heap of k maxima (worst at the root)
            for c in range(k):
                heap_s[c] = maxima[c]
                chunk_ids[c] = c
            for pos in range(k // 2 - 1, -1, -1):
                _sift_down(heap_s, chunk_ids, k, pos)
            for c in range(k, n_chunks):
                if maxima[c] > heap_s[0]:
                    heap_s[0] = maxima[c]
                    chunk_ids[0] = c
                    _sift_down(heap_s, chunk_ids, k, 0)
            bound = heap_s[0]
        for j in range(k):  # placeholders: item n_items ranks after every real item of equal score
            heap_s[j] = bound
            heap_i[j] = n_items
        for c in range(n_chunks):
            if maxima[c] >= heap_s[0]:
                _offer(row, c * _CHUNK, (c + 1) * _CHUNK, heap_s, heap_i, k)
        _offer(row, n_chunks * _CHUNK, n_items, heap_s, heap_i, k)
        drain_heap(heap_s, heap_i, k, out_items[r], out_scores[r])


@jit
def _ranks(scores, rows, items, targets, below, out):
    """``out[p]``: the rank of ``items[p]`` in row ``rows[p]`` (pairs grouped by row).

    ``targets[p]`` is the item's score and ``below[p]`` the next float under
    it, so that "> below" is ">= target": items before the target count when
    they tie with it, items after it only when they score higher. The row is
    read in tiles that stay in L1 while every target of the row counts over
    the tile (one pass per target over the whole row would read it from L2
    each time: ~5x slower).
    """
    n_items = scores.shape[1]
    first = 0
    while first < rows.size:
        last = first
        while last < rows.size and rows[last] == rows[first]:
            last += 1
        row = scores[rows[first]]
        for p in range(first, last):
            out[p] = 0
        for start in range(0, n_items, _TILE):
            stop = min(start + _TILE, n_items)
            for p in range(first, last):
                item = items[p]
                if item >= stop:
                    out[p] += _n_above(row, start, stop, below[p])
                elif item < start:
                    out[p] += _n_above(row, start, stop, targets[p])
                else:
                    out[p] += _n_above(row, start, item, below[p]) + _n_above(row, item, stop, targets[p])
        first = last


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
    Two reads of each row (chunk maxima, then about ``k`` chunks item by
    item) plus O(log k) per item that enters a row's running top-k.

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
    ``#{j : s_j > s_t} + #{j < t : s_j == s_t}``: vectorised counts over
    the row, all of a row's targets over one L1-sized tile at a time; a row
    is never sorted.

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
    if rows.size > 1 and np.any(rows[1:] < rows[:-1]):  # the compiled pass reads pairs grouped by row
        order = np.argsort(rows, kind="stable")
        ranks = np.empty(rows.size, dtype=np.int64)
        ranks[order] = item_ranks(scores, rows[order], items[order])
        return ranks
    targets = scores[rows, items]
    ranks = np.empty(rows.size, dtype=np.int64)
    _ranks(scores, rows, items, targets, np.nextafter(targets, -np.inf), ranks)
    return ranks
