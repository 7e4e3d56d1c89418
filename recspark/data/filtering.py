"""Deduplicate interactions and apply the iterative min-interactions threshold.

Both run on the external ids (after validation, before indexing) so the id
maps only ever contain users and items that survive filtering.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recspark.data.columns import ITEM_ID, TIMESTAMP, USER_ID, WEIGHT
from recspark.errors import ConfigError, DataValidationError
from recspark.session import job_description

log = logging.getLogger(__name__)

# Columns apply_min_counts adds while it filters (dropped from its result).
_USER_ROWS, _USER_FIRST, _ITEM_ROWS, _ITEM_FIRST = "_user_rows", "_user_first", "_item_rows", "_item_first"

#: Allowed values of ``deduplicate(how=...)``.
DEDUPE_MODES: tuple[str, ...] = ("sum", "max", "count", "binary")


def deduplicate(
    df: DataFrame,
    how: str = "sum",
    *,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
) -> DataFrame:
    """Collapse repeated (user, item) rows into one interaction.

    Implicit feedback logs often hold the same user-item pair many times
    (plays, clicks); the models expect one entry per matrix cell, and a split
    must never put the same pair in both train and test.

    Parameters
    ----------
    df : DataFrame
        Columns ``user_col``, ``item_col``, ``weight`` (double) and optionally
        ``timestamp``; other columns are dropped.
    how : {"sum", "max", "count", "binary"}, default "sum"
        How the weight of a pair is combined: ``sum`` of the weights (total
        engagement), ``max`` (strongest signal), ``count`` (number of rows,
        ignoring the weights), ``binary`` (1.0: "interacted at all").
    user_col, item_col : str
        Key columns (``user_id``/``item_id`` by default; works on indices too).

    Returns
    -------
    DataFrame
        One row per pair: ``user_col``, ``item_col``, ``weight`` (double) and,
        when the input has it, ``timestamp`` = the latest timestamp of the
        pair (null only if all its timestamps are null). Lazy.

    Raises
    ------
    ConfigError
        ``how`` is not one of :data:`DEDUPE_MODES`.
    """
    weights = {
        "sum": F.sum(WEIGHT),
        "max": F.max(WEIGHT),
        "count": F.count(F.lit(1)),
        "binary": F.lit(1.0),
    }
    if how not in weights:
        raise ConfigError(f"deduplicate: how={how!r} is not supported; choose one of {list(DEDUPE_MODES)}.")
    aggs = [weights[how].cast("double").alias(WEIGHT)]
    if TIMESTAMP in df.columns:
        aggs.append(F.max(TIMESTAMP).alias(TIMESTAMP))
    return df.groupBy(user_col, item_col).agg(*aggs)


@dataclass(frozen=True)
class ThresholdPass:
    """Counts after one pass of :func:`apply_min_counts` (pass 0 is the input)."""

    pass_number: int
    rows: int
    users: int
    items: int
    rows_removed: int


def apply_min_counts(
    df: DataFrame,
    *,
    min_user_interactions: int = 5,
    min_item_interactions: int = 5,
    max_passes: int = 50,
    user_col: str = USER_ID,
    item_col: str = ITEM_ID,
    reliable_checkpoint: bool = False,
    config_prefix: str = "",
) -> tuple[DataFrame, list[ThresholdPass]]:
    """Keep only users and items with enough interactions, repeated until stable.

    Removing rare items can push users below their threshold and vice versa,
    so one pass is not enough: each pass drops every row whose user has fewer
    than ``min_user_interactions`` rows **or** whose item has fewer than
    ``min_item_interactions`` rows (both counted on the pass's input), and
    passes repeat until one removes nothing. The result is the unique largest
    subset in which both conditions hold (the order of removals does not
    matter), so it is deterministic.

    One Spark action per pass, plus one for the input, and no join: every row
    carries its user's and its item's row counts (two window shuffles), so a
    pass is a filter on them, and flags marking the first row of each user and
    item turn the pass's counts into one aggregation. The annotated rows are
    checkpointed, which truncates the query plan (dozens of passes would
    otherwise build a plan that takes minutes to optimise) and is materialised
    by that same action. Only the three counts reach the driver.

    Parameters
    ----------
    df : DataFrame
        One row per interaction (deduplicate first so that a count is a number
        of distinct items/users).
    min_user_interactions, min_item_interactions : int, default 5
        Thresholds (``<= 1`` disables one side).
    max_passes : int, default 50
        Safety bound; hitting it raises (the thresholds never stabilised).
    user_col, item_col : str
        Key columns.
    reliable_checkpoint : bool, default False
        False uses ``localCheckpoint`` (fast, executor storage: losing an
        executor fails the job). True uses ``checkpoint`` on the
        session's checkpoint dir, which survives executor loss (preemptible
        or dynamically allocated executors).
    config_prefix : str, default ""
        Prefix of the settings in the job config, used in error messages.

    Returns
    -------
    filtered : DataFrame
        Rows of ``df`` (same columns) that satisfy both thresholds; already
        materialised.
    passes : list of ThresholdPass
        ``passes[0]`` describes the input, then one entry per pass; the last
        pass is the one that removed nothing.

    Raises
    ------
    DataValidationError
        The thresholds removed every row, or ``max_passes`` was reached.
    """
    for name, value, lowest in (
        ("min_user_interactions", min_user_interactions, 0),
        ("min_item_interactions", min_item_interactions, 0),
        ("max_passes", max_passes, 1),
    ):
        if not isinstance(value, int) or value < lowest:
            raise ConfigError(
                f"apply_min_counts: {config_prefix}{name}={value!r} must be an integer >= {lowest}."
            )

    # Each row carries its user's and its item's row counts and whether it is the first row of either, so a
    # pass filters without a join and counts rows, users and items without countDistinct: two shuffles (by
    # user, by item) and one aggregation per pass.
    by_user = Window.partitionBy(user_col).orderBy(item_col)
    by_item = Window.partitionBy(item_col).orderBy(user_col)
    everything = (Window.unboundedPreceding, Window.unboundedFollowing)
    keep = (
        F.col(user_col).isNotNull() & F.col(item_col).isNotNull()  # a null id never matched the old join keys
        & (F.col(_USER_ROWS) >= min_user_interactions) & (F.col(_ITEM_ROWS) >= min_item_interactions)
    )

    def counted(frame: DataFrame, number: int, previous_rows: int | None) -> tuple[ThresholdPass, DataFrame]:
        """``frame`` with the counts columns, checkpointed by the pass's one action, and the pass's counts."""
        annotated = (
            frame.withColumn(_USER_ROWS, F.count(F.lit(1)).over(by_user.rowsBetween(*everything)))
            .withColumn(_USER_FIRST, F.row_number().over(by_user) == 1)
            .withColumn(_ITEM_ROWS, F.count(F.lit(1)).over(by_item.rowsBetween(*everything)))
            .withColumn(_ITEM_FIRST, F.row_number().over(by_item) == 1)
        )
        # Lazy: materialised by the counting job below (with AQE the shuffles run here).
        annotated = (annotated.checkpoint(eager=False) if reliable_checkpoint
                     else annotated.localCheckpoint(eager=False))
        row = annotated.agg(
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(F.col(_USER_FIRST) & F.col(user_col).isNotNull(), True)).alias("users"),
            F.count(F.when(F.col(_ITEM_FIRST) & F.col(item_col).isNotNull(), True)).alias("items"),
        ).first()
        rows = int(row["rows"])
        removed = 0 if previous_rows is None else previous_rows - rows
        result = ThresholdPass(number, rows, int(row["users"]), int(row["items"]), removed)
        log.info(
            "threshold pass %d: %d rows, %d users, %d items (%d rows removed)",
            number, result.rows, result.users, result.items, removed,
        )
        return result, annotated

    spark = df.sparkSession
    with job_description(spark, "deduplicate"):
        first, current = counted(df.select(*df.columns), 0, None)
    passes = [first]
    for number in range(1, max_passes + 1):
        with job_description(spark, f"threshold pass {number}"):
            result, current = counted(current.filter(keep).select(*df.columns), number, passes[-1].rows)
        passes.append(result)
        if passes[-1].rows == 0:
            raise DataValidationError(
                f"apply_min_counts: the thresholds {config_prefix}min_user_interactions="
                f"{min_user_interactions} and {config_prefix}min_item_interactions="
                f"{min_item_interactions} removed every interaction after {number} pass(es) "
                f"(input: {passes[0].rows} rows, {passes[0].users} users, {passes[0].items} "
                "items). Lower the thresholds or check the input is the intended dataset."
            )
        if passes[-1].rows_removed == 0:
            return current.select(*df.columns), passes
    raise DataValidationError(
        f"apply_min_counts: still removing rows after {config_prefix}max_passes={max_passes} "
        f"passes ({passes[-1].rows_removed} removed in the last one). Raise "
        f"{config_prefix}max_passes or lower the thresholds."
    )
