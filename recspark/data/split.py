"""Train/test splits over indexed interactions, disjoint by construction.

Every split works on (user, item) **pairs**: all rows of a pair go to the same
side, so train and test never share a pair even if the input was not
deduplicated. Randomness comes from hashes of ``(seed, user_idx[, item_idx])``
(``xxhash64``), never from ``rand()``, so a split depends only on the data and
the seed: not on partitioning, row order, task retries or cluster size.

Both split functions return a :class:`SplitResult`, which unpacks as
``train, test = holdout_split(...)`` and can count both sides, and check they
share no pair, in one job.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recspark.data.columns import ITEM_IDX, TIMESTAMP, USER_IDX
from recspark.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

_IS_TEST = "_is_test"
_SHARED = "_shared"  # counts(): the row's pair has rows on both sides


@dataclass(frozen=True)
class SplitCounts:
    """Sizes of a split (rows and users), for logging."""

    train_rows: int
    test_rows: int
    test_users: int

    def as_metrics(self) -> dict[str, float]:
        """Flat ``name -> value`` mapping for ``mlflow.log_metrics``."""
        return {"train_rows": self.train_rows, "test_rows": self.test_rows, "test_users": self.test_users}


@dataclass(frozen=True)
class SplitResult:
    """The two sides of a split; iterating yields ``(train, test)``.

    ``train`` and ``test`` have the input's columns and are lazy filters of
    one tagged DataFrame, so :meth:`counts` sizes both in a single Spark job.
    """

    train: DataFrame
    test: DataFrame
    tagged: DataFrame  # input columns + boolean ``_is_test``

    def __iter__(self) -> Iterator[DataFrame]:
        return iter((self.train, self.test))

    def persist(self, level: StorageLevel = StorageLevel.MEMORY_AND_DISK) -> SplitResult:
        """The same split over a persisted ``tagged``: the first job (e.g. :meth:`counts`) fills the cache.

        Then counting, checking and writing both sides run the split's shuffle
        once instead of once per job. Call :meth:`unpersist` when done.
        """
        columns = [c for c in self.tagged.columns if c != _IS_TEST]
        tagged = self.tagged.persist(level)
        return SplitResult(train=tagged.filter(~F.col(_IS_TEST)).select(*columns),
                           test=tagged.filter(F.col(_IS_TEST)).select(*columns), tagged=tagged)

    def unpersist(self) -> None:
        """Drop the cache of :meth:`persist` (a no-op when not persisted)."""
        self.tagged.unpersist()

    def counts(self) -> SplitCounts:
        """Train rows, test rows and users with test rows, in one aggregation that also checks disjointness.

        The check: no (user_idx, item_idx) pair has rows on both sides. A pair
        in both would be an item the model saw in training "predicted" in
        test, inflating every metric. The splits keep pairs whole by
        construction, so this guards the construction; it is a window over
        the pair in the same job (no extra shuffle after the user-partitioned
        splits), with a second job for an example only on failure.

        Raises
        ------
        DataValidationError
            Some pairs are on both sides (the count and an example are given).
        """
        is_test = F.col(_IS_TEST).cast("int")
        by_pair = Window.partitionBy(USER_IDX, ITEM_IDX)
        checked = self.tagged.withColumn(_SHARED, F.max(is_test).over(by_pair) > F.min(is_test).over(by_pair))
        row = checked.agg(
            F.count(F.when(~F.col(_IS_TEST), True)).alias("train_rows"),
            F.count(F.when(F.col(_IS_TEST), True)).alias("test_rows"),
            F.countDistinct(F.when(F.col(_IS_TEST), F.col(USER_IDX))).alias("test_users"),
            F.count(F.when(F.col(_SHARED) & F.col(_IS_TEST), True)).alias("shared"),
        ).first()
        if row["shared"]:
            example = checked.filter(F.col(_SHARED)).select(USER_IDX, ITEM_IDX).limit(1).collect()[0].asDict()
            raise DataValidationError(
                f"split: {row['shared']} test rows are of (user_idx, item_idx) pairs that also have train rows "
                f"(e.g. {example}). Each split keeps a pair's rows on one side; this is a bug in the split."
            )
        counts = SplitCounts(int(row["train_rows"]), int(row["test_rows"]), int(row["test_users"]))
        log.info("split: %d train rows, %d test rows, %d test users", *counts.as_metrics().values())
        return counts


def _result(tagged: DataFrame, columns: list[str]) -> SplitResult:
    return SplitResult(
        train=tagged.filter(~F.col(_IS_TEST)).select(*columns),
        test=tagged.filter(F.col(_IS_TEST)).select(*columns),
        tagged=tagged.select(*columns, _IS_TEST),
    )


def _unit_interval(h: Column) -> Column:
    """Map a 64-bit hash to a uniform double in [0, 1) using its top 53 bits."""
    return F.shiftrightunsigned(h, 11).cast("double") / float(1 << 53)


def holdout_split(
    df: DataFrame,
    *,
    test_user_fraction: float = 0.2,
    k: int = 5,
    seed: int = 42,
) -> SplitResult:
    """Move ``k`` random interactions of a random subset of users to test.

    The protocol: users with at least ``2 * k`` distinct items are *eligible*
    (so at least as many items stay in train as are held out); each eligible
    user is chosen independently with probability ``test_user_fraction`` (so
    the chosen fraction is approximate, exact in expectation); each chosen user
    gets exactly ``k`` of their items (all rows of those pairs) moved to test.
    Other users are entirely in train.

    Choice of users hashes ``(seed, "user", user_idx)``; choice of items ranks
    the user's pairs by ``(hash(seed, "item", user_idx, item_idx), item_idx)``.
    Hence the same data and seed give the same split whatever the
    partitioning, and a user's held-out items do not change when other users
    are added (useful when comparing nightly runs).

    Parameters
    ----------
    df : DataFrame
        ``user_idx`` (int), ``item_idx`` (int) and any other columns (kept).
    test_user_fraction : float, default 0.2
        Probability that an eligible user is chosen, in [0, 1].
    k : int, default 5
        Held-out items per chosen user, >= 1.
    seed : int, default 42

    Returns
    -------
    SplitResult
        Unpacks as ``(train, test)``; lazy (one shuffle, by ``user_idx``).

    Raises
    ------
    ConfigError
        ``k < 1`` or a fraction outside [0, 1].
    """
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"holdout_split: k={k!r} must be an integer >= 1.")
    if not 0.0 <= test_user_fraction <= 1.0:
        raise ConfigError(f"holdout_split: test_user_fraction={test_user_fraction!r} must be in [0, 1].")
    user, item = F.col(USER_IDX).cast("int"), F.col(ITEM_IDX).cast("int")
    seed_col = F.lit(int(seed)).cast("long")
    user_draw = _unit_interval(F.xxhash64(seed_col, F.lit("user"), user))
    pair_hash = F.xxhash64(seed_col, F.lit("item"), user, item)

    by_user = Window.partitionBy(USER_IDX)
    # dense_rank: duplicate rows of one pair share a rank, so pairs move whole.
    ranked = df.withColumn(
        "_rank", F.dense_rank().over(by_user.orderBy(pair_hash, F.col(ITEM_IDX)))
    ).withColumn("_n_items", F.max("_rank").over(by_user))
    is_test = (
        (F.col("_n_items") >= 2 * k)
        & (user_draw < F.lit(float(test_user_fraction)))
        & (F.col("_rank") <= k)
    )
    tagged = ranked.withColumn(_IS_TEST, is_test)
    return _result(tagged, df.columns)


def item_holdout_split(df: DataFrame, *, test_item_fraction: float = 0.2, seed: int = 42) -> SplitResult:
    """Cold-start split: a random subset of *items* goes to test with all its interactions.

    The test items have no training interaction at all, so a model can only
    rank them from their side features; that is what the cold-start
    evaluation measures (pure collaborative filtering has nothing to go on).
    Items are chosen by hashing ``(seed, "cold", item_idx)``: independent of
    partitioning and stable as data grows.

    Raises
    ------
    ConfigError
        A fraction outside (0, 1).
    """
    if not 0.0 < test_item_fraction < 1.0:
        raise ConfigError(f"item_holdout_split: test_item_fraction={test_item_fraction!r} must be in (0, 1).")
    draw = _unit_interval(F.xxhash64(F.lit(int(seed)).cast("long"), F.lit("cold"), F.col(ITEM_IDX).cast("int")))
    return _result(df.withColumn(_IS_TEST, draw < F.lit(float(test_item_fraction))), df.columns)


def time_split(
    df: DataFrame,
    *,
    last_n: int | None = None,
    cutoff: dt.datetime | dt.date | str | None = None,
) -> SplitResult:
    """Split by time: each user's latest items, or everything after a cutoff.

    Exactly one mode must be chosen:

    ``last_n``
        Per user, pairs are ordered by their latest timestamp (ties by
        ``item_idx``, descending); the ``last_n`` most recent pairs go to test
        **only for users with more than** ``last_n`` distinct items, so every
        test user keeps at least one item in train (a user with nothing in
        train cannot be evaluated). Other users stay wholly in train.
    ``cutoff``
        A pair goes to test when its *first* interaction is at or after
        ``cutoff``. With deduplicated input (one row per pair) this is exactly
        "every interaction at/after the cutoff is test"; a pair first seen
        before the cutoff and repeated after it stays in train, because a
        repeat of a known item is not a new discovery and must not leak.

    Parameters
    ----------
    df : DataFrame
        ``user_idx``, ``item_idx``, ``timestamp`` (no nulls) and any other
        columns (kept).
    last_n : int, optional
        >= 1.
    cutoff : datetime, date or str, optional
        A ``datetime`` or an ISO-8601 string (``"2024-06-01"``,
        ``"2024-06-01T12:00:00"``); naive values are in the session time zone.

    Returns
    -------
    SplitResult
        Unpacks as ``(train, test)``; lazy.

    Raises
    ------
    ConfigError
        Neither or both modes, ``last_n < 1`` or an unparseable ``cutoff``.
    DataValidationError
        No ``timestamp`` column, or null timestamps (one Spark job checks;
        the message gives the count and an example row).
    """
    if (last_n is None) == (cutoff is None):
        raise ConfigError(
            f"time_split: give exactly one of last_n or cutoff (got last_n={last_n!r}, cutoff={cutoff!r})."
        )
    if TIMESTAMP not in df.columns:
        raise DataValidationError(
            f"time_split: no {TIMESTAMP!r} column (columns: {df.columns}). Set timestamp_col at "
            "ingest, or use holdout_split."
        )
    cutoff_col: Column | None = None
    if cutoff is not None:
        cutoff_col = _cutoff_literal(cutoff)
    if last_n is not None and (not isinstance(last_n, int) or last_n < 1):
        raise ConfigError(f"time_split: last_n={last_n!r} must be an integer >= 1.")

    row = df.agg(
        F.count(F.when(F.col(TIMESTAMP).isNull(), True)).alias("nulls"), F.count(F.lit(1)).alias("rows")
    ).first()
    if row["nulls"]:
        example = df.filter(F.col(TIMESTAMP).isNull()).limit(1).collect()[0].asDict()
        raise DataValidationError(
            f"time_split: {row['nulls']} of {row['rows']} rows have a null {TIMESTAMP!r} "
            f"(e.g. {example}); a time split needs every timestamp. Set timestamp_col at "
            "ingest to a populated column, or use holdout_split."
        )

    by_pair = Window.partitionBy(USER_IDX, ITEM_IDX)
    if cutoff_col is not None:
        tagged = df.withColumn(_IS_TEST, F.min(TIMESTAMP).over(by_pair) >= cutoff_col)
        return _result(tagged, df.columns)

    by_user = Window.partitionBy(USER_IDX)
    # Repartition by user once; the pair window and both user windows reuse it.
    ranked = (
        df.repartition(USER_IDX)
        .withColumn("_pair_last", F.max(TIMESTAMP).over(by_pair))
        .withColumn(
            "_rank",
            F.dense_rank().over(by_user.orderBy(F.col("_pair_last").desc(), F.col(ITEM_IDX).desc())),
        )
        .withColumn("_n_items", F.max("_rank").over(by_user))
    )
    tagged = ranked.withColumn(_IS_TEST, (F.col("_n_items") > last_n) & (F.col("_rank") <= last_n))
    return _result(tagged, df.columns)


def _cutoff_literal(cutoff: dt.datetime | dt.date | str) -> Column:
    if isinstance(cutoff, str):
        try:
            cutoff = dt.datetime.fromisoformat(cutoff)
        except ValueError as err:
            raise ConfigError(
                f"time_split: cutoff={cutoff!r} is not an ISO-8601 date/time (e.g. '2024-06-01T00:00:00')."
            ) from err
    elif isinstance(cutoff, dt.date) and not isinstance(cutoff, dt.datetime):
        cutoff = dt.datetime.combine(cutoff, dt.time())
    if not isinstance(cutoff, dt.datetime):
        raise ConfigError(f"time_split: cutoff={cutoff!r} must be a datetime or ISO-8601 string.")
    # Pass a string so Spark interprets naive values in the session time zone
    # (a Python datetime literal would use the driver's local zone).
    return F.lit(cutoff.isoformat(sep=" ")).cast("timestamp")
