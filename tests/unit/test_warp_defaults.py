"""Automatic shard count and kernel batch size (used when the config leaves them null)."""

from __future__ import annotations

import pytest

from recspark.models.warp.trainer import MIN_ROWS_PER_SHARD, default_batch_size, default_shards


@pytest.mark.parametrize(("n_rows", "parallelism", "expected"), [
    (0, 8, 1),
    (MIN_ROWS_PER_SHARD - 1, 8, 1),
    (2 * MIN_ROWS_PER_SHARD, 8, 2),
    (1_900_000, 2, 2),
    (20_000_000, 16, 16),
])
def test_default_shards_is_parallelism_capped_by_rows(n_rows, parallelism, expected):
    assert default_shards(n_rows, parallelism) == expected


@pytest.mark.parametrize(("n_items", "expected"), [
    (0, 32), (100, 32), (600, 64), (1_955, 128), (2_800, 256), (8_192, 1024), (100_000, 1024),
])
def test_default_batch_size_is_an_eighth_of_the_catalogue_as_a_power_of_two(n_items, expected):
    assert default_batch_size(n_items) == expected
