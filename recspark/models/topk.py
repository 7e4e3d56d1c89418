"""Top-N recommendation for any :class:`~recspark.models.scoring.Scorer`, on executors.

Top-k is a model operation (the estimator, the products job and publishing all
use it), so it lives here rather than in evaluation. :func:`recommend` scores
blocks of users (:mod:`recspark.models.blocks`) and takes each row's
:func:`top_k` in the same total order as evaluation's ranks (score descending,
then ``item_idx`` ascending), so "rank < k" in a metric means "in the top-k list".

Example (driver side; factors from a fitted model)::

    scorer = FactorScorer.from_dataframes(user_factors, item_factors, n_items)
    recs = with_original_ids(recommend(scorer, train, k=10), user_map, item_map)
    recs.write.parquet(path)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.data.columns import FEATURES, ITEM_ID, ITEM_IDX, RANK, SCORE, USER_ID, USER_IDX
from recspark.errors import ConfigError, DataValidationError, ModelFitError
from recspark.models.blocks import (
    N_FACTOR_ROWS,
    TRAIN_ITEMS,
    block_keys,
    checked_scores,
    list_csr,
    require_columns,
    rows_per_block,
    task_blas_threads,
    user_table,
    user_vectors,
)
from recspark.models.pruning import CHUNK_ITEMS, BoundIndex
from recspark.models.scoring import Scorer
from recspark.models.selection import finite_rows, top_k

__all__ = ["recommend", "recommend_users", "with_original_ids"]


#: Users per block of a bounded top-k count as this many items each (its chunk and spare):
#: 512 users per block, measured best on the 20M run's models (``bench_scoring.py --model``).
BOUNDED_BLOCK_ITEMS = 8 * CHUNK_ITEMS


def _diverged(scorer: Scorer) -> ModelFitError:
    return ModelFitError(
        f"{type(scorer).__name__} produced NaN/inf scores; the model diverged -- "
        "refit with a lower learning rate or stronger regularisation."
    )


def _finite_scores(scorer: Scorer, users: np.ndarray, vectors: np.ndarray | None) -> np.ndarray:
    scores = checked_scores(scorer, users, vectors)
    if not finite_rows(scores).all():
        raise _diverged(scorer)
    return scores


def _check_items(items: np.ndarray, n_items: int) -> None:
    n_bad = int(np.count_nonzero((items < 0) | (items >= n_items)))
    if n_bad:
        raise DataValidationError(
            f"train has {n_bad} item_idx value(s) outside 0..{n_items - 1}; "
            "index train with the item map the model was trained on."
        )


def _bounded_top_k(
    index: BoundIndex, scorer: Scorer, vectors: np.ndarray, k: int, items: np.ndarray, indptr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`BoundIndex.top_k` for a block (``indptr`` slices ``items``), with scoring's divergence check."""
    top_items, top_scores = index.top_k(vectors, k, items[indptr[0]:indptr[-1]], indptr - indptr[0])
    if not (finite_rows(vectors).all() and finite_rows(np.where(top_scores == -np.inf, 0, top_scores)).all()):
        raise _diverged(scorer)
    return top_items, top_scores


def _recommend_batches(
    batches: Iterator[pa.RecordBatch],
    scorer: Scorer,
    k: int,
    exclude_train: bool,
    block_size: int | None,
) -> Iterator[pa.RecordBatch]:
    n_items = scorer.n_items
    index = scorer.bound_index()
    # A bounded top-k holds one chunk of scores per user, not a row of every item.
    block_rows = rows_per_block(n_items if index is None else BOUNDED_BLOCK_ITEMS, block_size)
    for batch in batches:
        users = batch.column(USER_IDX).to_numpy(zero_copy_only=False).astype(np.int64)
        if exclude_train:
            train_items, train_ptr = list_csr(batch.column(TRAIN_ITEMS))
        vectors = None
        if N_FACTOR_ROWS in batch.schema.names:
            factor_rows = batch.column(N_FACTOR_ROWS).to_numpy(zero_copy_only=False)
            if np.any(factor_rows > 1):
                raise DataValidationError(
                    f"scorer.user_factors has more than one row for "
                    f"{int(np.count_nonzero(factor_rows > 1))} user(s); expected one per user_idx"
                )
        if FEATURES in batch.schema.names:
            vectors, _ = user_vectors(batch.column(FEATURES), scorer.n_factors)
        for start in range(0, len(users), block_rows):
            stop = min(start + block_rows, len(users))
            if exclude_train:
                _check_items(train_items[train_ptr[start]:train_ptr[stop]], n_items)
            if index is not None and vectors is not None:
                excluded = (train_items, train_ptr[start:stop + 1]) if exclude_train else (
                    np.empty(0, dtype=np.int64), np.zeros(stop - start + 1, dtype=np.int64))
                items, vals = _bounded_top_k(index, scorer, vectors[start:stop], k, *excluded)
            else:
                scores = _finite_scores(
                    scorer, users[start:stop], None if vectors is None else vectors[start:stop]
                )
                if exclude_train:
                    keys, _ = block_keys(train_items, train_ptr, start, stop, n_items)
                    scores.reshape(-1)[keys] = -np.inf
                items, vals = top_k(scores, k)
            keep = vals > -np.inf  # users with fewer than k unseen items get fewer rows
            n_block, width = items.shape
            ranks = np.broadcast_to(np.arange(1, width + 1, dtype=np.int32), (n_block, width))
            user_col = np.broadcast_to(users[start:stop, None], (n_block, width))
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(user_col[keep].astype(np.int32)),
                    pa.array(ranks[keep]),
                    pa.array(items[keep].astype(np.int32)),
                    pa.array(vals[keep].astype(np.float32)),
                ],
                names=[USER_IDX, RANK, ITEM_IDX, SCORE],
            )


_RECS_SCHEMA = T.StructType(
    [
        T.StructField(USER_IDX, T.IntegerType()),
        T.StructField(RANK, T.IntegerType()),
        T.StructField(ITEM_IDX, T.IntegerType()),
        T.StructField(SCORE, T.FloatType()),
    ]
)


def recommend(
    scorer: Scorer,
    train: DataFrame,
    *,
    k: int = 10,
    users: DataFrame | None = None,
    exclude_train: bool = True,
    block_size: int | None = None,
) -> DataFrame:
    """Top-``k`` items for every user, excluding items they already have.

    Lazy: returns a DataFrame plan; nothing runs until it is written or counted.

    Parameters
    ----------
    scorer : Scorer
        Model or baseline.
    train : DataFrame
        ``user_idx`` int, ``item_idx`` int: the seen items, and (when ``users``
        is None) the set of users to recommend for.
    k : int
        Items per user. Users with fewer than ``k`` unseen items get fewer rows.
    users : DataFrame, optional
        A ``user_idx`` column restricting the output to these users (may include
        users absent from ``train``; users absent from ``scorer.user_factors``
        are scored with a zero vector, i.e. by item bias / index alone).
    exclude_train : bool
        Drop each user's training items (default).
    block_size : int, optional
        Users scored per BLAS call (see :func:`~recspark.models.blocks.rows_per_block`).

    Returns
    -------
    DataFrame
        ``user_idx`` int, ``rank`` int (1-based), ``item_idx`` int,
        ``score`` float; per user, ranks are ``1..k`` in order of score
        descending, ties broken by ``item_idx`` ascending.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    require_columns(train, "train", (USER_IDX, ITEM_IDX))
    rows_per_block(scorer.n_items, block_size)  # checks block_size on the driver
    if users is not None:
        require_columns(users, "users", (USER_IDX,))
    targets = user_table(scorer, train, users=users)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with task_blas_threads():
            yield from _recommend_batches(batches, scorer, k, exclude_train, block_size)

    return targets.mapInArrow(run, _RECS_SCHEMA)


def _top_users_batches(
    batches: Iterator[pa.RecordBatch], scorer: Scorer, k: int, items: np.ndarray, block_rows: int
) -> Iterator[pa.RecordBatch]:
    """This partition's top-``k`` users of each item in ``items``: a running top-k over user blocks."""
    best_users = np.empty((len(items), 0), dtype=np.int64)
    best_scores = np.empty((len(items), 0), dtype=np.float32)
    for batch in batches:
        users = batch.column(USER_IDX).to_numpy(zero_copy_only=False).astype(np.int64)
        vectors, _ = user_vectors(batch.column(FEATURES), scorer.n_factors)
        for start in range(0, len(users), block_rows):
            stop = min(start + block_rows, len(users))
            scores = _finite_scores(scorer, users[start:stop], vectors[start:stop])[:, items].T
            candidates = np.hstack([best_users, np.broadcast_to(users[start:stop], scores.shape)])
            cols, best_scores = top_k(np.hstack([best_scores, scores]), k)
            best_users = np.take_along_axis(candidates, cols, axis=1)
    if best_users.size:
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(np.repeat(items, best_users.shape[1]).astype(np.int32)),
                pa.array(best_users.reshape(-1).astype(np.int32)),
                pa.array(best_scores.reshape(-1).astype(np.float32)),
            ],
            names=[ITEM_IDX, USER_IDX, SCORE],
        )


def recommend_users(
    scorer: Scorer,
    *,
    k: int = 10,
    items: npt.NDArray[np.integer] | None = None,
    block_size: int | None = None,
) -> DataFrame:
    """Top-``k`` users for every item (or the item indices ``items``): ALS's ``recommendForAllItems``.

    The users stay distributed (only the item side is broadcast, as for
    :func:`recommend`): each partition of ``scorer.user_factors`` keeps a
    running top-``k`` per item over its blocks of users, and one shuffle of
    O(partitions x items x k) rows merges them.

    Returns
    -------
    DataFrame
        ``item_idx`` int, ``rank`` int (1-based), ``user_idx`` int, ``score``
        float; per item, score descending, ties broken by ``user_idx`` ascending.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    if scorer.user_factors is None:
        raise ConfigError(f"{type(scorer).__name__} has no user factors to rank users by")
    targets = np.arange(scorer.n_items) if items is None else np.unique(np.asarray(items, dtype=np.int64))
    block_rows = rows_per_block(scorer.n_items, block_size)
    schema = T.StructType([T.StructField(ITEM_IDX, T.IntegerType()), T.StructField(USER_IDX, T.IntegerType()),
                           T.StructField(SCORE, T.FloatType())])

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with task_blas_threads():
            yield from _top_users_batches(batches, scorer, k, targets, block_rows)

    candidates = scorer.user_factors.select(USER_IDX, FEATURES).mapInArrow(run, schema)
    order = Window.partitionBy(ITEM_IDX).orderBy(F.col(SCORE).desc(), F.col(USER_IDX))
    ranked = candidates.withColumn(RANK, F.row_number().over(order))
    return ranked.where(F.col(RANK) <= k).select(ITEM_IDX, RANK, USER_IDX, SCORE)


def with_original_ids(recs: DataFrame, user_map: DataFrame, item_map: DataFrame) -> DataFrame:
    """Replace internal indices in ``recs`` by the external ids, for publishing.

    Parameters
    ----------
    recs : DataFrame
        Output of :func:`recommend`.
    user_map : DataFrame
        ``user_id``, ``user_idx`` (from :mod:`recspark.data.indexing`).
    item_map : DataFrame
        ``item_id``, ``item_idx``; O(n_items), so it is broadcast-joined.

    Returns
    -------
    DataFrame
        ``user_id``, ``rank``, ``item_id``, ``score``. Left joins: an index missing
        from a map yields a null id rather than silently dropping the row.
    """
    require_columns(user_map, "user_map", (USER_ID, USER_IDX))
    require_columns(item_map, "item_map", (ITEM_ID, ITEM_IDX))
    return (
        recs.join(user_map.select(USER_ID, USER_IDX), on=USER_IDX, how="left")
        .join(F.broadcast(item_map.select(ITEM_ID, ITEM_IDX)), on=ITEM_IDX, how="left")
        .select(USER_ID, RANK, ITEM_ID, SCORE)
    )
