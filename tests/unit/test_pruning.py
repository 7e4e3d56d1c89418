"""The bounded top-k gives what scoring every item gives, and scores fewer pairs where its bounds bite."""

from __future__ import annotations

import numpy as np
import pytest

from recspark.models.pruning import CHUNK_ITEMS, BoundIndex
from recspark.models.selection import top_k


def case(kind: str, n_items: int, seed: int):
    """Item vectors (+ bias), user vectors and each user's excluded items (CSR)."""
    rng = np.random.default_rng(seed)
    n_users, dim = 60, 8
    if kind == "ties":  # small integers: many exactly equal scores, some equal to the bound
        vectors = rng.integers(-1, 2, size=(n_items, dim)).astype(np.float32)
        users = rng.integers(-1, 2, size=(n_users, dim)).astype(np.float32)
    else:
        users = rng.standard_normal((n_users, dim)).astype(np.float32)
        vectors = rng.standard_normal((n_items, dim)).astype(np.float32)
        if kind == "skewed":  # ALS-like: norms fall with popularity rank
            vectors *= (1.0 / np.arange(1, n_items + 1) ** 0.8)[rng.permutation(n_items), None]
        elif kind == "uniform":  # WARP-like: every item's norm alike, so no bound prunes
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bias = rng.standard_normal(n_items).astype(np.float32) * 0.1 if kind == "bias" else None
    users[3] = 0.0  # a user without factors
    counts = rng.integers(0, min(30, n_items), n_users)
    counts[7] = max(n_items - 3, 0)  # fewer eligible items than k > 3
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    excluded = np.concatenate([rng.choice(n_items, c, replace=False) for c in counts]).astype(np.int64)
    return vectors, bias, users, excluded, indptr


def full_top_k(vectors, bias, users, excluded, indptr, k):
    scores = users @ vectors.T + (0 if bias is None else bias)
    for r in range(len(users)):
        scores[r, excluded[indptr[r]:indptr[r + 1]]] = -np.inf
    items, values = top_k(scores, k)
    return np.where(values > -np.inf, items, vectors.shape[0]), values


@pytest.mark.parametrize("kind", ["skewed", "uniform", "bias", "ties"])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_same_lists_as_scoring_every_item(kind, k):
    n_items = 2 * CHUNK_ITEMS + 123  # three chunks, the last partial
    vectors, bias, users, excluded, indptr = case(kind, n_items, seed=k)
    got_items, got_values = BoundIndex(vectors, bias).top_k(users, k, excluded, indptr)
    want_items, want_values = full_top_k(vectors, bias, users, excluded, indptr, k)
    assert got_items.tolist() == want_items.tolist()
    np.testing.assert_allclose(got_values, want_values, rtol=1e-6, atol=1e-6)
    if k > 3:
        assert got_values[7, -1] == -np.inf  # the placeholder of a user with too few eligible items


def test_small_catalogue_and_k_above_it():
    vectors, bias, users, excluded, indptr = case("bias", 5, seed=0)
    got = BoundIndex(vectors, bias).top_k(users, 9, excluded[:0], np.zeros(len(users) + 1, dtype=np.int64))
    want = full_top_k(vectors, bias, users, excluded[:0], np.zeros(len(users) + 1, dtype=np.int64), 9)
    assert got[0].shape == (len(users), 5) and got[0].tolist() == want[0].tolist()


def test_each_bound_skips_what_it_should():
    """Norms falling with popularity stop users early; norms alike on a low-rank model skip pairs inside chunks."""
    n_items = 8 * CHUNK_ITEMS
    vectors, bias, users, excluded, indptr = case("skewed", n_items, seed=1)
    index = BoundIndex(vectors, bias)
    index.top_k(users, 10, excluded, indptr)
    assert index.bounded_pairs <= 0.5 * len(users) * n_items

    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((n_items, 2)) @ rng.standard_normal((2, 8)) + 0.05 * rng.standard_normal((n_items, 8))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)  # WARP-like
    index = BoundIndex(vectors, None)
    index.top_k(users, 10, excluded, indptr)
    assert index.bounded_pairs > 0.9 * len(users) * n_items  # no norm to stop at
    assert index.exact_pairs < 0.2 * len(users) * n_items  # the projections rule most items out
