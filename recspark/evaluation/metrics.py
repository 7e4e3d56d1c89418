"""Ranking metrics computed from the ranks of held-out items; pure NumPy.

Every metric here is a function of one thing: for each evaluated user, the
0-based **ranks** of that user's held-out (test) items among the user's
*eligible* items, i.e. all items except those excluded from the ranking
(usually the user's training items). Working from ranks rather than from score
matrices keeps the metrics cheap, exactly testable by hand, and independent of
how the scores were produced (ALS, WARP, a baseline) -- the same design as
LightFM's ``evaluation`` module, which is built on ``predict_rank``.

Ranks must come from a **deterministic total order**: score descending, then
``item_idx`` ascending. :func:`recspark.models.selection.item_ranks` computes ranks in that order and
:func:`recspark.models.selection.top_k` produces top-k lists in the same order, so
"held-out item has rank < k" holds exactly when "held-out item is in the user's
top-k list".

Layout of a block of users (CSR, batch-first so whole blocks are vectorised):
``ranks[indptr[u]:indptr[u + 1]]`` are the ranks of user ``u``'s held-out items
(any order, distinct within a user). Every metric returns one float64 value in
``[0, 1]`` per user. A user with no held-out items is not evaluated: passing
one raises :class:`~recspark.errors.DataValidationError` (drop such users
first). :func:`ranks_from_lists` builds the CSR pair from per-user lists.

This module never imports pyspark; :mod:`recspark.evaluation.ranking` runs these
functions on executors over blocks of users.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from recspark.errors import DataValidationError

__all__ = [
    "auc",
    "chance_metrics",
    "map_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "ranking_metrics",
    "ranks_from_lists",
    "recall_at_k",
    "reciprocal_rank",
    "shared_order_ranks",
]

#: Largest number of score-matrix elements a rank/top-k temporary may hold
#: (bounds executor memory: 2**23 float32 = 32 MiB, plus boolean masks).
DEFAULT_MAX_ELEMENTS = 2**23


# --------------------------------------------------------------------------- #
# Input handling
# --------------------------------------------------------------------------- #


def ranks_from_lists(
    per_user: Iterable[Sequence[int] | npt.ArrayLike],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pack per-user rank lists into the CSR pair ``(ranks, indptr)``.

    Parameters
    ----------
    per_user : iterable of sequences of int
        ``per_user[u]`` are user ``u``'s 0-based held-out-item ranks.

    Returns
    -------
    ranks : ndarray of int64, shape [n_ranks]
    indptr : ndarray of int64, shape [n_users + 1]

    Examples
    --------
    >>> ranks, indptr = ranks_from_lists([[0, 3], [1]])
    >>> ranks.tolist(), indptr.tolist()
    ([0, 3, 1], [0, 2, 3])
    """
    arrays = [np.asarray(r, dtype=np.int64).ravel() for r in per_user]
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ranks = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)
    return ranks.astype(np.int64, copy=False), indptr


class _Prepared:
    """Ranks sorted within each user plus the per-rank bookkeeping every metric needs."""

    __slots__ = ("ranks", "user", "position", "n_test", "n_users", "indptr")

    def __init__(self, ranks: npt.ArrayLike, indptr: npt.ArrayLike) -> None:
        ranks = np.asarray(ranks)
        indptr = np.asarray(indptr)
        if ranks.ndim != 1 or indptr.ndim != 1 or indptr.size < 1:
            raise DataValidationError(
                f"ranks must be 1-D and indptr 1-D with at least one entry; got shapes "
                f"{ranks.shape} and {indptr.shape}. Build them with ranks_from_lists()."
            )
        if not (np.issubdtype(ranks.dtype, np.integer) or ranks.size == 0):
            raise DataValidationError(f"ranks must be integers, got dtype {ranks.dtype}")
        indptr = indptr.astype(np.int64, copy=False)
        if indptr[0] != 0 or indptr[-1] != ranks.size or np.any(np.diff(indptr) < 0):
            raise DataValidationError(
                f"indptr must start at 0, be non-decreasing and end at len(ranks)={ranks.size}; "
                f"got indptr[0]={indptr[0]}, indptr[-1]={indptr[-1]}"
            )
        n_test = np.diff(indptr)
        if np.any(n_test == 0):
            first = int(np.flatnonzero(n_test == 0)[0])
            raise DataValidationError(
                f"{int(np.sum(n_test == 0))} user(s) have no held-out items (first: block "
                f"position {first}); such users are not evaluated -- drop them before "
                "computing metrics."
            )
        ranks = ranks.astype(np.int64, copy=False)
        if ranks.size and ranks.min() < 0:
            raise DataValidationError(
                f"ranks must be >= 0 (0-based), found {int(ranks.min())}"
            )
        n_users = n_test.size
        user = np.repeat(np.arange(n_users, dtype=np.int64), n_test)
        # Sort within each user (user is the primary key, so indptr stays valid).
        order = np.lexsort((ranks, user))
        ranks = ranks[order]
        if ranks.size > 1 and np.any((np.diff(ranks) == 0) & (np.diff(user) == 0)):
            raise DataValidationError(
                "a user has two held-out items with the same rank; ranks must come from a "
                "total order (score desc, then item_idx asc) -- see item_ranks()."
            )
        self.ranks = ranks
        self.user = user
        self.position = np.arange(ranks.size, dtype=np.int64) - indptr[user]
        self.n_test = n_test
        self.n_users = n_users
        self.indptr = indptr

    def per_user_sum(self, weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.bincount(self.user, weights=weights, minlength=self.n_users)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataValidationError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #


def precision_at_k(
    ranks: npt.ArrayLike, indptr: npt.ArrayLike, k: int
) -> npt.NDArray[np.float64]:
    """Fraction of the top-``k`` slots filled by held-out items: ``hits@k / k``.

    The denominator is always ``k`` (the usual definition), even when a user has
    fewer than ``k`` eligible or held-out items, so precision@k of a perfect
    ranking can be < 1; use recall or NDCG to compare users with few items.

    Parameters
    ----------
    ranks, indptr : ndarray of int
        Per-user 0-based ranks in CSR layout (see the module docstring).
    k : int
        Cut-off, >= 1.

    Returns
    -------
    ndarray of float64, shape [n_users]

    Examples
    --------
    >>> precision_at_k([0, 3, 5], [0, 3], k=4).tolist()
    [0.5]
    """
    return _precision(_Prepared(ranks, indptr), _check_k(k))


def _precision(p: _Prepared, k: int) -> npt.NDArray[np.float64]:
    return p.per_user_sum((p.ranks < k).astype(np.float64)) / k


def recall_at_k(
    ranks: npt.ArrayLike, indptr: npt.ArrayLike, k: int
) -> npt.NDArray[np.float64]:
    """Fraction of a user's held-out items found in the top ``k``: ``hits@k / n_test``.

    Examples
    --------
    >>> recall_at_k([0, 3, 5], [0, 3], k=4).tolist()
    [0.6666666666666666]
    """
    return _recall(_Prepared(ranks, indptr), _check_k(k))


def _recall(p: _Prepared, k: int) -> npt.NDArray[np.float64]:
    return p.per_user_sum((p.ranks < k).astype(np.float64)) / p.n_test


def _discounts(n: int) -> npt.NDArray[np.float64]:
    return 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)


def ndcg_at_k(
    ranks: npt.ArrayLike, indptr: npt.ArrayLike, k: int
) -> npt.NDArray[np.float64]:
    """Normalised discounted cumulative gain at ``k`` with binary relevance.

    ``DCG = sum over hits of 1 / log2(rank + 2)`` (rank 0-based), divided by the
    DCG of the ideal ranking, which puts ``min(n_test, k)`` held-out items first.
    Rewards putting held-out items *near the top*, not just inside the cut-off.

    Examples
    --------
    >>> round(float(ndcg_at_k([1], [0, 1], k=3)[0]), 4)  # 1/log2(3)
    0.6309
    >>> ndcg_at_k([0, 1], [0, 2], k=5).tolist()
    [1.0]
    """
    return _ndcg(_Prepared(ranks, indptr), _check_k(k))


def _ndcg(p: _Prepared, k: int) -> npt.NDArray[np.float64]:
    hit = p.ranks < k
    gains = np.where(hit, 1.0 / np.log2(np.minimum(p.ranks, k) + 2.0), 0.0)
    dcg = p.per_user_sum(gains)
    ideal_cum = np.cumsum(_discounts(k))
    idcg = ideal_cum[np.minimum(p.n_test, k) - 1]
    return np.minimum(dcg / idcg, 1.0)


def map_at_k(ranks: npt.ArrayLike, indptr: npt.ArrayLike, k: int) -> npt.NDArray[np.float64]:
    """Average precision at ``k``, normalised by ``min(n_test, k)``.

    ``AP@k = sum over hits at rank r of precision@(r + 1)``, divided by
    ``min(n_test, k)`` so that a perfect ranking scores 1 even when the user has
    more than ``k`` held-out items. The mean over users is MAP@k.

    Examples
    --------
    >>> map_at_k([0, 2], [0, 2], k=3).tolist()  # (1/1 + 2/3) / 2
    [0.8333333333333333]
    """
    return _average_precision(_Prepared(ranks, indptr), _check_k(k))


def _average_precision(p: _Prepared, k: int) -> npt.NDArray[np.float64]:
    hit = p.ranks < k
    # Ranks are sorted within a user, so the number of hits up to and including
    # this one is its position + 1.
    prec = np.where(hit, (p.position + 1.0) / (p.ranks + 1.0), 0.0)
    return np.minimum(p.per_user_sum(prec) / np.minimum(p.n_test, k), 1.0)


def reciprocal_rank(ranks: npt.ArrayLike, indptr: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``1 / (rank of the first held-out item + 1)``, with no cut-off (mean = MRR).

    Examples
    --------
    >>> reciprocal_rank([4, 2], [0, 2]).tolist()
    [0.3333333333333333]
    """
    return _reciprocal_rank(_Prepared(ranks, indptr))


def _reciprocal_rank(p: _Prepared) -> npt.NDArray[np.float64]:
    return 1.0 / (p.ranks[p.indptr[:-1]] + 1.0)


def auc(
    ranks: npt.ArrayLike, indptr: npt.ArrayLike, n_eligible: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Exact per-user ROC AUC, computed from ranks in O(n_test).

    AUC is the fraction of (held-out, eligible non-held-out) item pairs in which
    the held-out item is ranked higher. With ranks sorted ascending, the ``i``-th
    held-out item (0-based) at rank ``r`` has ``r - i`` negatives above it, so
    ``AUC = 1 - sum(r_i - i) / (n_test * n_neg)`` with
    ``n_neg = n_eligible - n_test``.

    A user with no eligible negatives (every eligible item is held out) gets
    1.0: no pair is ordered wrongly, and the held-out items necessarily occupy
    the first ranks -- consistent with the other metrics' "all ranked first" case.

    Parameters
    ----------
    ranks, indptr : ndarray of int
        Per-user 0-based ranks in CSR layout.
    n_eligible : int or ndarray of int, shape [n_users]
        Number of items each user was ranked over (``n_items`` minus excluded
        items); every rank must be ``< n_eligible``.

    Examples
    --------
    >>> auc([0], [0, 1], n_eligible=5).tolist()
    [1.0]
    >>> auc([4], [0, 1], n_eligible=5).tolist()
    [0.0]
    >>> auc([2], [0, 1], n_eligible=5).tolist()
    [0.5]
    """
    return _auc(_Prepared(ranks, indptr), n_eligible)


def _auc(p: _Prepared, n_eligible: npt.ArrayLike) -> npt.NDArray[np.float64]:
    n_eligible = np.broadcast_to(np.asarray(n_eligible, dtype=np.int64), (p.n_users,))
    n_neg = n_eligible - p.n_test
    if np.any(n_neg < 0) or (p.ranks.size and np.any(p.ranks >= n_eligible[p.user])):
        raise DataValidationError(
            "auc: every rank must be < n_eligible and n_test <= n_eligible; check that "
            "held-out items were not excluded from the ranking (train/test overlap?)."
        )
    wrong = p.per_user_sum((p.ranks - p.position).astype(np.float64))
    pairs = p.n_test * n_neg
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(pairs > 0, 1.0 - wrong / np.maximum(pairs, 1), 1.0)
    return np.clip(value, 0.0, 1.0)


def ranking_metrics(
    ranks: npt.ArrayLike,
    indptr: npt.ArrayLike,
    n_eligible: npt.ArrayLike,
    ks: Sequence[int] = (5, 10),
) -> dict[str, npt.NDArray[np.float64]]:
    """All metrics for a block of users, keyed as the evaluation report names them.

    Returns
    -------
    dict of str to ndarray of float64, shape [n_users]
        ``precision_at_{k}``, ``recall_at_{k}``, ``ndcg_at_{k}``, ``map_at_{k}``
        for each ``k`` in ``ks``, plus ``mrr`` (per-user reciprocal rank) and ``auc``.

    Examples
    --------
    >>> m = ranking_metrics([0, 1], [0, 2], n_eligible=10, ks=(1,))
    >>> sorted(m)
    ['auc', 'map_at_1', 'mrr', 'ndcg_at_1', 'precision_at_1', 'recall_at_1']
    >>> m["recall_at_1"].tolist(), m["auc"].tolist()
    ([0.5], [1.0])
    """
    p = _Prepared(ranks, indptr)  # sorted once for every metric
    out: dict[str, npt.NDArray[np.float64]] = {}
    for k in map(_check_k, ks):
        out[f"precision_at_{k}"] = _precision(p, k)
        out[f"recall_at_{k}"] = _recall(p, k)
        out[f"ndcg_at_{k}"] = _ndcg(p, k)
        out[f"map_at_{k}"] = _average_precision(p, k)
    out["mrr"] = _reciprocal_rank(p)
    out["auc"] = _auc(p, n_eligible)
    return out


def _harmonic(m: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """``H_m = 1 + 1/2 + ... + 1/m`` (``H_0 = 0``), exact to float64 rounding at any ``m``."""
    m = np.asarray(m, dtype=np.int64)
    out = np.zeros(m.shape, dtype=np.float64)
    small = m <= 64  # summed directly; above, the asymptotic series is below float64 rounding
    table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 65, dtype=np.float64))])
    out[small] = table[m[small]]
    big = m[~small].astype(np.float64)
    out[~small] = np.log(big) + np.euler_gamma + 1 / (2 * big) - 1 / (12 * big**2) + 1 / (120 * big**4)
    return out


def chance_metrics(
    n_eligible: npt.ArrayLike, n_test: npt.ArrayLike, ks: Sequence[int] = (5, 10)
) -> dict[str, npt.NDArray[np.float64]]:
    """Each user's *expected* :func:`ranking_metrics` under a uniformly random ranking of their eligible items.

    The random baseline's exact value, without scoring a single item: with
    ``n`` eligible items of which ``t`` are held out, every held-out item is
    at any rank with probability ``1/n`` and two are at ranks ``r != s`` with
    probability ``1/(n(n-1))``. With ``m = min(k, n)``:

    * precision@k ``= m t / (n k)``, recall@k ``= m / n``;
    * NDCG@k ``= (t/n) sum_{r<m} 1/log2(r+2)``, over the ideal DCG;
    * AP@k ``= [(t/n) H_m + t(t-1)/(n(n-1)) (m - H_m)] / min(t, k)`` (``H`` harmonic numbers);
    * reciprocal rank ``= t (H_n - H_{t-1}) / (n - t + 1)`` (the first held-out item's rank
      is the minimum of ``t`` distinct uniform ranks);
    * AUC ``= 1/2`` (1 when every eligible item is held out, as :func:`auc`).

    Parameters
    ----------
    n_eligible, n_test : ndarray of int, shape [n_users]
        Items each user is ranked over, and how many of them are held out (``1 <= n_test <= n_eligible``).

    Examples
    --------
    >>> m = chance_metrics([4], [1], ks=(2,))
    >>> m["precision_at_2"].tolist(), m["mrr"].tolist()  # mrr: (1 + 1/2 + 1/3 + 1/4) / 4
    ([0.25], [0.5208333333333333])
    """
    n = np.asarray(n_eligible, dtype=np.int64).ravel()
    t = np.broadcast_to(np.asarray(n_test, dtype=np.int64), n.shape)
    if np.any(t < 1) or np.any(t > n):
        raise DataValidationError("chance_metrics: every user needs 1 <= n_test <= n_eligible")
    nf, tf = n.astype(np.float64), t.astype(np.float64)
    pair = np.where(n > 1, tf * (tf - 1) / (nf * np.maximum(nf - 1, 1)), 0.0)
    out: dict[str, npt.NDArray[np.float64]] = {}
    for k in ks:
        k = _check_k(k)
        m = np.minimum(k, n)
        cum = np.cumsum(_discounts(k))
        h_m = _harmonic(m)
        out[f"precision_at_{k}"] = m * tf / (nf * k)
        out[f"recall_at_{k}"] = m / nf
        out[f"ndcg_at_{k}"] = tf / nf * cum[m - 1] / cum[np.minimum(t, k) - 1]
        out[f"map_at_{k}"] = (tf / nf * h_m + pair * (m - h_m)) / np.minimum(t, k)
    out["mrr"] = tf * (_harmonic(n) - _harmonic(t - 1)) / (nf - tf + 1)
    out["auc"] = np.where(t < n, 0.5, 1.0)
    return out


# --------------------------------------------------------------------------- #
# Kernels shared by evaluation and top-N recommendation
# --------------------------------------------------------------------------- #


def shared_order_ranks(
    position: npt.NDArray[np.int64],
    rows: npt.ArrayLike,
    items: npt.ArrayLike,
    excluded_keys: npt.ArrayLike,
    n_items: int,
) -> npt.NDArray[np.int64]:
    """:func:`~recspark.models.selection.item_ranks` when every row shares one ranking: no score matrix, O((pairs + excluded) log).

    An item's rank among a row's eligible items is its shared ``position``
    minus the row's excluded items positioned above it -- the same number
    :func:`~recspark.models.selection.item_ranks` gives with those items at ``-inf``.

    Parameters
    ----------
    position : ndarray of int, shape [n_items]
        Each item's 0-based position in the shared total order.
    rows, items : ndarray of int, shape [n_pairs]
        Row and item index of each target.
    excluded_keys : ndarray of int
        ``row * n_items + item`` of every excluded (row, item); targets must not be among them.

    Examples
    --------
    >>> position = np.array([1, 0, 2, 3, 4])  # the order of the scores [0.5, 0.9, 0.5, 0.3, 0.1]
    >>> shared_order_ranks(position, [0, 0, 0], [1, 0, 4], excluded_keys=[3], n_items=5).tolist()
    [0, 1, 3]
    """
    rows = np.asarray(rows, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    excluded = np.asarray(excluded_keys, dtype=np.int64)
    target = position[items]
    # Excluded items as (row, position) keys, sorted: those of the target's row positioned above it.
    above = np.sort(excluded // n_items * n_items + position[excluded % n_items])
    count = np.searchsorted(above, rows * n_items + target) - np.searchsorted(above, rows * n_items)
    return target - count
