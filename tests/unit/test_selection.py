"""The compiled top-k and rank passes against a full sort, on rows longer than one scan chunk."""

from __future__ import annotations

import numpy as np
import pytest

from recspark.errors import DataValidationError
from recspark.models.selection import finite_rows, item_ranks, top_k


def sorted_order(row: np.ndarray) -> np.ndarray:
    """Every item of a row in the total order: score descending, then item index ascending."""
    return np.lexsort((np.arange(row.size), -row.astype(np.float64)))


def scored_rows(kind: str, n_rows: int, n_items: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "ties":  # popularity-like: few distinct values
        scores = rng.integers(0, 5, size=(n_rows, n_items)).astype(np.float32)
    elif kind == "increasing":  # every item beats the running top-k: the worst case for the scan
        scores = np.tile(np.arange(n_items, dtype=np.float32), (n_rows, 1))
    else:
        scores = rng.standard_normal((n_rows, n_items)).astype(np.float32)
    excluded = rng.random((n_rows, n_items)) < 0.05
    scores[excluded] = -np.inf
    return scores


@pytest.mark.parametrize("kind", ["continuous", "ties", "increasing"])
@pytest.mark.parametrize("k", [1, 10, 300])
def test_top_k_is_the_head_of_the_full_sort(kind, k):
    scores = scored_rows(kind, 7, 1000, seed=k)
    items, values = top_k(scores, k)
    for r in range(scores.shape[0]):
        want = sorted_order(scores[r])[:k]
        assert items[r].tolist() == want.tolist()
        assert values[r].tolist() == scores[r, want].tolist()


def test_top_k_keeps_the_dtype_and_caps_k():
    scores = np.array([[0.25, 0.5, 0.125]])
    items, values = top_k(scores, 5)
    assert items.tolist() == [[1, 0, 2]] and values.dtype == np.float64


@pytest.mark.parametrize("kind", ["continuous", "ties"])
def test_item_ranks_are_positions_in_the_full_sort(kind):
    scores = scored_rows(kind, 6, 700, seed=1)
    rng = np.random.default_rng(2)
    rows, items, want = [], [], []
    for r in rng.permutation(6)[:5]:  # one row without targets; rows in no particular order
        position = np.empty(700, dtype=np.int64)
        position[sorted_order(scores[r])] = np.arange(700)
        targets = rng.choice(np.flatnonzero(np.isfinite(scores[r])), size=int(rng.integers(1, 9)), replace=False)
        rows += [r] * len(targets)
        items += targets.tolist()
        want += position[targets].tolist()
    shuffle = rng.permutation(len(rows))
    got = item_ranks(scores, np.array(rows)[shuffle], np.array(items)[shuffle])
    assert got.tolist() == np.array(want)[shuffle].tolist()


def test_item_ranks_refuses_pairs_outside_the_matrix():
    with pytest.raises(DataValidationError, match="outside"):
        item_ranks(np.zeros((2, 3), dtype=np.float32), [0, 2], [0, 1])


def test_finite_rows_finds_nan_and_both_infinities():
    scores = np.ones((4, 300), dtype=np.float32)
    scores[1, 299], scores[2, 0], scores[3, 150] = np.nan, np.inf, -np.inf
    assert finite_rows(scores).tolist() == [True, False, False, False]
