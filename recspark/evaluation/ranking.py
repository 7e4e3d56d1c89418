"""Distributed ranking evaluation for any :class:`Scorer`.

Nothing proportional to the number of users or interactions reaches the driver:

1. Spark groups each user's train items, test items and (when the scorer has
   them) user factors into one row, with a single shuffle
   (:func:`~recspark.models.blocks.user_table`, shared with top-k).
2. ``mapInArrow`` walks the Arrow batches in blocks of users whose score matrix
   fits a memory budget (``BLOCK_BUDGET_ELEMENTS`` float32 values). Each block
   is scored with one call to ``Scorer.score_block`` (a BLAS GEMM against the
   broadcast item matrix for factor models); training items are masked to
   ``-inf`` when excluded.
3. :func:`evaluate` ranks the held-out items without sorting
   (:func:`~recspark.models.selection.item_ranks`, compiled), computes per-user metrics
   and emits one row of sums per batch; a Spark ``agg`` adds them up and only
   the means come back. Top-N lists come from
   :func:`recspark.models.topk.recommend`, in the same order.

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
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.data.columns import FEATURES, ITEM_IDX, USER_IDX
from recspark.errors import ConfigError, DataValidationError, ModelFitError
from recspark.evaluation.metrics import chance_metrics, ranking_metrics, shared_order_ranks
from recspark.models.baselines import PopularityScorer, RandomScorer
from recspark.models.blocks import (
    N_FACTOR_ROWS,
    TEST_ITEMS,
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
from recspark.models.scoring import FactorScorer, Scorer
from recspark.models.selection import finite_rows, item_ranks

log = logging.getLogger(__name__)

__all__ = ["UserSample", "evaluate", "evaluate_baselines", "evaluate_cold_items", "metric_names"]

#: Per-user metrics are summed as ``round(value * 2**32)`` in int64 (exact and
#: order-independent; overflows only past 2**31 evaluated users).
_FIXED_POINT_SCALE = float(2**32)

_COUNTERS = (
    "n_users",            # users with >= 1 valid test item (the metric denominator)
    "n_missing_factors",  # evaluated users scored with a zero vector
    "n_bad_test_items",   # test item_idx outside 0..n_items-1
    "n_bad_train_items",  # train item_idx outside 0..n_items-1
    "n_overlap",          # (user, item) pairs present in both train and test
    "n_nonfinite_users",  # users whose score row had NaN/inf
    "n_duplicate_factors",  # users with more than one user_factors row
)


#: Hash buckets of a :class:`UserSample` (its fraction's resolution).
_SAMPLE_BUCKETS = 1_000_000


@dataclass(frozen=True)
class UserSample:
    """A seeded share of the test users, chosen by hashing ``user_idx``: the same users in every run and task.

    Evaluating a sample costs its share of the exact evaluation; the report
    then carries each metric's standard error (``<metric>_se``, from the
    per-user spread) beside the sample mean.
    """

    fraction: float
    seed: int = 0

    @classmethod
    def at_most(cls, max_users: int | None, n_users: int, seed: int = 0) -> UserSample | None:
        """About ``max_users`` of ``n_users`` test users, or None (exact) when they are not more."""
        if max_users is None or n_users <= max_users:
            return None
        return cls(max_users / n_users, seed)

    def keeps(self, user: Column) -> Column:
        """True for the users in the sample."""
        bucket = F.pmod(F.xxhash64(user.cast("int"), F.lit(self.seed)), F.lit(_SAMPLE_BUCKETS))
        return bucket < F.lit(max(1, round(self.fraction * _SAMPLE_BUCKETS)))


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
# Validation
# --------------------------------------------------------------------------- #


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


def _evaluate_batches(
    batches: Iterator[pa.RecordBatch],
    scorer: Scorer,
    ks: tuple[int, ...],
    exclude_train: bool,
    block_rows: int,
) -> Iterator[pa.RecordBatch]:
    n_items = scorer.n_items
    names = metric_names(ks)
    shared = scorer.shared_order()  # popularity: rank from one order, no scores
    chance = scorer.uniformly_random  # random: the exact expected metrics, no scores, no ranks
    for batch in batches:
        has_factors = FEATURES in batch.schema.names
        users = batch.column(USER_IDX).to_numpy(zero_copy_only=False).astype(np.int64)
        test_items, test_ptr = list_csr(batch.column(TEST_ITEMS))
        train_items, train_ptr = list_csr(batch.column(TRAIN_ITEMS))
        if has_factors:
            vectors, missing = user_vectors(batch.column(FEATURES), scorer.n_factors)
        else:
            vectors, missing = None, np.zeros(len(users), dtype=bool)
        counts = dict.fromkeys(_COUNTERS, 0)
        if N_FACTOR_ROWS in batch.schema.names:
            factor_rows = batch.column(N_FACTOR_ROWS).to_numpy(zero_copy_only=False)
            counts["n_duplicate_factors"] = int(np.count_nonzero(factor_rows > 1))
        sums = dict.fromkeys(names, 0)
        squares = dict.fromkeys(names, 0.0)  # for a sample's standard errors (float: need not be exact)
        ranked, held_out, eligible = [], [], []  # per block: ranks, and per evaluated user: n_test, n_eligible
        for start in range(0, len(users), block_rows):
            stop = min(start + block_rows, len(users))
            n_block = stop - start
            if shared is None and not chance:
                scores = checked_scores(
                    scorer, users[start:stop], None if vectors is None else vectors[start:stop]
                )
                bad_rows = ~finite_rows(scores)
            else:
                bad_rows = np.zeros(n_block, dtype=bool)
            test_keys, n_bad = block_keys(test_items, test_ptr, start, stop, n_items)
            train_keys, n_bad_train = block_keys(train_items, train_ptr, start, stop, n_items)
            overlap = np.isin(test_keys, train_keys, assume_unique=True)
            counts["n_bad_test_items"] += n_bad
            counts["n_bad_train_items"] += n_bad_train
            counts["n_overlap"] += int(np.count_nonzero(overlap))
            test_keys = test_keys[~overlap]  # reported as an error after the aggregation
            excluded = train_keys if exclude_train else train_keys[:0]
            n_eligible = n_items - np.bincount(excluded // n_items, minlength=n_block)
            rows, items = test_keys // n_items, test_keys % n_items
            n_test = np.bincount(rows, minlength=n_block)
            evaluated = n_test > 0
            if not np.any(evaluated):
                continue
            if not chance:
                if shared is None:
                    scores.reshape(-1)[excluded] = -np.inf
                    ranked.append(item_ranks(scores, rows, items))
                else:
                    ranked.append(shared_order_ranks(shared, rows, items, excluded, n_items))
            held_out.append(n_test[evaluated])
            eligible.append(n_eligible[evaluated])
            counts["n_users"] += int(np.count_nonzero(evaluated))
            counts["n_missing_factors"] += int(np.count_nonzero(missing[start:stop][evaluated]))
            counts["n_nonfinite_users"] += int(np.count_nonzero(bad_rows[evaluated]))
        if held_out:  # the batch's metrics in one call (per block, their Python overhead rivals the ranks)
            n_test, n_eligible = np.concatenate(held_out), np.concatenate(eligible)
            if chance:
                per_user = chance_metrics(n_eligible, n_test, ks)
            else:
                indptr = np.concatenate([[0], np.cumsum(n_test)])
                per_user = ranking_metrics(np.concatenate(ranked), indptr, n_eligible, ks)
            for name in names:
                sums[name] = int(np.rint(per_user[name] * _FIXED_POINT_SCALE).astype(np.int64).sum())
                squares[name] = float(np.square(per_user[name]).sum())
        yield pa.RecordBatch.from_pydict(
            {**{c: [v] for c, v in counts.items()}, **{n: [v] for n, v in sums.items()},
             **{_square(n): [v] for n, v in squares.items()}},
            schema=_sums_arrow_schema(names),
        )


def _square(name: str) -> str:
    return f"{name}__squares"


def _sums_arrow_schema(names: Sequence[str]) -> pa.Schema:
    return pa.schema([(c, pa.int64()) for c in (*_COUNTERS, *names)] + [(_square(n), pa.float64()) for n in names])


def _sums_spark_schema(names: Sequence[str]) -> T.StructType:
    return T.StructType([T.StructField(c, T.LongType()) for c in (*_COUNTERS, *names)]
                        + [T.StructField(_square(n), T.DoubleType()) for n in names])


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
    sample: UserSample | None = None,
) -> dict[str, float]:
    """Mean ranking metrics over all test users (or a seeded ``sample`` of them), computed on executors.

    Each user's held-out items (all their ``test`` rows, duplicates counted
    once, ``weight`` ignored) are ranked among all ``n_items`` items, minus the
    user's training items when ``exclude_train`` -- a model should not get
    credit or blame for re-recommending what the user already has. Ties are
    broken by item index, consistently with :func:`recspark.models.topk.recommend`.

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
    sample : UserSample, optional
        Evaluate only these test users (see :meth:`UserSample.at_most`).

    Returns
    -------
    dict of str to float
        ``precision_at_{k}``, ``recall_at_{k}``, ``ndcg_at_{k}``, ``map_at_{k}``
        for each k, ``mrr``, ``auc`` (exact, per user then averaged),
        ``n_users_evaluated`` (test users with at least one item) and
        ``n_users_without_factors`` (test users absent from
        ``scorer.user_factors``; they are scored with a zero vector, i.e. by
        item bias alone, and still counted -- a warning is logged). With a
        ``sample``: also ``<metric>_se``, the standard error of each mean.

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
    require_columns(train, "train", (USER_IDX, ITEM_IDX))
    require_columns(test, "test", (USER_IDX, ITEM_IDX))
    block_rows = rows_per_block(scorer.n_items, block_size)
    names = metric_names(ks)

    if sample is not None:  # only the sampled users' rows are shuffled
        train, test = (df.where(sample.keeps(F.col(USER_IDX))) for df in (train, test))
    users = user_table(scorer, train, test=test)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with task_blas_threads():
            yield from _evaluate_batches(batches, scorer, ks, exclude_train, block_rows)

    partial = users.mapInArrow(run, _sums_spark_schema(names))
    row = partial.agg(*[F.sum(c).alias(c) for c in (*_COUNTERS, *names, *map(_square, names))]).first()
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
    if sample is not None:
        for name in names:  # the spread of the per-user values around their mean, over sqrt(n)
            variance = max(float(row[_square(name)] or 0.0) / n_users - report[name] ** 2, 0.0)
            report[f"{name}_se"] = float(np.sqrt(variance * n_users / max(n_users - 1, 1) / n_users))
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
