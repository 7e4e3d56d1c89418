"""evaluation.max_test_users: a seeded sample of test users, each metric with its standard error."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

from recspark.data.columns import USER_IDX
from recspark.evaluation.metrics import chance_metrics
from recspark.evaluation.ranking import UserSample, evaluate, metric_names
from recspark.models.baselines import PopularityScorer, RandomScorer

pytestmark = pytest.mark.spark

INTERACTIONS = "user_idx int, item_idx int, weight double"
N_USERS, N_ITEMS = 2000, 80


@pytest.fixture(scope="module")
def split(spark):
    """Users with 2-20 train and 1-5 test items: per-user metrics differ, so standard errors are not 0."""
    rng = np.random.default_rng(11)
    train_rows, test_rows = [], []
    for u in range(N_USERS):
        n_train, n_test = int(rng.integers(2, 21)), int(rng.integers(1, 6))
        items = rng.choice(N_ITEMS, n_train + n_test, replace=False)
        train_rows += [(u, int(i), 1.0) for i in items[:n_train]]
        test_rows += [(u, int(i), 1.0) for i in items[n_train:]]
    return (spark.createDataFrame(train_rows, INTERACTIONS).cache(),
            spark.createDataFrame(test_rows, INTERACTIONS).cache())


def test_at_most_samples_only_above_the_limit():
    assert UserSample.at_most(None, 10**9) is None
    assert UserSample.at_most(1000, 1000) is None
    assert UserSample.at_most(1000, 4000, seed=3) == UserSample(0.25, 3)


def test_a_sample_is_about_its_share_of_the_users_and_the_same_however_partitioned(split):
    _, test = split
    sample = UserSample.at_most(500, N_USERS, seed=7)
    users = test.select(USER_IDX).distinct()
    chosen = {r[0] for r in users.where(sample.keeps(F.col(USER_IDX))).collect()}
    again = {r[0] for r in users.repartition(5).where(sample.keeps(F.col(USER_IDX))).collect()}
    assert chosen == again
    assert abs(len(chosen) - 500) < 4 * np.sqrt(N_USERS * 0.25 * 0.75)  # binomial: within 4 sd
    other = {r[0] for r in users.where(UserSample(0.25, seed=8).keeps(F.col(USER_IDX))).collect()}
    assert other != chosen


def test_sampled_metrics_are_the_exact_metrics_of_the_sampled_users_with_their_standard_errors(spark, split):
    train, test = split
    sample = UserSample(0.3, seed=2)
    report = evaluate(RandomScorer(N_ITEMS), train, test, ks=(5,), sample=sample)
    # The random baseline's per-user values are closed forms of the counts: the oracle for mean and spread.
    n_train = {r[0]: r[1] for r in train.where(sample.keeps(F.col(USER_IDX))).groupBy(USER_IDX).count().collect()}
    n_test = {r[0]: r[1] for r in test.where(sample.keeps(F.col(USER_IDX))).groupBy(USER_IDX).count().collect()}
    users = sorted(n_test)
    per_user = chance_metrics([N_ITEMS - n_train[u] for u in users], [n_test[u] for u in users], (5,))
    assert report["n_users_evaluated"] == len(users)
    for name in metric_names((5,)):
        values = per_user[name]
        assert report[name] == pytest.approx(values.mean(), abs=1e-9), name
        assert report[f"{name}_se"] == pytest.approx(values.std(ddof=1) / np.sqrt(values.size), rel=1e-6), name
    # A scored model on the sample: the same numbers as the exact evaluation of just those users.
    popularity = PopularityScorer.fit(train, N_ITEMS)
    sampled = evaluate(popularity, train, test, ks=(5,), sample=sample)
    kept = test.where(sample.keeps(F.col(USER_IDX)))
    exact = evaluate(popularity, train, kept, ks=(5,))
    assert {k: v for k, v in sampled.items() if not k.endswith("_se")} == exact
    assert not any(k.endswith("_se") for k in exact)  # exact evaluation has no sampling error
    popularity.unpersist()
