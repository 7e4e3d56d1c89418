"""Automatic shard count (used when the config leaves it null)."""

from __future__ import annotations

import pytest

from recspark.models.warp.trainer import MIN_ROWS_PER_SHARD, default_shards


@pytest.mark.parametrize(("n_rows", "parallelism", "expected"), [
    (0, 8, 1),
    (MIN_ROWS_PER_SHARD - 1, 8, 1),
    (2 * MIN_ROWS_PER_SHARD, 8, 2),
    (1_900_000, 2, 2),
    (20_000_000, 16, 16),
])
def test_default_shards_is_parallelism_capped_by_rows(n_rows, parallelism, expected):
    assert default_shards(n_rows, parallelism) == expected

