"""The on-disk interaction matrix every trainer reads.

Layout under ``path``::

    train/            Parquet: user_idx int, item_idx int, weight float
    test/             same schema
    _metadata.json    {"n_users", "n_items", "train_rows", "test_rows", ...}

Each split is range-partitioned by ``user_idx`` and sorted by
``(user_idx, item_idx)`` within partitions, so every file holds whole users
and a contiguous range of them. Why: the WARP trainer shards by user and
evaluation groups by user, so whole users per file avoid a shuffle on read;
contiguous ranges give tight Parquet min/max statistics on ``user_idx`` (a
reader of a user range skips files); and sorted indices compress well.
Weights are float32 because all trainers compute in float32.

``_metadata.json`` is written last: a folder without it is an incomplete write
and :func:`read_matrix` refuses it.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.data import fs
from recspark.data.columns import ITEM_IDX, USER_IDX, WEIGHT
from recspark.errors import DataValidationError

log = logging.getLogger(__name__)

METADATA_FILE = "_metadata.json"
FORMAT_VERSION = 1
MATRIX_SCHEMA = T.StructType(
    [
        T.StructField(USER_IDX, T.IntegerType()),
        T.StructField(ITEM_IDX, T.IntegerType()),
        T.StructField(WEIGHT, T.FloatType()),
    ]
)


@dataclass(frozen=True)
class InteractionMatrix:
    """A train/test interaction matrix as read from disk.

    Attributes
    ----------
    train, test : DataFrame
        ``user_idx`` int, ``item_idx`` int, ``weight`` float; lazy.
    n_users, n_items : int
        Matrix shape (indices are in ``[0, n_users)`` and ``[0, n_items)``);
        may exceed the ids present, since id maps keep ids of past runs.
    train_rows, test_rows : int
        Row counts recorded at write time (no Spark job needed).
    path : str
    """

    train: DataFrame
    test: DataFrame
    n_users: int
    n_items: int
    train_rows: int
    test_rows: int
    path: str


def write_matrix(
    train: DataFrame,
    test: DataFrame,
    path: str,
    *,
    n_users: int,
    n_items: int,
    num_partitions: int | None = None,
) -> dict[str, int]:
    """Write train and test as Parquet plus ``_metadata.json``; return the metadata.

    Counts and index ranges are gathered with an :class:`Observation` during
    the writes themselves (two Spark jobs in total, one per split, plus the
    range partitioner's small sampling jobs). Indices outside the declared shape
    fail the call *before* the metadata is written, so a bad matrix is never
    readable.

    Parameters
    ----------
    train, test : DataFrame
        ``user_idx``, ``item_idx``, ``weight`` (other columns are dropped).
    path : str
        Output folder; ``train``/``test``/``_metadata.json`` are overwritten.
    n_users, n_items : int
        Matrix shape, normally :func:`recspark.data.indexing.map_size` of the
        id maps.
    num_partitions : int, optional
        Files per split; default ``spark.sql.shuffle.partitions``. Aim for
        files of 64-256 MB.

    Returns
    -------
    dict
        The metadata written: ``format_version``, ``n_users``, ``n_items``,
        ``train_rows``, ``test_rows``.

    Raises
    ------
    DataValidationError
        An index is null or outside ``[0, n_users)`` / ``[0, n_items)``.
    """
    spark = train.sparkSession
    if num_partitions is None:
        num_partitions = int(spark.conf.get("spark.sql.shuffle.partitions", "200"))
    if n_users < 0 or n_items < 0 or num_partitions < 1:
        raise DataValidationError(
            f"write_matrix: invalid shape n_users={n_users}, n_items={n_items} or "
            f"num_partitions={num_partitions}."
        )
    root = path.rstrip("/")
    fs.delete(spark, f"{root}/{METADATA_FILE}")  # an interrupted rewrite must not look complete

    meta: dict[str, int] = {"format_version": FORMAT_VERSION, "n_users": n_users, "n_items": n_items}
    for name, df in (("train", train), ("test", test)):
        obs = Observation(f"write_matrix_{name}_{uuid.uuid4().hex[:8]}")
        # Observe after the range repartition so the partitioner's sampling
        # jobs (which also run the plan below it) are not counted.
        out = (
            df.select(
                F.col(USER_IDX).cast("int").alias(USER_IDX),
                F.col(ITEM_IDX).cast("int").alias(ITEM_IDX),
                F.col(WEIGHT).cast("float").alias(WEIGHT),
            )
            .repartitionByRange(num_partitions, USER_IDX)
            .sortWithinPartitions(USER_IDX, ITEM_IDX)
        ).observe(
            obs,
            F.count(F.lit(1)).alias("rows"),
            F.count(F.when(F.col(USER_IDX).isNull() | F.col(ITEM_IDX).isNull(), True)).alias("nulls"),
            F.min(USER_IDX).alias("min_user"),
            F.max(USER_IDX).alias("max_user"),
            F.min(ITEM_IDX).alias("min_item"),
            F.max(ITEM_IDX).alias("max_item"),
        )
        out.write.mode("overwrite").parquet(f"{root}/{name}")
        m = obs.get
        bad_user = m["min_user"] is not None and (m["min_user"] < 0 or m["max_user"] >= n_users)
        bad_item = m["min_item"] is not None and (m["min_item"] < 0 or m["max_item"] >= n_items)
        if m["nulls"] or bad_user or bad_item:
            raise DataValidationError(
                f"write_matrix: {name} at {root}/{name} has {m['nulls']} rows with a null index, "
                f"user_idx in [{m['min_user']}, {m['max_user']}] and item_idx in "
                f"[{m['min_item']}, {m['max_item']}], but the shape is n_users={n_users}, "
                f"n_items={n_items}. Pass n_users/n_items from the id maps used to index "
                "this data (map_size)."
            )
        meta[f"{name}_rows"] = int(m["rows"])
    fs.write_text(spark, f"{root}/{METADATA_FILE}", json.dumps(meta, indent=2, sort_keys=True))
    log.info("wrote matrix %s: %s", root, meta)
    return meta


def read_matrix(spark: SparkSession, path: str) -> InteractionMatrix:
    """Read a matrix written by :func:`write_matrix`.

    Raises
    ------
    DataValidationError
        No ``_metadata.json`` (missing or incomplete write), or train/test
        missing or with the wrong columns.
    """
    root = path.rstrip("/")
    try:
        meta = json.loads(fs.read_text(spark, f"{root}/{METADATA_FILE}"))
    except (PySparkException, OSError, ValueError) as err:
        raise DataValidationError(
            f"read_matrix: no readable {METADATA_FILE} in {root!r} ({str(err).splitlines()[0]}); "
            "the matrix is missing or its write did not finish. Re-run the step that writes it."
        ) from err
    sides = {}
    for name in ("train", "test"):
        try:
            df = spark.read.parquet(f"{root}/{name}")
        except PySparkException as err:
            raise DataValidationError(
                f"read_matrix: cannot read {root}/{name}: {str(err).splitlines()[0]}."
            ) from err
        missing = [c for c in (USER_IDX, ITEM_IDX, WEIGHT) if c not in df.columns]
        if missing:
            raise DataValidationError(
                f"read_matrix: {root}/{name} lacks column(s) {missing} (has {df.columns})."
            )
        sides[name] = df.select(USER_IDX, ITEM_IDX, WEIGHT)
    return InteractionMatrix(
        train=sides["train"],
        test=sides["test"],
        n_users=int(meta["n_users"]),
        n_items=int(meta["n_items"]),
        train_rows=int(meta["train_rows"]),
        test_rows=int(meta["test_rows"]),
        path=root,
    )
