"""Deduplication modes and the iterative min-interactions threshold."""

from __future__ import annotations

import datetime as dt

import pytest

from recspark.data.columns import ITEM_ID, TIMESTAMP, USER_ID, WEIGHT
from recspark.data.filtering import DEDUPE_MODES, ThresholdPass, apply_min_counts, deduplicate
from recspark.errors import ConfigError, DataValidationError

pytestmark = pytest.mark.spark

T1, T2, T3 = (dt.datetime(2024, 1, d) for d in (1, 2, 3))
SCHEMA = f"{USER_ID} string, {ITEM_ID} string, {WEIGHT} double, {TIMESTAMP} timestamp"


def test_deduplicate_each_mode(spark):
    df = spark.createDataFrame(
        [("u1", "i1", 1.0, T1), ("u1", "i1", 3.0, T3), ("u1", "i1", 2.0, None), ("u2", "i1", 5.0, T2)],
        SCHEMA,
    ).repartition(2)
    expected = {
        "sum": {("u1", "i1"): 6.0, ("u2", "i1"): 5.0},
        "max": {("u1", "i1"): 3.0, ("u2", "i1"): 5.0},
        "count": {("u1", "i1"): 3.0, ("u2", "i1"): 1.0},
        "binary": {("u1", "i1"): 1.0, ("u2", "i1"): 1.0},
    }
    assert set(expected) == set(DEDUPE_MODES)
    for how, weights in expected.items():
        out = deduplicate(df, how)
        assert out.columns == [USER_ID, ITEM_ID, WEIGHT, TIMESTAMP]
        rows = out.collect()
        assert {(r[USER_ID], r[ITEM_ID]): r[WEIGHT] for r in rows} == weights, how
        assert {r[USER_ID]: r[TIMESTAMP] for r in rows} == {"u1": T3, "u2": T2}  # latest


def test_deduplicate_rejects_unknown_mode_naming_the_options(spark):
    df = spark.createDataFrame([("u", "i", 1.0, T1)], SCHEMA)
    with pytest.raises(ConfigError, match="'mean'.*sum.*max.*count.*binary"):
        deduplicate(df, "mean")


def _chain(spark):
    # min 2/2: (u4,c) goes (u4 has 1 row) -> c has 1 row -> (u3,c) goes
    # -> u3 has 1 row -> (u3,b) goes -> stable at {u1,u2} x {a,b}.
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u3", "b"), ("u3", "c"), ("u4", "c")]
    return spark.createDataFrame([(u, i, 1.0, None) for u, i in rows], SCHEMA)


def test_min_counts_iterate_until_both_thresholds_hold(spark):
    out, passes = apply_min_counts(_chain(spark), min_user_interactions=2, min_item_interactions=2)
    assert sorted((r[USER_ID], r[ITEM_ID]) for r in out.collect()) == [
        ("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")
    ]
    assert passes == [
        ThresholdPass(0, rows=7, users=4, items=3, rows_removed=0),
        ThresholdPass(1, rows=6, users=3, items=3, rows_removed=1),
        ThresholdPass(2, rows=5, users=3, items=2, rows_removed=1),
        ThresholdPass(3, rows=4, users=2, items=2, rows_removed=1),
        ThresholdPass(4, rows=4, users=2, items=2, rows_removed=0),
    ]
    assert out.columns == [USER_ID, ITEM_ID, WEIGHT, TIMESTAMP]


def test_min_counts_that_remove_everything_fail_naming_the_settings(spark):
    with pytest.raises(DataValidationError) as err:
        apply_min_counts(_chain(spark), min_user_interactions=3, min_item_interactions=2, config_prefix="data.")
    message = str(err.value)
    assert "removed every interaction" in message
    assert "data.min_user_interactions=3" in message and "data.min_item_interactions=2" in message


def test_min_counts_hitting_max_passes_fails(spark):
    with pytest.raises(DataValidationError, match="max_passes=2"):
        apply_min_counts(_chain(spark), min_user_interactions=2, min_item_interactions=2, max_passes=2)



def test_threshold_passes_are_named_in_the_spark_ui(spark, job_descriptions):
    rows = [(f"u{u}", f"i{i}", 1.0, T1) for u in range(6) for i in range(6) if (u + i) % 3] + [("lone", "i0", 1.0, T1)]
    apply_min_counts(spark.createDataFrame(rows, SCHEMA), min_user_interactions=2, min_item_interactions=2)
    named = job_descriptions()
    assert {"deduplicate", "threshold pass 1"} <= set(named), named
    assert "threshold pass 2" not in named  # pass 1's counts showed nothing left to remove: not run
    assert spark.sparkContext.getLocalProperty("spark.job.description") is None  # restored after


def test_stable_input_costs_one_counting_action(spark, job_descriptions):
    """Input that already meets the thresholds: the input's counts show it, and no pass runs (issue 18.5)."""
    rows = [(f"u{u}", f"i{i}", 1.0, T1) for u in range(4) for i in range(4)]
    out, passes = apply_min_counts(spark.createDataFrame(rows, SCHEMA), min_user_interactions=3,
                                   min_item_interactions=3)
    assert passes == [ThresholdPass(0, rows=16, users=4, items=4, rows_removed=0),
                      ThresholdPass(1, rows=16, users=4, items=4, rows_removed=0)]
    assert out.count() == 16
    assert not any(name.startswith("threshold pass") for name in job_descriptions())


def _reference_min_counts(pairs, min_user, min_item):
    """The threshold as it was before issue 18.5 (a semi join per side and pass), in plain Python."""
    import collections

    def stats(number, current, previous):
        users, items = {u for u, _ in current if u is not None}, {i for _, i in current if i is not None}
        removed = 0 if previous is None else previous - len(current)
        return ThresholdPass(number, len(current), len(users), len(items), removed)

    passes, current = [stats(0, pairs, None)], pairs
    while True:
        users, items = collections.Counter(u for u, _ in current), collections.Counter(i for _, i in current)
        current = [(u, i) for u, i in current
                   if u is not None and i is not None and users[u] >= min_user and items[i] >= min_item]
        passes.append(stats(len(passes), current, passes[-1].rows))
        if passes[-1].rows_removed == 0:
            return sorted(current, key=str), passes


def test_min_counts_match_the_join_based_reference_with_repeats_and_null_ids(spark):
    # Issue 18.5 replaced the semi joins by per-row counts (a user window, a joined item aggregate) and skips
    # the pass that would remove nothing: same rows, same passes, null ids included.
    import random

    rng = random.Random(7)
    pairs = [(f"u{rng.randrange(40)}", f"i{int(rng.paretovariate(1.2)) % 30}") for _ in range(400)]
    pairs += [(None, "i1"), (None, "i1"), ("u1", None), ("u2", None)]  # repeats kept: not deduplicated
    df = spark.createDataFrame([(u, i, 1.0, T1) for u, i in pairs], SCHEMA).repartition(3)
    for min_user, min_item in ((5, 5), (12, 3), (1, 8), (1, 1)):
        out, passes = apply_min_counts(df, min_user_interactions=min_user, min_item_interactions=min_item)
        expected_rows, expected_passes = _reference_min_counts(pairs, min_user, min_item)
        assert passes == expected_passes, (min_user, min_item)
        assert sorted(((r[USER_ID], r[ITEM_ID]) for r in out.collect()), key=str) == expected_rows
        assert out.columns == [USER_ID, ITEM_ID, WEIGHT, TIMESTAMP]


def test_the_input_is_computed_once(spark):
    """The item counts come from the checkpointed rows, not from a second evaluation of the input (issue 18.5)."""
    from pyspark.sql import functions as F

    evaluated = spark.sparkContext.accumulator(0)

    def traced(user):
        evaluated.add(1)
        return user

    rows = [(f"u{u}", f"i{i}", 1.0, T1) for u in range(6) for i in range(6) if (u + i) % 3] + [("lone", "i0", 1.0, T1)]
    df = spark.createDataFrame(rows, SCHEMA).repartition(2)
    df = df.withColumn(USER_ID, F.udf(traced, "string")(USER_ID))
    out, passes = apply_min_counts(deduplicate(df), min_user_interactions=2, min_item_interactions=2)
    assert [p.rows for p in passes] == [len(rows), len(rows) - 1, len(rows) - 1]
    assert out.count() == len(rows) - 1
    assert evaluated.value == len(rows)  # two reads of the input (one per count) would make it 2 * len(rows)


def test_deduplicate_shuffles_once_for_the_threshold_window(spark):
    """The per-user window of the first threshold pass reuses deduplicate's exchange (issue 18.5)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    df = spark.createDataFrame([("u1", "i1", 1.0, T1), ("u1", "i1", 2.0, T2), ("u2", "i1", 5.0, T2)], SCHEMA)
    windowed = deduplicate(df).withColumn("n", F.count(F.lit(1)).over(Window.partitionBy(USER_ID)))
    plan = windowed._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 1, plan
    assert sorted((r[USER_ID], r[WEIGHT], r["n"]) for r in windowed.collect()) == [("u1", 3.0, 1), ("u2", 5.0, 1)]
