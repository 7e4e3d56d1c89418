"""Distributed ranking evaluation and top-N recommendation for any :class:`Scorer`.

Both entry points run the same executor-side loop, with nothing proportional
to the number of users or interactions ever reaching the driver:

1. Spark groups each user's train items, test items and (when the scorer has
   them) user factors into one row, with a single shuffle (``_user_table``).
2. ``mapInArrow`` walks the Arrow batches in blocks of users whose score matrix
   fits a memory budget (``_BLOCK_BUDGET_ELEMENTS`` float32 values). Each block
   is scored with one call to ``Scorer.score_block`` (a BLAS GEMM against the
   broadcast item matrix for factor models); training items are masked to
   ``-inf`` when excluded.
3. :func:`evaluate` ranks the held-out items without sorting
   (:func:`~recspark.evaluation.metrics.item_ranks`), computes per-user metrics
   and emits one row of sums per batch; a Spark ``agg`` adds them up and only
   the means come back. :func:`recommend` takes each row's top k
   (:func:`~recspark.evaluation.metrics.top_k`) and emits one row per item.

Determinism: ranks use the total order (score desc, item_idx asc), and metric
sums are accumulated in fixed point (``round(value * 2**32)`` as int64), which
is associative, so the numbers do not depend on partitioning or block size.
Scores themselves come from BLAS; a BLAS that rounds a row differently
depending on block shape could flip items whose scores differ in the last
bit (not exercised by the tests, whose scores are either exact or well apart).

Example (driver side; factors from a fitted model)::

    scorer = FactorScorer.from_dataframes(user_factors, item_factors, n_items)
    report = evaluate(scorer, train, test, ks=(5, 10))
    baselines = evaluate_baselines(train, test, n_items, seed=0, ks=(5, 10))
    recs = with_original_ids(recommend(scorer, train, k=10), user_map, item_map)
    recs.write.parquet(path)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.data.columns import FEATURES, ITEM_ID, ITEM_IDX, RANK, SCORE, USER_ID, USER_IDX
from recspark.errors import ConfigError, DataValidationError, ModelFitError
from recspark.evaluation.metrics import item_ranks, ranking_metrics, top_k
from recspark.models.baselines import PopularityScorer, RandomScorer
from recspark.models.scoring import FactorScorer, Scorer

log = logging.getLogger(__name__)

__all__ = ["evaluate", "evaluate_baselines", "evaluate_cold_items", "metric_names", "recommend", "with_original_ids"]

#: Float32 scores held per block (2**23 values = 32 MiB): block rows are
#: ``max(1, budget // n_items)`` unless ``block_size`` is given.
_BLOCK_BUDGET_ELEMENTS = 2**23
#: Per-user metrics are summed as ``round(value * 2**32)`` in int64 (exact and
#: order-independent; overflows only past 2**31 evaluated users).
_FIXED_POINT_SCALE = float(2**32)

_TRAIN_ITEMS = "train_items"
_TEST_ITEMS = "test_items"
_N_FACTOR_ROWS = "_n_factor_rows"
_COUNTERS = (
    "n_users",            # users with >= 1 valid test item (the metric denominator)
    "n_missing_factors",  # evaluated users scored with a zero vector
    "n_bad_test_items",   # test item_idx outside 0..n_items-1
    "n_bad_train_items",  # train item_idx outside 0..n_items-1
    "n_overlap",          # (user, item) pairs present in both train and test
    "n_nonfinite_users",  # users whose score row had NaN/inf
    "n_duplicate_factors",  # users with more than one user_factors row
)


def metric_names(ks: Sequence[int] = (5, 10)) -> list[str]:
    """Metric keys :func:`evaluate` reports for cut-offs ``ks``, in report order.

    Examples
    --------
    >>> metric_names((5,))
    ['precision_at_5', 'recall_at_5', 'ndcg_at_5', 'map_at_5', 'mrr', 'auc']
    """
    names = []
    for k in ks:
        names += [f"precision_at_{k}", f"recall_at_{k}", f"ndcg_at_{k}", f"map_at_{k}"]
    return names + ["mrr", "auc"]


# --------------------------------------------------------------------------- #
# Validation and Spark-side preparation
# --------------------------------------------------------------------------- #


def _require_columns(df: DataFrame, name: str, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{name}: missing column(s) {missing}; found {df.columns}. Expected the "
            f"indexed interaction schema ({USER_IDX} int, {ITEM_IDX} int, ...)."
        )


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(
        isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks
    ):
        raise ConfigError(f"evaluation.ks must be a non-empty list of integers >= 1, got {ks!r}")
    ks = tuple(int(k) for k in ks)
    if len(set(ks)) != len(ks):
        raise ConfigError(f"evaluation.ks has duplicates: {ks!r}")
    return ks


def _block_rows(n_items: int, block_size: int | None) -> int:
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ConfigError(f"block_size must be an integer >= 1 or None, got {block_size!r}")
        return block_size
    return max(1, _BLOCK_BUDGET_ELEMENTS // max(n_items, 1))


def _user_table(
    scorer: Scorer,
    train: DataFrame,
    test: DataFrame | None = None,
    users: DataFrame | None = None,
) -> DataFrame:
    """One row per target user with item arrays and factors, built with a single shuffle.

    Train rows, test rows, the scorer's user factors and the requested users are
    unioned with a source tag and grouped once by ``user_idx`` (rather than
    grouping each side and joining), because every shuffle costs a stage.
    ``collect_list`` skips the nulls that ``when`` produces for other sources.

    Target users: those with test items when ``test`` is given, else ``users``
    when given, else the users of ``train``.
    """
    src, item = "_src", ITEM_IDX
    null_vec = F.lit(None).cast("array<float>").alias(FEATURES)

    def tagged(df: DataFrame, tag: int, with_items: bool = True) -> DataFrame:
        return df.select(
            F.col(USER_IDX).cast("int").alias(USER_IDX),
            (F.col(ITEM_IDX).cast("int") if with_items else F.lit(None).cast("int")).alias(item),
            F.lit(tag).alias(src),
            null_vec,
        )

    parts = [tagged(train, 0)]
    if test is not None:
        parts.append(tagged(test, 1))
    if users is not None:
        parts.append(tagged(users, 2, with_items=False))
    if scorer.user_factors is not None:
        parts.append(
            scorer.user_factors.select(
                F.col(USER_IDX).cast("int").alias(USER_IDX),
                F.lit(None).cast("int").alias(item),
                F.lit(3).alias(src),
                F.col(FEATURES).cast("array<float>").alias(FEATURES),
            )
        )
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    aggs = [
        F.collect_list(F.when(F.col(src) == 0, F.col(item))).alias(_TRAIN_ITEMS),
        F.collect_list(F.when(F.col(src) == 1, F.col(item))).alias(_TEST_ITEMS),
        F.max((F.col(src) == 2).cast("int")).alias("_requested"),
    ]
    if scorer.user_factors is not None:
        aggs += [
            F.first(F.col(FEATURES), ignorenulls=True).alias(FEATURES),
            F.count(F.col(FEATURES)).alias(_N_FACTOR_ROWS),
        ]
    grouped = union.groupBy(USER_IDX).agg(*aggs)
    if test is not None:
        grouped = grouped.filter(F.size(_TEST_ITEMS) > 0)
    elif users is not None:
        grouped = grouped.filter(F.col("_requested") == 1)
    else:
        grouped = grouped.filter(F.size(_TRAIN_ITEMS) > 0)
    return grouped.drop("_requested")


# --------------------------------------------------------------------------- #
# Executor-side helpers (Arrow batch -> NumPy)
# --------------------------------------------------------------------------- #


def _list_csr(arr: pa.Array, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """A list Arrow column as (flat values of ``dtype``, int64 indptr); null lists are empty."""
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    values = arr.flatten()
    if values.null_count:
        raise DataValidationError(f"{values.null_count} null value(s) inside list column")
    indptr = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False), indptr


def _user_vectors(arr: pa.Array, n_factors: int) -> tuple[np.ndarray, np.ndarray]:
    """Features column as float32 [n, n_factors]; null rows become zeros (returned mask)."""
    values, indptr = _list_csr(arr.cast(pa.list_(pa.float32())), np.float32)
    lengths = np.diff(indptr)
    missing = lengths == 0
    if np.any(lengths[~missing] != n_factors):
        bad = int(lengths[~missing][lengths[~missing] != n_factors][0])
        raise DataValidationError(
            f"user_factors: a features vector has length {bad}, expected {n_factors} "
            "(the item factors' rank)"
        )
    out = np.zeros((len(arr), n_factors), dtype=np.float32)
    out[~missing] = values.reshape(-1, n_factors) if n_factors else 0.0
    return out, missing


def _block_keys(items: np.ndarray, indptr: np.ndarray, start: int, stop: int, n_items: int):
    """Unique ``row * n_items + item`` keys of a block, plus the count of out-of-range items."""
    flat = items[indptr[start] : indptr[stop]]
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(indptr[start : stop + 1]))
    valid = (flat >= 0) & (flat < n_items)
    keys = np.unique(rows[valid] * n_items + flat[valid])
    return keys, int(np.count_nonzero(~valid))


def _score(scorer: Scorer, users: np.ndarray, vectors: np.ndarray | None) -> np.ndarray:
    scores = scorer.score_block(users, vectors)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (len(users), scorer.n_items):
        raise ModelFitError(
            f"{type(scorer).__name__}.score_block returned shape {scores.shape}, expected "
            f"({len(users)}, {scorer.n_items})"
        )
    if not (scores.flags.c_contiguous and scores.flags.writeable):
        scores = np.array(scores, dtype=np.float32, order="C")
    return scores


def _evaluate_batches(
    batches: Iterator[pa.RecordBatch],
    scorer: Scorer,
    ks: tuple[int, ...],
    exclude_train: bool,
    block_rows: int,
) -> Iterator[pa.RecordBatch]:
    n_items = scorer.n_items
    names = metric_names(ks)
    for batch in batches:
        has_factors = FEATURES in batch.schema.names
        users = batch.column(USER_IDX).to_numpy(zero_copy_only=False).astype(np.int64)
        test_items, test_ptr = _list_csr(batch.column(_TEST_ITEMS))
        train_items, train_ptr = _list_csr(batch.column(_TRAIN_ITEMS))
        if has_factors:
            vectors, missing = _user_vectors(batch.column(FEATURES), scorer.n_factors)
        else:
            vectors, missing = None, np.zeros(len(users), dtype=bool)
        counts = dict.fromkeys(_COUNTERS, 0)
        if _N_FACTOR_ROWS in batch.schema.names:
            factor_rows = batch.column(_N_FACTOR_ROWS).to_numpy(zero_copy_only=False)
            counts["n_duplicate_factors"] = int(np.count_nonzero(factor_rows > 1))
        sums = dict.fromkeys(names, 0)
        for start in range(0, len(users), block_rows):
            stop = min(start + block_rows, len(users))
            n_block = stop - start
            scores = _score(
                scorer, users[start:stop], None if vectors is None else vectors[start:stop]
            )
            bad_rows = ~np.isfinite(scores).all(axis=1)
            test_keys, n_bad = _block_keys(test_items, test_ptr, start, stop, n_items)
            train_keys, n_bad_train = _block_keys(train_items, train_ptr, start, stop, n_items)
            overlap = np.isin(test_keys, train_keys, assume_unique=True)
            counts["n_bad_test_items"] += n_bad
            counts["n_bad_train_items"] += n_bad_train
            counts["n_overlap"] += int(np.count_nonzero(overlap))
            test_keys = test_keys[~overlap]  # reported as an error after the aggregation
            if exclude_train:
                scores.reshape(-1)[train_keys] = -np.inf
                n_eligible = n_items - np.bincount(train_keys // n_items, minlength=n_block)
            else:
                n_eligible = np.full(n_block, n_items, dtype=np.int64)
            rows, items = test_keys // n_items, test_keys % n_items
            n_test = np.bincount(rows, minlength=n_block)
            evaluated = n_test > 0
            if not np.any(evaluated):
                continue
            ranks = item_ranks(scores, rows, items)
            indptr = np.concatenate([[0], np.cumsum(n_test[evaluated])])
            per_user = ranking_metrics(ranks, indptr, n_eligible[evaluated], ks)
            for name in names:
                fixed = np.rint(per_user[name] * _FIXED_POINT_SCALE).astype(np.int64)
                sums[name] += int(fixed.sum())
            counts["n_users"] += int(np.count_nonzero(evaluated))
            counts["n_missing_factors"] += int(np.count_nonzero(missing[start:stop][evaluated]))
            counts["n_nonfinite_users"] += int(np.count_nonzero(bad_rows[evaluated]))
        yield pa.RecordBatch.from_pydict(
            {**{c: [v] for c, v in counts.items()}, **{n: [v] for n, v in sums.items()}},
            schema=_sums_arrow_schema(names),
        )


def _sums_arrow_schema(names: Sequence[str]) -> pa.Schema:
    return pa.schema([(c, pa.int64()) for c in (*_COUNTERS, *names)])


def _sums_spark_schema(names: Sequence[str]) -> T.StructType:
    return T.StructType([T.StructField(c, T.LongType()) for c in (*_COUNTERS, *names)])


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def evaluate(
    scorer: Scorer,
    train: DataFrame,
    test: DataFrame,
    *,
    ks: Sequence[int] = (5, 10),
    exclude_train: bool = True,
    block_size: int | None = None,
) -> dict[str, float]:
    """Mean ranking metrics over all test users, computed on executors.

    Each user's held-out items (all their ``test`` rows, duplicates counted
    once, ``weight`` ignored) are ranked among all ``n_items`` items, minus the
    user's training items when ``exclude_train`` -- a model should not get
    credit or blame for re-recommending what the user already has. Ties are
    broken by item index, consistently with :func:`recommend`.

    Parameters
    ----------
    scorer : Scorer
        The model (:class:`~recspark.models.scoring.FactorScorer`) or a baseline.
    train, test : DataFrame
        Disjoint interactions with ``user_idx`` int and ``item_idx`` int.
    ks : sequence of int
        Cut-offs for precision/recall/NDCG/MAP.
    exclude_train : bool
        Drop each user's training items from the ranking (default). ``False``
        reproduces the seed project's numbers, which ranked them too.
    block_size : int, optional
        Users scored per BLAS call; default keeps a block's score matrix near
        32 MiB (``max(1, 2**23 // n_items)`` users).

    Returns
    -------
    dict of str to float
        ``precision_at_{k}``, ``recall_at_{k}``, ``ndcg_at_{k}``, ``map_at_{k}``
        for each k, ``mrr``, ``auc`` (exact, per user then averaged),
        ``n_users_evaluated`` (test users with at least one item) and
        ``n_users_without_factors`` (test users absent from
        ``scorer.user_factors``; they are scored with a zero vector, i.e. by
        item bias alone, and still counted -- a warning is logged).

    Raises
    ------
    DataValidationError
        Missing columns, an item index outside ``0..n_items-1``, train/test
        overlap, or no test users.
    ModelFitError
        The scorer produced NaN/inf scores.

    Notes
    -----
    Overlapping train/test pairs are refused in both ``exclude_train`` modes.
    Means are exact to about 1e-10 (fixed-point sums, see the module docstring).
    Only O(1) values per Arrow batch leave the executors; the driver receives
    a single aggregated row.
    """
    ks = _check_ks(ks)
    _require_columns(train, "train", (USER_IDX, ITEM_IDX))
    _require_columns(test, "test", (USER_IDX, ITEM_IDX))
    block_rows = _block_rows(scorer.n_items, block_size)
    names = metric_names(ks)

    users = _user_table(scorer, train, test=test)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _evaluate_batches(batches, scorer, ks, exclude_train, block_rows)

    partial = users.mapInArrow(run, _sums_spark_schema(names))
    row = partial.agg(*[F.sum(c).alias(c) for c in (*_COUNTERS, *names)]).first()
    totals = {c: int(row[c] or 0) for c in (*_COUNTERS, *names)}

    n_items = scorer.n_items
    if totals["n_bad_test_items"] or totals["n_bad_train_items"]:
        raise DataValidationError(
            f"{totals['n_bad_test_items']} test and {totals['n_bad_train_items']} train "
            f"item_idx value(s) are outside 0..{n_items - 1}; the scorer was built for "
            f"n_items={n_items}. Index train and test with the same item map."
        )
    if totals["n_duplicate_factors"]:
        raise DataValidationError(
            f"scorer.user_factors has more than one row for {totals['n_duplicate_factors']} "
            "test user(s); expected one factor row per user_idx."
        )
    if totals["n_overlap"]:
        raise DataValidationError(
            f"train and test share {totals['n_overlap']} (user_idx, item_idx) pair(s); "
            "refusing to evaluate on overlapping splits. Re-split (recspark.data.split) "
            "so that each pair is in one side only."
        )
    if totals["n_nonfinite_users"]:
        raise ModelFitError(
            f"{type(scorer).__name__} produced NaN/inf scores for "
            f"{totals['n_nonfinite_users']} test user(s); the model diverged -- refit with a "
            "lower learning rate or stronger regularisation."
        )
    n_users = totals["n_users"]
    if n_users == 0:
        raise DataValidationError("test has no users with items; nothing to evaluate.")
    if totals["n_missing_factors"]:
        log.warning(
            "%d of %d test users have no user factors; scored with a zero vector",
            totals["n_missing_factors"],
            n_users,
        )
    report = {name: totals[name] / _FIXED_POINT_SCALE / n_users for name in names}
    report["n_users_evaluated"] = float(n_users)
    report["n_users_without_factors"] = float(totals["n_missing_factors"])
    log.info(
        "evaluate %s (exclude_train=%s): %s",
        type(scorer).__name__,
        exclude_train,
        ", ".join(f"{k}={v:.4f}" for k, v in report.items()),
    )
    return report


def evaluate_baselines(
    train: DataFrame,
    test: DataFrame,
    n_items: int,
    *,
    seed: int = 0,
    ks: Sequence[int] = (5, 10),
    exclude_train: bool = True,
    block_size: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate the popularity and random baselines on exactly the given split.

    Call this with the same ``train``/``test``/``ks``/``exclude_train`` as the
    model's :func:`evaluate`, so the three reports are comparable.

    Returns
    -------
    dict
        ``{"popularity": report, "random": report}``, each as from :func:`evaluate`.
    """
    popularity = PopularityScorer.fit(train, n_items)
    try:
        scorers: dict[str, Scorer] = {
            "popularity": popularity,
            "random": RandomScorer(n_items, seed=seed),
        }
        return {
            name: evaluate(
                scorer, train, test, ks=ks, exclude_train=exclude_train, block_size=block_size
            )
            for name, scorer in scorers.items()
        }
    finally:
        popularity.unpersist()


def _recommend_batches(
    batches: Iterator[pa.RecordBatch],
    scorer: Scorer,
    k: int,
    exclude_train: bool,
    block_rows: int,
) -> Iterator[pa.RecordBatch]:
    n_items = scorer.n_items
    for batch in batches:
        users = batch.column(USER_IDX).to_numpy(zero_copy_only=False).astype(np.int64)
        if exclude_train:
            train_items, train_ptr = _list_csr(batch.column(_TRAIN_ITEMS))
        vectors = None
        if _N_FACTOR_ROWS in batch.schema.names:
            factor_rows = batch.column(_N_FACTOR_ROWS).to_numpy(zero_copy_only=False)
            if np.any(factor_rows > 1):
                raise DataValidationError(
                    f"scorer.user_factors has more than one row for "
                    f"{int(np.count_nonzero(factor_rows > 1))} user(s); expected one per user_idx"
                )
        if FEATURES in batch.schema.names:
            vectors, _ = _user_vectors(batch.column(FEATURES), scorer.n_factors)
        for start in range(0, len(users), block_rows):
            stop = min(start + block_rows, len(users))
            scores = _score(
                scorer, users[start:stop], None if vectors is None else vectors[start:stop]
            )
            if not np.isfinite(scores).all():
                raise ModelFitError(
                    f"{type(scorer).__name__} produced NaN/inf scores; the model diverged -- "
                    "refit with a lower learning rate or stronger regularisation."
                )
            if exclude_train:
                keys, n_bad = _block_keys(train_items, train_ptr, start, stop, n_items)
                if n_bad:
                    raise DataValidationError(
                        f"train has {n_bad} item_idx value(s) outside 0..{n_items - 1}; "
                        "index train with the item map the model was trained on."
                    )
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
        Users scored per BLAS call (see :func:`evaluate`).

    Returns
    -------
    DataFrame
        ``user_idx`` int, ``rank`` int (1-based), ``item_idx`` int,
        ``score`` float; per user, ranks are ``1..k`` in order of score
        descending, ties broken by ``item_idx`` ascending.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an integer >= 1, got {k!r}")
    _require_columns(train, "train", (USER_IDX, ITEM_IDX))
    block_rows = _block_rows(scorer.n_items, block_size)
    if users is not None:
        _require_columns(users, "users", (USER_IDX,))
    targets = _user_table(scorer, train, users=users)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return _recommend_batches(batches, scorer, k, exclude_train, block_rows)

    return targets.mapInArrow(run, _RECS_SCHEMA)


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
    _require_columns(user_map, "user_map", (USER_ID, USER_IDX))
    _require_columns(item_map, "item_map", (ITEM_ID, ITEM_IDX))
    return (
        recs.join(user_map.select(USER_ID, USER_IDX), on=USER_IDX, how="left")
        .join(F.broadcast(item_map.select(ITEM_ID, ITEM_IDX)), on=ITEM_IDX, how="left")
        .select(USER_ID, RANK, ITEM_ID, SCORE)
    )


def evaluate_cold_items(
    item_vectors: np.ndarray,
    item_bias: np.ndarray | None,
    user_factors: DataFrame,
    test: DataFrame,
    cold_items: np.ndarray,
    *,
    ks: Sequence[int] = (5, 10),
) -> dict[str, float]:
    """Cold-start metrics: each test user's held-out items ranked among the ``cold_items`` only.

    After :func:`recspark.data.split.item_holdout_split` the test items were
    never seen in training; ranking them against warm items would measure
    popularity, not whether features place a new item near the right users.
    So the candidates are the cold items alone (re-indexed 0..n-1 here), as
    in LightFM's cold-start evaluation; metrics are as :func:`evaluate`.

    Parameters
    ----------
    item_vectors, item_bias : ndarray
        The model's item representations over all items (rows = ``item_idx``).
    user_factors : DataFrame
        ``user_idx``, ``features`` (the model's user representations).
    test : DataFrame
        ``user_idx``, ``item_idx`` of cold items only.
    cold_items : ndarray of int
        The held-out item indices.
    """
    cold_items = np.asarray(cold_items, dtype=np.int64)
    spark = test.sparkSession
    lookup = spark.createDataFrame(pd.DataFrame({ITEM_IDX: cold_items.astype(np.int32),
                                                 "_cold_idx": np.arange(cold_items.size, dtype=np.int32)}),
                                   f"{ITEM_IDX} int, _cold_idx int")
    cold_test = (test.join(F.broadcast(lookup), ITEM_IDX)
                 .select(USER_IDX, F.col("_cold_idx").alias(ITEM_IDX)).cache())
    scorer = FactorScorer(item_vectors[cold_items], user_factors,
                          item_bias=None if item_bias is None else item_bias[cold_items])
    try:
        return evaluate(scorer, cold_test.limit(0), cold_test, ks=ks, exclude_train=False)
    finally:
        scorer.unpersist()
        cold_test.unpersist()
