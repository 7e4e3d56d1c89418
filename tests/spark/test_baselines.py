"""Popularity and random baselines, through the same evaluation code as the models."""

from __future__ import annotations

import numpy as np
import pytest

from recspark.data.columns import ITEM_IDX, RANK, USER_IDX
from recspark.evaluation.metrics import chance_metrics, ranking_metrics
from recspark.evaluation.ranking import evaluate, evaluate_baselines, metric_names
from recspark.models.baselines import PopularityScorer, RandomScorer
from recspark.models.scoring import FactorScorer
from recspark.models.selection import item_ranks
from recspark.models.topk import recommend

pytestmark = pytest.mark.spark

INTERACTIONS = "user_idx int, item_idx int, weight double"


def test_popularity_ranks_items_by_distinct_user_count(spark):
    # Item 3: 3 users (user 0 twice, counted once); item 1: 2 users; item 0: 1 user;
    # items 2 and 4: never seen -> tie at 0, broken by index.
    rows = [(0, 3, 1.0), (0, 3, 2.0), (1, 3, 1.0), (2, 3, 1.0), (1, 1, 1.0), (2, 1, 1.0),
            (0, 0, 1.0)]
    train = spark.createDataFrame(rows, INTERACTIONS)
    scorer = PopularityScorer.fit(train, n_items=5)
    assert scorer.counts.tolist() == [1.0, 2.0, 0.0, 3.0, 0.0]

    users = spark.createDataFrame([(7,), (0,)], "user_idx int")
    recs = recommend(scorer, train, k=4, users=users).orderBy(USER_IDX, RANK).collect()
    by_user = {}
    for r in recs:
        by_user.setdefault(r[USER_IDX], []).append(r[ITEM_IDX])
    assert by_user[7] == [3, 1, 0, 2]  # unseen user: global popularity order
    assert by_user[0] == [1, 2, 4]  # seen items 0 and 3 excluded; only 3 left
    scorer.unpersist()


def test_random_scorer_is_deterministic_per_user_and_seed():
    scorer = RandomScorer(n_items=50, seed=3)
    block = scorer.score_block(np.array([4, 9, 2]), None)
    alone = scorer.score_block(np.array([9]), None)
    assert block.dtype == np.float32 and block.shape == (3, 50)
    np.testing.assert_array_equal(block[1], alone[0])  # independent of the block
    np.testing.assert_array_equal(block, RandomScorer(50, seed=3).score_block(np.array([4, 9, 2]),
                                                                              None))
    assert not np.array_equal(block, RandomScorer(50, seed=4).score_block(np.array([4, 9, 2]),
                                                                          None))


@pytest.fixture(scope="module")
def random_split(spark):
    rng = np.random.default_rng(5)
    n_users, n_items, n_train, n_test = 300, 100, 10, 5
    train_rows, test_rows = [], []
    for u in range(n_users):
        items = rng.choice(n_items, n_train + n_test, replace=False)
        train_rows += [(u, int(i), 1.0) for i in items[:n_train]]
        test_rows += [(u, int(i), 1.0) for i in items[n_train:]]
    train = spark.createDataFrame(train_rows, INTERACTIONS)
    test = spark.createDataFrame(test_rows, INTERACTIONS)
    return train, test, n_items, n_train, n_test


@pytest.fixture(scope="module")
def baseline_reports(random_split):
    train, test, n_items, _, _ = random_split
    return evaluate_baselines(train, test, n_items, seed=1, ks=(10,))


def test_random_baseline_reports_the_exact_chance_level(random_split, baseline_reports):
    _, _, n_items, n_train, n_test = random_split
    report = baseline_reports["random"]
    n_eligible = n_items - n_train
    assert report["precision_at_10"] == pytest.approx(n_test / n_eligible, rel=1e-9)
    assert report["recall_at_10"] == pytest.approx(10 / n_eligible, rel=1e-9)
    assert report["auc"] == 0.5
    assert report["n_users_evaluated"] == 300
    expected = chance_metrics([n_eligible], [n_test], (10,))
    assert report == pytest.approx({**{k: float(v[0]) for k, v in expected.items()},
                                    "n_users_evaluated": 300, "n_users_without_factors": 0}, abs=1e-9)  # fixed-point sums


def test_random_baselines_expectation_is_what_its_scores_give_on_average(random_split, baseline_reports):
    """The scored path (RandomScorer's own scores, ranked) over 200 seeds lands within 4 standard errors."""
    train, test, n_items, _, _ = random_split
    users = np.arange(300)
    known = train.toPandas().groupby(USER_IDX)[ITEM_IDX].apply(list)
    held = test.toPandas().sort_values([USER_IDX, ITEM_IDX]).groupby(USER_IDX)[ITEM_IDX].apply(list)
    rows = np.repeat(users, [len(held[u]) for u in users])
    items = np.concatenate([held[u] for u in users])
    indptr = np.concatenate([[0], np.cumsum([len(held[u]) for u in users])])
    draws = []
    for seed in range(200):
        scores = RandomScorer(n_items, seed=seed).score_block(users, None)
        for u in users:
            scores[u, known[u]] = -np.inf
        ranks = item_ranks(scores, rows, items)
        per_user = ranking_metrics(ranks, indptr, n_eligible=n_items - 10, ks=(10,))
        draws.append({name: values.mean() for name, values in per_user.items()})
    for name in metric_names((10,)):
        values = np.array([d[name] for d in draws])
        error = values.std(ddof=1) / np.sqrt(values.size)
        assert abs(values.mean() - baseline_reports["random"][name]) < 4 * error + 1e-12, name


def test_random_baseline_is_reproducible_across_partitionings(random_split, baseline_reports):
    train, test, n_items, _, _ = random_split
    again = evaluate(RandomScorer(n_items, seed=1), train.repartition(3), test.repartition(2),
                     ks=(10,))
    assert again == baseline_reports["random"]


def test_both_baselines_are_reported_on_the_same_split(baseline_reports):
    assert set(baseline_reports) == {"popularity", "random"}
    for report in baseline_reports.values():
        assert report["n_users_evaluated"] == 300
        for name in metric_names((10,)):
            assert 0.0 <= report[name] <= 1.0, name


@pytest.mark.parametrize("exclude_train", [True, False])
def test_popularity_ranked_from_its_one_order_gives_the_scored_paths_numbers(spark, exclude_train):
    """The baseline no longer scores users x items; its metrics stay exactly those of the scored path."""
    rng = np.random.default_rng(4)
    n_users, n_items = 300, 60
    # Zipf-ish item popularity with many ties (small counts) and items nobody trained on.
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.1
    weights[-8:] = 0.0
    pairs = {(u, int(i)) for u in range(n_users)
             for i in rng.choice(n_items, rng.integers(2, 12), replace=False, p=weights / weights.sum())}
    rows = sorted(pairs)
    test_users = set(rng.choice(n_users, 120, replace=False).tolist())
    held = {(u, i) for u, i in rows if u in test_users and rng.random() < 0.3}
    train = spark.createDataFrame([(u, i, 1.0) for u, i in rows if (u, i) not in held], INTERACTIONS)
    test = spark.createDataFrame([(u, i, 1.0) for u, i in sorted(held)], INTERACTIONS)
    shared = PopularityScorer.fit(train, n_items)
    # The same scores through the general path (every item scored for every user, then ranked): a factor
    # model whose user vectors are zero and whose item biases are the popularity counts.
    users = spark.createDataFrame([(u, [0.0], 0.0) for u in range(n_users)],
                                  "user_idx int, features array<float>, bias float")
    scored = FactorScorer(np.zeros((n_items, 1), np.float32), users, item_bias=shared.counts)
    assert scored.shared_order() is None
    fast = evaluate(shared, train, test, ks=(1, 5, 10), exclude_train=exclude_train)
    slow = evaluate(scored, train, test, ks=(1, 5, 10), exclude_train=exclude_train)
    assert fast == slow
    assert fast["n_users_evaluated"] > 100 and 0 < fast["precision_at_5"] < 1
    shared.unpersist()
