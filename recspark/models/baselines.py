"""Non-personalised baselines: popularity and random.

Every evaluation reports these next to the model, computed by the same code on
the same split, so a model's numbers can be read against "recommend what is
popular" and "recommend anything". Both are :class:`~recspark.models.scoring.Scorer`
objects and go through :func:`recspark.evaluation.ranking.evaluate` and
:func:`~recspark.models.topk.recommend` unchanged.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recspark.data.columns import ITEM_IDX, USER_IDX
from recspark.errors import DataValidationError
from recspark.models.scoring import Scorer

log = logging.getLogger(__name__)

__all__ = ["PopularityScorer", "RandomScorer"]


class PopularityScorer(Scorer):
    """Scores every item by the number of distinct training users who interacted with it.

    The same score vector is used for every user; with training items excluded
    this is "the most popular items you have not seen yet". Ties (e.g. all
    never-seen items at 0) are broken by item index, like every ranking here.

    Build it with :meth:`fit`. The counts (O(n_items)) are broadcast once.

    Parameters
    ----------
    counts : ndarray of int or float, shape [n_items]
        Popularity of each item.
    broadcast : pyspark.Broadcast
        Broadcast of ``counts`` as float32 (created by :meth:`fit`).

    Notes
    -----
    Counts are scored as float32, which is exact up to 2**24 (~16.7M) users per
    item; above that, near-equal counts can tie.
    """

    _driver_only = ("user_factors", "_local", "_position")

    def __init__(self, counts: npt.NDArray[np.float32], broadcast: Broadcast) -> None:
        self.n_items = int(counts.shape[0])
        self._local: npt.NDArray[np.float32] | None = counts
        self._broadcast = broadcast
        self._position: npt.NDArray[np.int64] | None = None

    @classmethod
    def fit(cls, train: DataFrame, n_items: int) -> PopularityScorer:
        """Count distinct users per item in ``train``.

        Parameters
        ----------
        train : DataFrame
            Columns ``user_idx`` int and ``item_idx`` int (``weight`` is ignored:
            popularity is the number of users, not the sum of weights).
        n_items : int
            Number of items; indices must be in ``0 .. n_items - 1``.

        Raises
        ------
        DataValidationError
            Missing columns or item indices out of range.
        """
        n_items = int(n_items)
        missing = [c for c in (USER_IDX, ITEM_IDX) if c not in train.columns]
        if missing:
            raise DataValidationError(
                f"train: missing column(s) {missing}; found {train.columns}"
            )
        rows = (
            train.groupBy(ITEM_IDX)
            .agg(F.countDistinct(USER_IDX).alias("n_users"))
            .collect()  # O(n_items) rows
        )
        counts = np.zeros(n_items, dtype=np.float32)
        idx = np.array([r[ITEM_IDX] for r in rows], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_items):
            bad = idx[(idx < 0) | (idx >= n_items)]
            raise DataValidationError(
                f"train: {bad.size} item_idx value(s) outside 0..{n_items - 1} "
                f"(first: {int(bad[0])}); pass the correct n_items."
            )
        counts[idx] = np.array([r["n_users"] for r in rows], dtype=np.float32)
        log.info(
            "PopularityScorer: %d of %d items seen in train, max %d users",
            idx.size,
            n_items,
            int(counts.max()) if n_items else 0,
        )
        broadcast = train.sparkSession.sparkContext.broadcast(counts)
        return cls(counts, broadcast)

    @property
    def counts(self) -> npt.NDArray[np.float32]:
        """Number of distinct training users per item, float32 [n_items]."""
        return self._local if self._local is not None else self._broadcast.value

    def score_block(
        self,
        user_idx: npt.NDArray[np.integer],
        user_vectors: npt.NDArray[np.float32] | None,
    ) -> npt.NDArray[np.float32]:
        """The popularity vector repeated for every user in the block."""
        return np.tile(self.counts, (len(user_idx), 1))

    def shared_order(self) -> npt.NDArray[np.int64]:
        """Positions in the popularity ranking (count descending, item index ascending), computed once per task."""
        if self._position is None:
            counts = self.counts
            order = np.lexsort((np.arange(self.n_items), -counts.astype(np.float64)))
            self._position = np.empty(self.n_items, dtype=np.int64)
            self._position[order] = np.arange(self.n_items)
        return self._position

    def unpersist(self, blocking: bool = False) -> None:
        """Free the broadcast counts on executors."""
        self._broadcast.unpersist(blocking)


class RandomScorer(Scorer):
    """Scores items uniformly at random, independently per user: the chance-level baseline.

    Each user's scores come from ``np.random.default_rng([seed, user_idx])``,
    so they depend only on the seed and the user -- not on how users are
    blocked or partitioned, nor on task retries. Those scores serve top-N
    output; evaluation reports the exact *expected* metrics of a uniformly
    random ranking instead (``uniformly_random``: no item is scored, and the
    chance level carries no sampling noise), e.g. precision@k ``n_test / n_eligible``.

    Parameters
    ----------
    n_items : int
        Number of items.
    seed : int
        Non-negative seed; the same seed gives the same scores.
    """

    def __init__(self, n_items: int, seed: int = 0) -> None:
        if int(n_items) < 1 or int(seed) < 0:
            raise DataValidationError(
                f"RandomScorer needs n_items >= 1 and seed >= 0, got n_items={n_items}, "
                f"seed={seed}"
            )
        self.n_items = int(n_items)
        self.seed = int(seed)
        self.uniformly_random = True

    def score_block(
        self,
        user_idx: npt.NDArray[np.integer],
        user_vectors: npt.NDArray[np.float32] | None,
    ) -> npt.NDArray[np.float32]:
        """Uniform [0, 1) float32 scores, one generator per user."""
        out = np.empty((len(user_idx), self.n_items), dtype=np.float32)
        for row, user in enumerate(np.asarray(user_idx, dtype=np.int64)):
            out[row] = np.random.default_rng([self.seed, int(user)]).random(
                self.n_items, dtype=np.float32
            )
        return out
