"""Distributed evaluation and top-N recommendation against a driver-side brute force."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from recspark.data.columns import ITEM_IDX, RANK, SCORE, USER_IDX
from recspark.errors import DataValidationError, ModelFitError
from recspark.evaluation.ranking import evaluate, metric_names
from recspark.models.scoring import FactorScorer
from recspark.models.topk import recommend, with_original_ids

pytestmark = pytest.mark.spark

INTERACTIONS = "user_idx int, item_idx int, weight double"
FACTORS_U = "user_idx int, features array<float>"
FACTORS_I = "item_idx int, features array<float>"


# --------------------------------------------------------------------------- #
# Brute-force oracle: full score matrix on the driver, full sort, plain loops.
# --------------------------------------------------------------------------- #


def oracle_order(scores, excluded):
    eligible = [i for i in range(len(scores)) if i not in excluded]
    return sorted(eligible, key=lambda i: (-scores[i], i))


def oracle_evaluate(U, V, train, test, ks, exclude_train):
    """Mean metrics over test users; U maps user -> vector (missing users -> zeros)."""
    totals: dict[str, float] = {}
    for user, items in test.items():
        scores = np.asarray(U.get(user, np.zeros(V.shape[1])), dtype=np.float32) @ V.T
        excluded = train.get(user, set()) if exclude_train else set()
        order = oracle_order(scores, excluded)
        pos = {i: p for p, i in enumerate(order)}
        ranks = sorted(pos[i] for i in items)
        n_neg = len(order) - len(items)
        values = {
            "mrr": 1 / (ranks[0] + 1),
            "auc": 1 - sum(r - j for j, r in enumerate(ranks)) / (len(items) * n_neg)
            if n_neg else 1.0,
        }
        for k in ks:
            hits = [r for r in ranks if r < k]
            values[f"precision_at_{k}"] = len(hits) / k
            values[f"recall_at_{k}"] = len(hits) / len(items)
            values[f"ndcg_at_{k}"] = sum(1 / math.log2(r + 2) for r in hits) / sum(
                1 / math.log2(p + 2) for p in range(min(len(items), k))
            )
            values[f"map_at_{k}"] = sum((j + 1) / (r + 1) for j, r in enumerate(hits)) / min(
                len(items), k
            )
        for name, v in values.items():
            totals[name] = totals.get(name, 0.0) + v
    return {name: v / len(test) for name, v in totals.items()}


def interactions_df(spark, per_user, partitions=None):
    rows = [(u, i, 1.0) for u, items in per_user.items() for i in sorted(items)]
    df = spark.createDataFrame(rows, INTERACTIONS)
    return df.repartition(partitions) if partitions else df


def user_factors_df(spark, U, partitions=None):
    df = spark.createDataFrame(
        [(u, np.asarray(v, dtype=float).tolist()) for u, v in U.items()], FACTORS_U
    )
    return df.repartition(partitions) if partitions else df


def factor_scorer(spark, U, V, partitions=None):
    """Built from arrays (no Spark job); from_dataframes is covered by the ``hand`` fixture."""
    return FactorScorer(V, user_factors_df(spark, U, partitions))


# --------------------------------------------------------------------------- #
# A hand-made model whose rankings are known
# --------------------------------------------------------------------------- #
# Item i has vector [8 - i, i % 2].
#   user 0 = [1, 0]  -> ranks items 0, 1, 2, ..., 7
#   user 1 = [0, 1]  -> odd items tie at 1, even at 0: 1, 3, 5, 7, 0, 2, 4, 6
#   user 2 = [-1, 0] -> 7, 6, ..., 0
#   user 3 has no factors -> all scores 0 -> 0, 1, ..., 7 (index order)
V_HAND = np.array([[8 - i, i % 2] for i in range(8)], dtype=np.float32)
U_HAND = {0: [1.0, 0.0], 1: [0.0, 1.0], 2: [-1.0, 0.0]}
TRAIN_HAND = {0: {0, 1}, 1: {1}, 2: {7}}
TEST_HAND = {0: {2, 5}, 1: {3, 0}, 2: {0}, 3: {1}}


@pytest.fixture(scope="module")
def hand(spark):
    items = spark.createDataFrame(
        [(i, V_HAND[i].astype(float).tolist()) for i in range(8)], FACTORS_I
    )
    scorer = FactorScorer.from_dataframes(user_factors_df(spark, U_HAND, 2), items, n_items=8)
    np.testing.assert_array_equal(scorer.item_vectors, V_HAND)
    train = interactions_df(spark, TRAIN_HAND)
    test = interactions_df(spark, TEST_HAND)
    yield scorer, train, test
    scorer.unpersist()


def test_item_matrix_travels_by_broadcast_not_in_the_closure(spark):
    big = np.ones((50_000, 16), dtype=np.float32)  # 3.2 MB
    scorer = FactorScorer(big, user_factors_df(spark, {0: [0.0] * 16}))
    assert len(pickle.dumps(scorer)) < 2_000
    scorer.unpersist()


def test_from_dataframes_fills_missing_items_and_adds_bias(spark):
    items = spark.createDataFrame(
        [(0, [1.0, 0.0], 0.5), (2, [0.0, 2.0], -1.0)],
        "item_idx int, features array<float>, b float",
    )
    scorer = FactorScorer.from_dataframes(
        user_factors_df(spark, {0: [1.0, 1.0]}), items, n_items=4, item_bias_col="b"
    )
    assert (scorer.n_items, scorer.n_factors) == (4, 2)
    scores = scorer.score_block(np.array([0]), np.array([[1.0, 1.0]], dtype=np.float32))
    assert scores.dtype == np.float32
    assert scores.tolist() == [[1.5, 0.0, 1.0, 0.0]]  # items 1 and 3 have no row -> 0
    with pytest.raises(DataValidationError, match="outside 0..1"):
        FactorScorer.from_dataframes(user_factors_df(spark, {0: [1.0, 1.0]}), items, n_items=2)
    scorer.unpersist()


def test_evaluate_known_ranking_with_train_excluded(hand):
    scorer, train, test = hand
    got = evaluate(scorer, train, test, ks=(1, 2))
    want = oracle_evaluate(
        {u: np.array(v) for u, v in U_HAND.items()}, V_HAND, TRAIN_HAND, TEST_HAND, (1, 2), True
    )
    # By hand: user 0 ranks {2, 5} at 0 and 3; user 1 ranks {3, 0} at 0 and 3 (1 excluded);
    # user 2 ranks item 0 last of 7 (rank 6); user 3 (no factors) ranks item 1 at 1.
    assert got["mrr"] == pytest.approx((1 + 1 + 1 / 7 + 1 / 2) / 4, abs=1e-9)
    assert got["precision_at_1"] == pytest.approx(2 / 4, abs=1e-9)
    assert got["recall_at_2"] == pytest.approx((0.5 + 0.5 + 0 + 1) / 4, abs=1e-9)
    assert got["auc"] == pytest.approx((0.75 + 0.8 + 0.0 + 6 / 7) / 4, abs=1e-9)
    for name in metric_names((1, 2)):
        assert got[name] == pytest.approx(want[name], abs=1e-9), name
    assert got["n_users_evaluated"] == 4
    assert got["n_users_without_factors"] == 1


def test_exclude_train_off_ranks_training_items_too(hand):
    scorer, train, test = hand
    got = evaluate(scorer, train, test, ks=(1, 2), exclude_train=False)
    want = oracle_evaluate(
        {u: np.array(v) for u, v in U_HAND.items()}, V_HAND, TRAIN_HAND, TEST_HAND, (1, 2), False
    )
    for name in metric_names((1, 2)):
        assert got[name] == pytest.approx(want[name], abs=1e-9), name
    # User 0's training items 0, 1 now outrank item 2 (rank 2), user 1's item 1 outranks
    # item 3: MRR drops from (1 + 1 + 1/7 + 1/2) / 4.
    assert got["mrr"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 8 + 1 / 2) / 4, abs=1e-9)


@pytest.fixture(scope="module")
def random_case(spark):
    rng = np.random.default_rng(11)
    n_users, n_items, rank = 40, 25, 3
    V = rng.normal(size=(n_items, rank)).astype(np.float32)
    U = {u: rng.normal(size=rank).astype(np.float32) for u in range(n_users) if u % 13}
    train, test = {}, {}
    for u in range(n_users):
        perm = rng.permutation(n_items)
        n_train, n_test = int(rng.integers(0, 8)), int(rng.integers(1, 5))
        if n_train:
            train[u] = set(perm[:n_train].tolist())
        test[u] = set(perm[n_train : n_train + n_test].tolist())
    return U, V, train, test


@pytest.fixture(scope="module")
def random_eval(spark, random_case):
    U, V, train, test = random_case
    return evaluate(factor_scorer(spark, U, V), interactions_df(spark, train),
                    interactions_df(spark, test), ks=(3, 10))


def test_evaluate_matches_brute_force_on_random_model(random_case, random_eval):
    U, V, train, test = random_case
    want = oracle_evaluate(U, V, train, test, (3, 10), True)
    for name in metric_names((3, 10)):
        assert random_eval[name] == pytest.approx(want[name], abs=1e-8), name
        assert 0.0 <= random_eval[name] <= 1.0
    assert random_eval["n_users_evaluated"] == len(test)
    assert random_eval["n_users_without_factors"] == len([u for u in test if u not in U])


def test_evaluate_is_independent_of_partitions_and_blocks(spark, random_case, random_eval):
    U, V, train, test = random_case
    other = evaluate(factor_scorer(spark, U, V, partitions=5), interactions_df(spark, train, 5),
                     interactions_df(spark, test, 3), ks=(3, 10), block_size=3)
    assert other == random_eval  # exact: sums are fixed point, ranks are a total order


def test_evaluate_refuses_overlapping_splits(spark, hand):
    scorer, train, _ = hand
    overlapping = interactions_df(spark, {0: {0, 3}})
    with pytest.raises(DataValidationError, match="overlapping"):
        evaluate(scorer, train, overlapping)


def test_evaluate_rejects_items_outside_the_model(spark, hand):
    scorer, train, _ = hand
    with pytest.raises(DataValidationError, match="outside 0..7"):
        evaluate(scorer, train, interactions_df(spark, {0: {8}}))


def test_evaluate_reports_nan_user_factors(spark):
    scorer = factor_scorer(spark, {0: [float("nan"), 0.0]}, V_HAND)
    with pytest.raises(ModelFitError, match="NaN"):
        evaluate(scorer, interactions_df(spark, {0: {1}}), interactions_df(spark, {0: {2}}))


# --------------------------------------------------------------------------- #
# Top-N recommendations
# --------------------------------------------------------------------------- #


def collect_recs(df):
    out: dict[int, list[tuple[int, int, float]]] = {}
    for row in df.orderBy(USER_IDX, RANK).collect():
        out.setdefault(row[USER_IDX], []).append((row[RANK], row[ITEM_IDX], row[SCORE]))
    return out


def test_recommend_known_model(hand):
    scorer, train, _ = hand
    recs = recommend(scorer, train, k=3)
    assert recs.columns == [USER_IDX, RANK, ITEM_IDX, SCORE]
    got = collect_recs(recs)
    assert sorted(got) == [0, 1, 2]  # users of train only
    assert [i for _, i, _ in got[0]] == [2, 3, 4]
    assert [i for _, i, _ in got[1]] == [3, 5, 7]  # tied scores -> item index order
    assert [i for _, i, _ in got[2]] == [6, 5, 4]
    for user, rows in got.items():
        assert [r for r, _, _ in rows] == [1, 2, 3]
        assert not {i for _, i, _ in rows} & TRAIN_HAND[user]


def test_recommend_for_given_users_and_small_catalogue(spark, hand):
    scorer, train, _ = hand
    users = spark.createDataFrame([(0,), (3,)], "user_idx int")
    got = collect_recs(recommend(scorer, train, k=8, users=users))
    # User 0 has only 6 unseen items; user 3 (no train, no factors) gets all 8 in index order.
    assert [i for _, i, _ in got[0]] == [2, 3, 4, 5, 6, 7]
    assert [i for _, i, _ in got[3]] == list(range(8))
    assert [r for r, _, _ in got[0]] == list(range(1, 7))


def test_recommend_matches_brute_force_and_partitioning(spark, random_case):
    U, V, train, _ = random_case
    k = 5
    a = collect_recs(recommend(factor_scorer(spark, U, V), interactions_df(spark, train), k=k))
    b = collect_recs(recommend(factor_scorer(spark, U, V, 4), interactions_df(spark, train, 3),
                               k=k, block_size=2))
    assert a == b
    assert sorted(a) == sorted(train)
    for user, rows in a.items():
        scores = np.asarray(U.get(user, np.zeros(V.shape[1])), dtype=np.float32) @ V.T
        assert [i for _, i, _ in rows] == oracle_order(scores, train[user])[:k]
        assert [r for r, _, _ in rows] == list(range(1, k + 1))
        got_scores = [s for _, _, s in rows]
        assert got_scores == sorted(got_scores, reverse=True)
        assert not {i for _, i, _ in rows} & train[user]


def test_with_original_ids(spark, hand):
    scorer, train, _ = hand
    user_map = spark.createDataFrame(
        [(f"u{u}", u) for u in range(4)],
        "user_id string, user_idx int"
    )
    item_map = spark.createDataFrame(
        [(f"i{i}", i) for i in range(8)],
        "item_id string, item_idx int"
    )
    out = with_original_ids(recommend(scorer, train, k=2), user_map, item_map)
    assert out.columns == ["user_id", RANK, "item_id", SCORE]
    rows = {(r.user_id, r[RANK]): r.item_id for r in out.collect()}
    assert rows[("u0", 1)] == "i2" and rows[("u1", 2)] == "i5" and rows[("u2", 1)] == "i6"
