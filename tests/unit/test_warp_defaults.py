"""Automatic shard and task counts (used when the config leaves them null), and checks made before Spark runs."""

from __future__ import annotations

import pytest
import scipy.sparse as sp

from recspark.errors import DataValidationError
from recspark.models.warp.kernel import KernelParams
from recspark.models.warp.trainer import MIN_ROWS_PER_SHARD, TrainerParams, WarpTrainer, default_shards, default_tasks


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


def test_item_features_of_another_catalogue_are_a_data_error_before_spark_runs():
    # DataValidationError maps to exit code 3 (invalid input data); a bare ValueError was exit code 1.
    trainer = WarpTrainer(None, KernelParams(), TrainerParams())  # no Spark: checked before it is used
    with pytest.raises(DataValidationError, match="item_features has 4 rows but there are 5 items"):
        trainer.fit(None, n_users=3, n_items=5, item_features=sp.identity(4, format="csr"))
