"""Matrix round trip, layout (whole users per file) and refusal of bad shapes."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from recspark.data.columns import ITEM_IDX, USER_IDX, WEIGHT
from recspark.data.matrix import METADATA_FILE, read_matrix, write_matrix
from recspark.errors import DataValidationError

pytestmark = pytest.mark.spark

SCHEMA = f"{USER_IDX} int, {ITEM_IDX} int, {WEIGHT} double"
TRAIN = [(u, i, float(u + i) / 2) for u in range(6) for i in range(4) if (u + i) % 3]
TEST = [(0, 0, 1.0), (4, 1, 2.5)]


def test_matrix_round_trip_with_metadata_and_whole_users_per_file(spark, tmp_path):
    train = spark.createDataFrame(TRAIN, SCHEMA).repartition(3)
    test = spark.createDataFrame(TEST, SCHEMA)
    path = str(tmp_path / "matrix")
    meta = write_matrix(train, test, path, n_users=6, n_items=5, num_partitions=2)

    on_disk = json.loads((tmp_path / "matrix" / METADATA_FILE).read_text())
    assert on_disk == meta
    assert meta == {"format_version": 1, "n_users": 6, "n_items": 5, "train_rows": len(TRAIN), "test_rows": 2}

    m = read_matrix(spark, path)
    assert (m.n_users, m.n_items, m.train_rows, m.test_rows) == (6, 5, len(TRAIN), 2)
    assert m.train.dtypes == [(USER_IDX, "int"), (ITEM_IDX, "int"), (WEIGHT, "float")]
    assert sorted(tuple(r) for r in m.train.collect()) == sorted(TRAIN)  # weights are exact halves
    assert sorted(tuple(r) for r in m.test.collect()) == TEST

    files_per_user = (
        m.train.withColumn("file", F.input_file_name())
        .groupBy(USER_IDX)
        .agg(F.countDistinct("file").alias("files"))
        .collect()
    )
    assert {r["files"] for r in files_per_user} == {1}


def test_write_matrix_refuses_indices_outside_the_shape(spark, tmp_path):
    train = spark.createDataFrame(TRAIN, SCHEMA)
    test = spark.createDataFrame(TEST, SCHEMA)
    path = str(tmp_path / "matrix")
    with pytest.raises(DataValidationError, match=r"user_idx in \[0, 5\].*n_users=5"):
        write_matrix(train, test, path, n_users=5, n_items=5)
    # No metadata was written, so the half-written matrix cannot be read.
    with pytest.raises(DataValidationError, match="_metadata.json"):
        read_matrix(spark, path)
