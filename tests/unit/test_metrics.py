"""Ranking metrics and kernels: hand-computed cases plus a brute-force loop oracle."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from recspark.errors import DataValidationError
from recspark.evaluation.metrics import (
    auc,
    chance_metrics,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    ranks_from_lists,
    recall_at_k,
    reciprocal_rank,
)
from recspark.models.selection import item_ranks, top_k

# --------------------------------------------------------------------------- #
# Brute-force oracle: full sort of each user's eligible items, plain loops.
# --------------------------------------------------------------------------- #


def brute_force_user(scores, test_items, excluded, k):
    """Metrics for one user by sorting eligible items (score desc, index asc) and looping."""
    eligible = [i for i in range(len(scores)) if i not in excluded]
    order = sorted(eligible, key=lambda i: (-scores[i], i))
    test = set(test_items)
    top = order[:k]
    hits = [i for i in top if i in test]
    dcg = sum(1 / math.log2(pos + 2) for pos, i in enumerate(top) if i in test)
    idcg = sum(1 / math.log2(pos + 2) for pos in range(min(len(test), k)))
    ap, n_hit = 0.0, 0
    for pos, i in enumerate(top):
        if i in test:
            n_hit += 1
            ap += n_hit / (pos + 1)
    first = next(pos for pos, i in enumerate(order) if i in test)
    negatives = [i for i in eligible if i not in test]
    pos_of = {i: p for p, i in enumerate(order)}
    correct = sum(pos_of[t] < pos_of[n] for t in test for n in negatives)
    pairs = len(test) * len(negatives)
    return {
        f"precision_at_{k}": len(hits) / k,
        f"recall_at_{k}": len(hits) / len(test),
        f"ndcg_at_{k}": dcg / idcg,
        f"map_at_{k}": ap / min(len(test), k),
        "mrr": 1 / (first + 1),
        "auc": correct / pairs if pairs else 1.0,
        "topk": top,
    }


def kernel_metrics(scores, tests, excluded, ks):
    """The code under test: mask, rank without sorting, metrics from ranks."""
    masked = np.array(scores, dtype=np.float32)
    for u, ex in enumerate(excluded):
        masked[u, sorted(ex)] = -np.inf
    rows = np.concatenate([[u] * len(t) for u, t in enumerate(tests)]).astype(np.int64)
    items = np.concatenate([sorted(t) for t in tests]).astype(np.int64)
    ranks = item_ranks(masked, rows, items)
    indptr = np.concatenate([[0], np.cumsum([len(t) for t in tests])])
    n_eligible = np.array([masked.shape[1] - len(ex) for ex in excluded])
    return ranking_metrics(ranks, indptr, n_eligible, ks), masked


# --------------------------------------------------------------------------- #
# Hand-computed cases
# --------------------------------------------------------------------------- #


def test_precision_recall_hand_computed():
    # User 0: held-out at ranks 0 and 3; user 1: rank 7 only.
    ranks, indptr = ranks_from_lists([[3, 0], [7]])
    assert precision_at_k(ranks, indptr, 2).tolist() == [0.5, 0.0]
    assert precision_at_k(ranks, indptr, 4).tolist() == [0.5, 0.0]
    assert recall_at_k(ranks, indptr, 4).tolist() == [1.0, 0.0]
    assert recall_at_k(ranks, indptr, 8).tolist() == [1.0, 1.0]


def test_ndcg_and_map_hand_computed():
    ranks, indptr = ranks_from_lists([[0, 2]])
    expected_ndcg = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranks, indptr, 3)[0] == pytest.approx(expected_ndcg)
    assert map_at_k(ranks, indptr, 3)[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    # Cut-off 1: only the rank-0 hit counts; ideal has min(2, 1) = 1 slot.
    assert ndcg_at_k(ranks, indptr, 1)[0] == pytest.approx(1.0)
    assert map_at_k(ranks, indptr, 1)[0] == pytest.approx(1.0)


def test_all_test_items_ranked_first_scores_one():
    ranks, indptr = ranks_from_lists([[0, 1, 2]])
    m = ranking_metrics(ranks, indptr, n_eligible=10, ks=(3, 5))
    for name in ("recall_at_3", "ndcg_at_3", "map_at_3", "ndcg_at_5", "map_at_5", "mrr", "auc"):
        assert m[name][0] == pytest.approx(1.0), name
    assert m["precision_at_3"][0] == pytest.approx(1.0)
    assert m["precision_at_5"][0] == pytest.approx(3 / 5)  # denominator stays k


def test_auc_zero_half_one():
    ranks, indptr = ranks_from_lists([[0], [4], [2], [1, 3]])
    assert auc(ranks, indptr, n_eligible=5).tolist() == pytest.approx([1.0, 0.0, 0.5, 0.5])


def test_auc_without_negatives_is_one():
    ranks, indptr = ranks_from_lists([[0, 1]])
    assert auc(ranks, indptr, n_eligible=2).tolist() == [1.0]


def test_reciprocal_rank_uses_first_hit_without_cutoff():
    ranks, indptr = ranks_from_lists([[99, 41], [0]])
    assert reciprocal_rank(ranks, indptr).tolist() == pytest.approx([1 / 42, 1.0])


def test_ties_broken_by_item_index():
    # Items 1, 2, 3 tie; item 0 is excluded.
    scores = np.array([[-np.inf, 0.5, 0.5, 0.5, 0.9]], dtype=np.float32)
    assert item_ranks(scores, [0, 0, 0, 0], [1, 2, 3, 4]).tolist() == [1, 2, 3, 0]
    items, vals = top_k(scores, 3)
    assert items.tolist() == [[4, 1, 2]]
    assert vals[0].tolist() == pytest.approx([0.9, 0.5, 0.5])


def test_k_larger_than_eligible_items():
    # 3 eligible items, both held-out items first; k = 10.
    scores = np.array([[0.9, 0.8, 0.1, -np.inf, -np.inf]], dtype=np.float32)
    ranks = item_ranks(scores, [0, 0], [0, 1])
    assert ranks.tolist() == [0, 1]
    m = ranking_metrics(ranks, [0, 2], n_eligible=3, ks=(10,))
    assert m["precision_at_10"][0] == pytest.approx(0.2)
    assert m["recall_at_10"][0] == pytest.approx(1.0)
    assert m["ndcg_at_10"][0] == pytest.approx(1.0)
    assert m["map_at_10"][0] == pytest.approx(1.0)
    assert m["auc"][0] == pytest.approx(1.0)
    items, vals = top_k(scores, 10)  # capped at n_items; excluded items sort last
    assert items.tolist() == [[0, 1, 2, 3, 4]]
    assert np.isneginf(vals[0, 3:]).all()


def test_rank_below_k_iff_in_top_k_list():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(20, 15)).astype(np.float32)  # many ties
    items, _ = top_k(scores, 5)
    rows = np.repeat(np.arange(20), 15)
    cols = np.tile(np.arange(15), 20)
    ranks = item_ranks(scores, rows, cols).reshape(20, 15)
    for u in range(20):
        assert sorted(np.flatnonzero(ranks[u] < 5).tolist()) == sorted(items[u].tolist())
        assert [int(np.flatnonzero(ranks[u] == r)[0]) for r in range(5)] == items[u].tolist()


# --------------------------------------------------------------------------- #
# Against the brute-force oracle on random data
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("score_levels", [3, None])  # heavy ties, or continuous scores
def test_metrics_match_brute_force(seed, score_levels):
    rng = np.random.default_rng(seed)
    n_users, n_items, ks = 25, 12, (1, 3, 20)
    if score_levels:
        scores = rng.integers(0, score_levels, size=(n_users, n_items)).astype(np.float32)
    else:
        scores = rng.random((n_users, n_items), dtype=np.float32)
    tests, excluded = [], []
    for _ in range(n_users):
        perm = rng.permutation(n_items)
        n_test = int(rng.integers(1, 6))
        n_ex = int(rng.integers(0, n_items - n_test + 1))
        tests.append(set(perm[:n_test].tolist()))
        excluded.append(set(perm[n_test : n_test + n_ex].tolist()))
    got, masked = kernel_metrics(scores, tests, excluded, ks)
    for k in ks:
        items, _ = top_k(masked, k)
        for u in range(n_users):
            want = brute_force_user(scores[u], tests[u], excluded[u], k)
            for name in (f"precision_at_{k}", f"recall_at_{k}", f"ndcg_at_{k}", f"map_at_{k}",
                         "mrr", "auc"):
                assert got[name][u] == pytest.approx(want[name], abs=1e-12), (name, u)
            n_eligible = n_items - len(excluded[u])
            assert items[u, : min(k, n_eligible)].tolist() == want["topk"]
    for values in got.values():
        assert np.all((values >= 0) & (values <= 1))


def test_values_stay_in_unit_interval_on_random_ranks():
    rng = np.random.default_rng(7)
    per_user, n_eligible = [], []
    for _ in range(200):
        n_el = int(rng.integers(1, 50))
        n_test = int(rng.integers(1, n_el + 1))
        per_user.append(rng.choice(n_el, size=n_test, replace=False))
        n_eligible.append(n_el)
    ranks, indptr = ranks_from_lists(per_user)
    for name, values in ranking_metrics(ranks, indptr, np.array(n_eligible), (1, 5, 60)).items():
        assert np.all((values >= 0) & (values <= 1)), name


# --------------------------------------------------------------------------- #
# Input checks
# --------------------------------------------------------------------------- #


def test_user_without_test_items_is_rejected():
    ranks, indptr = ranks_from_lists([[0], []])
    with pytest.raises(DataValidationError, match="no held-out items"):
        precision_at_k(ranks, indptr, 5)


def test_duplicate_ranks_are_rejected():
    with pytest.raises(DataValidationError, match="same rank"):
        ndcg_at_k([1, 1], [0, 2], 5)


def test_rank_beyond_eligible_items_is_rejected_by_auc():
    with pytest.raises(DataValidationError, match="n_eligible"):
        auc([5], [0, 1], n_eligible=5)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_rejected(k):
    with pytest.raises(DataValidationError, match="k must be"):
        recall_at_k([0], [0, 1], k)


# --------------------------------------------------------------------------- #
# The random baseline's expected metrics
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n, t", [(1, 1), (2, 1), (3, 3), (5, 2), (6, 3), (7, 1), (7, 4)])
def test_chance_metrics_are_the_mean_over_every_placement_of_the_held_out_items(n, t):
    """Uniformly random ranking: the held-out items' ranks are a uniform t-subset of 0..n-1; enumerate them all."""
    ks = (1, 3, 5, 9)  # k below, at and above n
    placements = [list(ranks) for ranks in itertools.combinations(range(n), t)]
    ranks, indptr = ranks_from_lists(placements)
    every = ranking_metrics(ranks, indptr, n_eligible=n, ks=ks)
    expected = chance_metrics([n], [t], ks)
    assert sorted(expected) == sorted(every)
    for name, values in every.items():
        assert expected[name][0] == pytest.approx(values.mean(), rel=1e-12, abs=1e-15), name


def test_chance_metrics_stay_exact_at_catalogue_scale():
    # Harmonic numbers above the direct-sum table: mrr against a float64 sum of P(first rank = r) / (r + 1).
    n, t = 100_000, 3
    r = np.arange(n - t + 1, dtype=np.float64)
    first = t / n * np.cumprod(np.concatenate([[1.0], (n - t - r[:-1]) / (n - 1 - r[:-1])]))
    assert first.sum() == pytest.approx(1.0, rel=1e-9)
    assert chance_metrics([n], [t], (10,))["mrr"][0] == pytest.approx((first / (r + 1)).sum(), rel=1e-9)


def test_chance_metrics_refuse_users_without_held_out_items():
    with pytest.raises(DataValidationError, match="n_test"):
        chance_metrics([5, 5], [1, 0])
