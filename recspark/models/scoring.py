"""How a model scores a block of users against every item.

Evaluation (:func:`recspark.evaluation.ranking.evaluate`) and top-N output
(:func:`recspark.models.topk.recommend`) only need one operation from a
model: given a block of users, return their scores for all items. A
:class:`Scorer` is that operation plus the per-user state it needs, so every
model family (Spark ALS, the WARP/BPR trainer, the baselines in
:mod:`recspark.models.baselines`) is evaluated by the same distributed code.

The contract
------------
* ``n_items``: items are ``0 .. n_items - 1``.
* ``user_factors``: a DataFrame with columns ``user_idx`` int and ``features``
  array<float> (one row per user), joined to the users being scored; ``None``
  for scorers that need no per-user state (popularity, random).
* ``n_factors``: length of each ``features`` vector (0 when ``user_factors`` is
  None); users missing from ``user_factors`` are scored with a zero vector of
  this length.
* ``score_block(user_idx, user_vectors)``: runs on executors, so the scorer is
  pickled into the task. Item-side arrays (O(n_items * rank)) must reach
  executors through one ``SparkContext.broadcast`` rather than being pickled
  into every task's closure; :meth:`Scorer.__getstate__` drops the driver-only
  state (the ``user_factors`` DataFrame and any local copies).
"""

from __future__ import annotations

import abc
import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recspark.data.columns import FEATURES, ITEM_IDX, USER_IDX
from recspark.errors import DataValidationError
from recspark.models.pruning import BoundIndex

log = logging.getLogger(__name__)

__all__ = ["FactorScorer", "Scorer"]

#: The last :class:`BoundIndex` built in this process, with the item matrix it was built from: tasks
#: of one stage share a Python worker and the broadcast value, so they build it once.
_BOUND_INDEX: dict[str, tuple[np.ndarray, BoundIndex]] = {}


class Scorer(abc.ABC):
    """Scores blocks of users against all items; the shared model contract for evaluation.

    Subclasses set ``n_items`` (and ``user_factors``/``n_factors`` when they keep
    per-user vectors) and implement :meth:`score_block`. Attributes whose names
    are listed in ``_driver_only`` are dropped when the scorer is pickled for a
    task, so keep large arrays in a broadcast and list local copies there.
    """

    n_items: int
    user_factors: DataFrame | None = None
    n_factors: int = 0
    _driver_only: tuple[str, ...] = ("user_factors",)
    #: True for a scorer whose ranking of each user's eligible items is a uniformly random
    #: permutation (the random baseline): evaluation then reports the metrics' exact expectation
    #: (:func:`recspark.evaluation.metrics.chance_metrics`) instead of one noisy draw, in O(users).
    uniformly_random: bool = False

    @abc.abstractmethod
    def score_block(
        self,
        user_idx: npt.NDArray[np.integer],
        user_vectors: npt.NDArray[np.float32] | None,
    ) -> npt.NDArray[np.float32]:
        """Score a block of users against every item.

        Parameters
        ----------
        user_idx : ndarray of int, shape [n_block]
            Internal user indices of the block.
        user_vectors : ndarray of float32, shape [n_block, n_factors], or None
            Rows of ``user_factors`` for these users (zero rows for users with
            no factors); None when the scorer has no ``user_factors``.

        Returns
        -------
        ndarray of float32, shape [n_block, n_items]
            A fresh, writable array (callers mask excluded items in place).
            Higher is better; scores must be finite.
        """

    def shared_order(self) -> npt.NDArray[np.int64] | None:
        """Each item's position in one ranking every user shares, or None (the default: rankings differ).

        A scorer whose ranking is the same for every user (popularity) returns
        it; evaluation then ranks held-out items from it, O(interactions x log)
        instead of scoring every item for every user. Positions must follow
        the total order of every ranking here: score descending, item index ascending.
        """
        return None

    def bound_index(self) -> BoundIndex | None:
        """The item side prepared for exact bounded top-k (factor models), or None (the default: score every item).

        Top-N output (:func:`~recspark.models.topk.recommend`) then reads only
        the items whose Cauchy-Schwarz bound can still reach a user's list.
        """
        return None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._driver_only:
            if name in state:
                state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class FactorScorer(Scorer):
    """Matrix-factorisation scorer: ``score = U @ V.T (+ item bias)``.

    Works for any model that represents users and items by vectors whose dot
    product is the preference (Spark ALS, WARP/BPR with or without item
    biases). A user bias would not change any user's ranking, so none is taken.

    The item matrix is held on the driver and shipped to executors once through
    ``SparkContext.broadcast``; call :meth:`unpersist` when done to free
    executor memory.

    Parameters
    ----------
    item_vectors : ndarray of float32, shape [n_items, n_factors]
        Row ``i`` is item ``i``'s vector.
    user_factors : DataFrame
        Columns ``user_idx`` int and ``features`` array<float> of length
        ``n_factors``, one row per user. Used lazily (joined during evaluation).
    item_bias : ndarray of float32, shape [n_items], optional
        Added to every user's score of the item.

    Notes
    -----
    Use :meth:`from_dataframes` to build one from a fitted model's factor
    DataFrames. Items without a factor row get a zero vector (and zero bias),
    so every user scores them 0: they are still ranked, not dropped, which
    keeps ranks comparable across models over the same ``n_items``.
    """

    _driver_only = ("user_factors", "_local")

    def __init__(
        self,
        item_vectors: npt.NDArray[np.float32],
        user_factors: DataFrame,
        item_bias: npt.NDArray[np.float32] | None = None,
    ) -> None:
        item_vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if item_vectors.ndim != 2:
            raise DataValidationError(
                f"item_vectors must be 2-D [n_items, n_factors], got shape {item_vectors.shape}"
            )
        if item_bias is not None:
            item_bias = np.ascontiguousarray(item_bias, dtype=np.float32)
            if item_bias.shape != (item_vectors.shape[0],):
                raise DataValidationError(
                    f"item_bias must have shape ({item_vectors.shape[0]},), got {item_bias.shape}"
                )
        if not np.isfinite(item_vectors).all() or (
            item_bias is not None and not np.isfinite(item_bias).all()
        ):
            raise DataValidationError(
                "item factors contain NaN or inf; the model diverged -- refit with a lower "
                "learning rate or stronger regularisation."
            )
        self.n_items = int(item_vectors.shape[0])
        self.n_factors = int(item_vectors.shape[1])
        self.user_factors = user_factors.select(
            F.col(USER_IDX).cast("int").alias(USER_IDX),
            F.col(FEATURES).cast("array<float>").alias(FEATURES),
        )
        payload = (item_vectors, item_bias)
        self._local: tuple[np.ndarray, np.ndarray | None] | None = payload
        self._broadcast: Broadcast = user_factors.sparkSession.sparkContext.broadcast(payload)
        log.info(
            "FactorScorer: %d items x %d factors broadcast (%.1f MiB)%s",
            self.n_items,
            self.n_factors,
            item_vectors.nbytes / 2**20,
            " with item bias" if item_bias is not None else "",
        )

    @property
    def item_side(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The item vectors and biases (driver copies), e.g. to score a subset of items."""
        if self._local is None:
            raise RuntimeError("FactorScorer.item_side is only available on the driver")
        return self._local

    @classmethod
    def from_dataframes(
        cls,
        user_factors: DataFrame,
        item_factors: DataFrame,
        n_items: int,
        item_bias_col: str | None = None,
    ) -> FactorScorer:
        """Build from factor DataFrames, collecting the item side once.

        Parameters
        ----------
        user_factors : DataFrame
            ``user_idx`` int, ``features`` array<float>.
        item_factors : DataFrame
            ``item_idx`` int, ``features`` array<float>, and optionally a float
            bias column named ``item_bias_col``. O(n_items * n_factors) is
            collected to the driver.
        n_items : int
            Number of items; item indices must lie in ``0 .. n_items - 1``.
            Items without a row are scored 0 by every user (see class Notes).
        item_bias_col : str, optional
            Name of the item bias column, if the model has one.

        Raises
        ------
        DataValidationError
            Missing columns, an item index out of range, duplicate item rows, or
            vectors of different lengths.
        """
        n_items = int(n_items)
        if n_items < 1:
            raise DataValidationError(f"n_items must be >= 1, got {n_items}")
        for df, name, cols in (
            (user_factors, "user_factors", (USER_IDX, FEATURES)),
            (item_factors, "item_factors", (ITEM_IDX, FEATURES)
             + ((item_bias_col,) if item_bias_col else ())),
        ):
            missing = [c for c in cols if c not in df.columns]
            if missing:
                raise DataValidationError(
                    f"{name}: missing column(s) {missing}; found {df.columns}. Rename the "
                    f"model's factor columns to {list(cols)} (e.g. ALS 'id' -> '{cols[0]}')."
                )
        cols = [
            F.col(ITEM_IDX).cast("int").alias(ITEM_IDX),
            F.col(FEATURES).cast("array<float>").alias(FEATURES),
        ]
        if item_bias_col:
            cols.append(F.col(item_bias_col).cast("float").alias("bias"))
        pdf = item_factors.select(*cols).toPandas()
        idx = pdf[ITEM_IDX].to_numpy()
        if len(pdf) and (idx.min() < 0 or idx.max() >= n_items):
            bad = idx[(idx < 0) | (idx >= n_items)]
            raise DataValidationError(
                f"item_factors: {bad.size} item_idx value(s) outside 0..{n_items - 1} "
                f"(first: {int(bad[0])}); pass the n_items the model was trained with."
            )
        if len(np.unique(idx)) != len(idx):
            raise DataValidationError(
                f"item_factors: {len(idx) - len(np.unique(idx))} duplicate item_idx row(s); "
                "expected one factor row per item."
            )
        lengths = {len(v) for v in pdf[FEATURES]}
        if len(lengths) > 1:
            raise DataValidationError(
                f"item_factors: features arrays have different lengths {sorted(lengths)}; "
                "expected one rank for every item."
            )
        n_factors = lengths.pop() if lengths else 0
        vectors = np.zeros((n_items, n_factors), dtype=np.float32)
        if len(pdf):
            vectors[idx] = np.stack(pdf[FEATURES].to_numpy()).astype(np.float32)
        bias = None
        if item_bias_col:
            bias = np.zeros(n_items, dtype=np.float32)
            bias[idx] = pdf["bias"].fillna(0.0).to_numpy(dtype=np.float32)
        if len(idx) < n_items:
            log.warning(
                "FactorScorer: %d of %d items have no factor row; they score 0 for every user",
                n_items - len(idx),
                n_items,
            )
        return cls(vectors, user_factors, item_bias=bias)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self._local if self._local is not None else self._broadcast.value

    @property
    def item_vectors(self) -> npt.NDArray[np.float32]:
        """Item matrix, float32 [n_items, n_factors]."""
        return self._arrays()[0]

    @property
    def item_bias(self) -> npt.NDArray[np.float32] | None:
        """Item bias, float32 [n_items], or None."""
        return self._arrays()[1]

    def score_block(
        self,
        user_idx: npt.NDArray[np.integer],
        user_vectors: npt.NDArray[np.float32] | None,
    ) -> npt.NDArray[np.float32]:
        """``user_vectors @ item_vectors.T (+ item_bias)`` as one float32 GEMM."""
        vectors, bias = self._arrays()
        if user_vectors is None:
            user_vectors = np.zeros((len(user_idx), self.n_factors), dtype=np.float32)
        scores = np.asarray(user_vectors, dtype=np.float32) @ vectors.T
        if bias is not None:
            scores += bias
        return scores

    def bound_index(self) -> BoundIndex:
        """The item side for bounded top-k, built once per Python process and item matrix (a task reuses its worker's)."""
        vectors, bias = self._arrays()
        cached = _BOUND_INDEX.get("last")
        if cached is None or cached[0] is not vectors:
            cached = (vectors, BoundIndex(vectors, bias))
            _BOUND_INDEX["last"] = cached
        return cached[1]

    def unpersist(self, blocking: bool = False) -> None:
        """Free the broadcast item matrix on executors (it is re-sent if used again)."""
        self._broadcast.unpersist(blocking)
