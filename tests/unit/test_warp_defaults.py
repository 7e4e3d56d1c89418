"""Automatic shard and task counts (used when the config leaves them null)."""

from __future__ import annotations

import pytest

from recspark.models.warp.trainer import MIN_ROWS_PER_SHARD, default_shards, default_tasks


@pytest.mark.parametrize(("n_rows", "parallelism", "expected"), [
    (0, 8, 1),
    (MIN_ROWS_PER_SHARD - 1, 8, 1),
    (2 * MIN_ROWS_PER_SHARD, 8, 2),
    (1_900_000, 2, 2),
    (20_000_000, 16, 16),
])
def test_default_shards_is_parallelism_capped_by_rows(n_rows, parallelism, expected):
    assert default_shards(n_rows, parallelism) == expected



@pytest.mark.parametrize(("n_shards", "master", "expected"), [
    (2, "local", 1),
    (2, "local[2]", 1),
    (3, "local[*]", 1),
    (4, "spark://host:7077", 4),
    (2, "local-cluster[2,1,1024]", 2),  # separate executor processes: one task per shard
    (5, "yarn", 5),
])
def test_default_tasks_is_one_locally_and_one_per_shard_on_a_cluster(n_shards, master, expected):
    assert default_tasks(n_shards, master) == expected
