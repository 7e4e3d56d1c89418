"""Deduplicate interactions and apply the iterative min-interactions threshold.

Both run on the external ids (after validation, before indexing) so the id
maps only ever contain users and items that survive filtering.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from recspark.data.columns import ITEM_ID, TIMESTAMP, USER_ID, WEIGHT
from recspark.errors import ConfigError, DataValidationError
from recspark.session import job_description

log = logging.getLogger(__name__)

# Columns apply_min_counts adds while it filters (dropped from its result).
_USER_ROWS, _USER_FIRST, _ITEM_ROWS = "_user_rows", "_user_first", "_item_rows"

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

    The rows are shuffled by user, not by pair, so the threshold's window
    over each user's rows (:func:`apply_min_counts`) reuses this shuffle
    instead of adding its own: one exchange of the input instead of two
    (generated 2M rows: 3.3 -> 2.2 s for both, warm). It gives up Spark's
    map-side partial sums, which only pay off when most rows repeat a pair
    within one input partition.

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
    return df.repartition(user_col).groupBy(user_col, item_col).agg(*aggs)


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

    One Spark action per pass, plus one for the input: every row carries its
    user's row count (a window over the user's rows, which also flags a user's
    first row) and its item's, so a pass is a filter on them and one
    aggregation gives the pass's rows, users, items and how many rows the
    next pass would remove. When that is none the next pass is known without
    running it (it keeps every row), so the common case, input already
    stable, costs one action. The rows with their user counts are
    checkpointed, which truncates the query plan (dozens of passes would
    otherwise build a plan that takes minutes to optimise) and is
    materialised by that same action; the item counts are aggregated from
    the checkpoint and broadcast back (item-sized, like the rest of the item
    side the driver holds), so the input is read once and the rows are
    shuffled once per pass (by user). Only the counts reach the driver.

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

    by_user = Window.partitionBy(user_col).orderBy(item_col)
    keep = (
        F.col(user_col).isNotNull() & F.col(item_col).isNotNull()  # rows with a null id never count
        & (F.col(_USER_ROWS) >= min_user_interactions) & (F.col(_ITEM_ROWS) >= min_item_interactions)
    )

    def counted(frame: DataFrame, number: int, previous_rows: int | None) -> tuple[ThresholdPass, int, DataFrame]:
        """The pass's counts, the rows the next pass would drop, and ``frame`` annotated (user counts checkpointed,
        item counts broadcast from the checkpoint)."""
        # Checkpointed before the item counts are taken from it, so the input is read once; lazy: materialised
        # by the counting job below.
        users_counted = frame.withColumn(_USER_ROWS, F.count(F.lit(1)).over(
            by_user.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing))
        ).withColumn(_USER_FIRST, F.row_number().over(by_user) == 1)
        users_counted = (users_counted.checkpoint(eager=False) if reliable_checkpoint
                         else users_counted.localCheckpoint(eager=False))
        item_rows = users_counted.groupBy(item_col).agg(F.count(F.lit(1)).alias(_ITEM_ROWS))
        # Item-sized, like the rest of the item side the driver holds: broadcast, the rows are not shuffled.
        annotated = users_counted.join(F.broadcast(item_rows), item_col, "left")
        row = annotated.agg(
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(F.col(_USER_FIRST) & F.col(user_col).isNotNull(), True)).alias("users"),
            # An item's rows each add 1/count: exactly 1 per item once rounded (float error ~1e-12 per item).
            F.sum(F.when(F.col(item_col).isNotNull(), 1.0 / F.col(_ITEM_ROWS))).alias("items"),
            F.count(F.when(~keep, True)).alias("failing"),
        ).first()
        rows = int(row["rows"])
        removed = 0 if previous_rows is None else previous_rows - rows
        result = ThresholdPass(number, rows, int(row["users"]), int(round(row["items"] or 0.0)), removed)
        log.info(
            "threshold pass %d: %d rows, %d users, %d items (%d rows removed)",
            number, result.rows, result.users, result.items, removed,
        )
        return result, int(row["failing"]), annotated

    spark = df.sparkSession
    with job_description(spark, "deduplicate"):
        first, failing, current = counted(df.select(*df.columns), 0, None)
    passes = [first]
    for number in range(1, max_passes + 1):
        if failing == 0:  # this pass would keep every row: record it without running it
            passes.append(replace(passes[-1], pass_number=number, rows_removed=0))
            log.info("threshold pass %d: nothing below the thresholds (stable)", number)
            return current.select(*df.columns), passes
        with job_description(spark, f"threshold pass {number}"):
            result, failing, current = counted(current.filter(keep).select(*df.columns), number, passes[-1].rows)
        passes.append(result)
        if passes[-1].rows == 0:
            raise DataValidationError(
                f"apply_min_counts: the thresholds {config_prefix}min_user_interactions="
                f"{min_user_interactions} and {config_prefix}min_item_interactions="
                f"{min_item_interactions} removed every interaction after {number} pass(es) "
                f"(input: {passes[0].rows} rows, {passes[0].users} users, {passes[0].items} "
                "items). Lower the thresholds or check the input is the intended dataset."
            )
    raise DataValidationError(
        f"apply_min_counts: still removing rows after {config_prefix}max_passes={max_passes} "
        f"passes ({passes[-1].rows_removed} removed in the last one). Raise "
        f"{config_prefix}max_passes or lower the thresholds."
    )
