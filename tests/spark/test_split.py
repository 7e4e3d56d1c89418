"""Splits: disjoint, exact per-user counts, seeded and partition-independent; time modes."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from recspark.data.columns import ITEM_IDX, TIMESTAMP, USER_IDX, WEIGHT
from recspark.data.split import SplitResult, holdout_split, time_split
from recspark.errors import ConfigError, DataValidationError

pytestmark = pytest.mark.spark

SCHEMA = f"{USER_IDX} int, {ITEM_IDX} int, {WEIGHT} double, {TIMESTAMP} timestamp"
K = 3
N_USERS = 300


def _n_items(user):
    return user % 15 + 1  # 1..15 items; users with >= 2K = 6 items are eligible


@pytest.fixture(scope="module")
def interactions(spark):
    rows = [(u, i, 1.0, None) for u in range(N_USERS) for i in range(_n_items(u))]
    # Duplicate rows of some pairs: a pair must still land on one side only.
    rows += [(u, 0, 1.0, None) for u in range(0, N_USERS, 7)]
    return spark.createDataFrame(rows, SCHEMA).cache()


def _pairs(df):
    return sorted((r[USER_IDX], r[ITEM_IDX]) for r in df.select(USER_IDX, ITEM_IDX).collect())


def check_disjoint(train, test):
    """The oracle for the split's own check: no pair on both sides, compared on the driver (small data)."""
    assert not set(_pairs(train)) & set(_pairs(test))


def test_holdout_split_is_disjoint_with_exactly_k_items_per_chosen_eligible_user(spark, interactions):
    result = holdout_split(interactions, test_user_fraction=0.3, k=K, seed=7)
    train, test = result
    check_disjoint(train, test)  # raises on overlap
    train_pairs, test_pairs = _pairs(train), _pairs(test)
    assert sorted(train_pairs + test_pairs) == _pairs(interactions)  # nothing lost or invented

    per_user: dict[int, set[int]] = {}
    for u, i in test_pairs:
        per_user.setdefault(u, set()).add(i)
    assert all(_n_items(u) >= 2 * K for u in per_user)
    assert all(len(items) == K for items in per_user.values())
    eligible = sum(_n_items(u) >= 2 * K for u in range(N_USERS))  # 200
    assert eligible * 0.3 - 30 < len(per_user) < eligible * 0.3 + 30  # ~4 sigma of Binomial(200, 0.3)

    counts = result.counts()
    assert counts.test_users == len(per_user)
    assert counts.test_rows == len(test_pairs)
    assert counts.train_rows + counts.test_rows == interactions.count()


def test_holdout_split_is_reproducible_across_partitioning_and_changes_with_seed(spark, interactions):
    test_a = _pairs(holdout_split(interactions, test_user_fraction=0.3, k=K, seed=7).test)
    shuffled = interactions.orderBy(ITEM_IDX, USER_IDX).repartition(5)
    test_b = _pairs(holdout_split(shuffled, test_user_fraction=0.3, k=K, seed=7).test)
    test_c = _pairs(holdout_split(interactions, test_user_fraction=0.3, k=K, seed=8).test)
    assert test_a == test_b
    assert test_a != test_c


def test_holdout_split_rejects_bad_parameters(spark, interactions):
    with pytest.raises(ConfigError, match="k=0"):
        holdout_split(interactions, k=0)
    with pytest.raises(ConfigError, match="test_user_fraction=1.5"):
        holdout_split(interactions, test_user_fraction=1.5)


def _day(d):
    return dt.datetime(2024, 1, d)


@pytest.fixture(scope="module")
def timed(spark):
    rows = [
        (0, 0, 1.0, _day(1)), (0, 1, 1.0, _day(2)), (0, 2, 1.0, _day(3)), (0, 3, 1.0, _day(4)),
        (0, 0, 1.0, _day(6)),  # a repeat of pair (0, 0)
        (1, 0, 1.0, _day(1)), (1, 1, 1.0, _day(5)),
        (2, 2, 1.0, _day(3)),
    ]
    return spark.createDataFrame(rows, SCHEMA)


def test_time_split_last_n_moves_latest_pairs_of_users_with_more_than_n(spark, timed):
    train, test = time_split(timed, last_n=1)
    check_disjoint(train, test)
    assert _pairs(test) == [(0, 0), (0, 0), (1, 1)]  # both rows of the latest pair; user 2 has only 1 item
    train, test = time_split(timed, last_n=2)
    assert _pairs(test) == [(0, 0), (0, 0), (0, 3)]  # user 1 has exactly 2 items: stays in train
    assert len(_pairs(train)) == 5


def test_time_split_cutoff_moves_pairs_first_seen_at_or_after_it(spark, timed):
    result = time_split(timed, cutoff="2024-01-04")
    train, test = result
    check_disjoint(train, test)
    assert _pairs(test) == [(0, 3), (1, 1)]  # (0, 0) was first seen before the cutoff
    assert result.counts().as_metrics() == {"train_rows": 6, "test_rows": 2, "test_users": 2}
    assert _pairs(time_split(timed, cutoff=dt.datetime(2024, 1, 5)).test) == [(1, 1)]


def test_time_split_needs_timestamps_and_one_mode(spark, timed):
    with pytest.raises(ConfigError, match="exactly one"):
        time_split(timed)
    with pytest.raises(ConfigError, match="exactly one"):
        time_split(timed, last_n=1, cutoff="2024-01-01")
    with pytest.raises(ConfigError, match="not-a-date"):
        time_split(timed, cutoff="not-a-date")
    with pytest.raises(DataValidationError, match="no 'timestamp' column"):
        time_split(timed.drop(TIMESTAMP), last_n=1)
    with_null = timed.union(spark.createDataFrame([(3, 0, 1.0, None)], SCHEMA))
    with pytest.raises(DataValidationError, match="1 of 9 rows have a null 'timestamp'"):
        time_split(with_null, last_n=1)


def test_split_counts_refuse_a_pair_on_both_sides(spark, timed):
    # A split whose tags put one row of pair (0, 3) in train and another in test: the counts job catches it.
    tagged = timed.withColumn("_is_test", F.col(ITEM_IDX) == 3)
    tagged = tagged.union(timed.filter(f"{USER_IDX} = 0 AND {ITEM_IDX} = 3").withColumn("_is_test", F.lit(False)))
    bad = SplitResult(train=tagged.filter("NOT _is_test").drop("_is_test"),
                      test=tagged.filter("_is_test").drop("_is_test"), tagged=tagged)
    with pytest.raises(DataValidationError, match=r"1 test rows are of \(user_idx, item_idx\) pairs.*'item_idx': 3"):
        bad.counts()


def test_a_persisted_split_has_the_same_sides_and_counts(spark, interactions):
    # Issue 18.5: the prepare path persists the split so counting, checking and writing share one shuffle.
    plain = holdout_split(interactions, test_user_fraction=0.5, k=2, seed=3)
    cached = plain.persist()
    try:
        assert cached.tagged.is_cached
        assert cached.counts() == plain.counts()
        for ours, theirs in zip(cached, plain):
            assert ours.columns == theirs.columns and sorted(ours.collect()) == sorted(theirs.collect())
    finally:
        cached.unpersist()
    assert not cached.tagged.is_cached
