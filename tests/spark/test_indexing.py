"""Id maps: contiguous, deterministic, stable when extended, persisted, applied."""

from __future__ import annotations

import pytest

from recspark.data.columns import ITEM_ID, ITEM_IDX, TIMESTAMP, USER_ID, USER_IDX, WEIGHT
from recspark.data.indexing import (
    IdSource,
    apply_id_maps,
    build_id_map,
    build_id_maps,
    load_id_map,
    map_size,
    save_id_map,
)
from recspark.errors import DataValidationError

pytestmark = pytest.mark.spark

IDS = ["b", "a", "d", "c", "a", "e", "b", "f", "10", "9"]
# Sorted as strings: "10" < "9" < "a" < ...
EXPECTED = {"10": 0, "9": 1, "a": 2, "b": 3, "c": 4, "d": 5, "e": 6, "f": 7}


def _as_dict(map_df, id_col=USER_ID, idx_col=USER_IDX):
    return {r[id_col]: r[idx_col] for r in map_df.collect()}


def test_id_map_is_contiguous_and_independent_of_row_order_and_partitioning(spark):
    maps = []
    for ids, partitions in ((IDS, 1), (IDS[::-1], 3), (sorted(IDS), 4)):
        df = spark.createDataFrame([(i,) for i in ids], f"{USER_ID} string").repartition(partitions)
        map_df = build_id_map(df, USER_ID, USER_IDX)
        maps.append(_as_dict(map_df))
        assert map_df.dtypes == [(USER_ID, "string"), (USER_IDX, "int")]
    assert maps == [EXPECTED] * 3
    assert map_size(map_df) == 8


def test_id_map_offsets_are_right_across_many_sorted_partitions(spark):
    # Force several range partitions so the per-partition offsets are exercised.
    ids = [f"id{n:03d}" for n in range(200)]
    df = spark.createDataFrame([(i,) for i in reversed(ids)], f"{USER_ID} string").repartition(3)
    conf = {"spark.sql.shuffle.partitions": "5", "spark.sql.adaptive.coalescePartitions.enabled": "false"}
    old = {k: spark.conf.get(k) for k in conf}
    try:
        for k, v in conf.items():
            spark.conf.set(k, v)
        map_df = build_id_map(df, USER_ID, USER_IDX)
        assert map_df.rdd.getNumPartitions() > 1
        assert _as_dict(map_df) == {i: n for n, i in enumerate(ids)}
    finally:
        for k, v in old.items():
            spark.conf.set(k, v)


def test_maps_built_together_match_maps_built_alone_across_partitions(spark, tmp_path):
    # Issue 18.5: users and items share one sort; partitions then hold rows of both sources, and each map
    # must still be numbered as if built alone (here with an existing map on one side).
    users = [f"u{n:03d}" for n in range(150)]
    items = [f"i{n:03d}" for n in range(90)]
    rows = [(users[n % 150], items[(7 * n) % 90]) for n in range(400)]
    df = spark.createDataFrame(rows, f"{USER_ID} string, {ITEM_ID} string").repartition(3)
    existing = spark.createDataFrame([("i050", 0), ("zz", 1)], f"{ITEM_ID} string, {ITEM_IDX} int")
    conf = {"spark.sql.shuffle.partitions": "5", "spark.sql.adaptive.coalescePartitions.enabled": "false"}
    old = {k: spark.conf.get(k) for k in conf}
    try:
        for k, v in conf.items():
            spark.conf.set(k, v)
        (user_map, n_users), (item_map, n_items) = build_id_maps(
            [IdSource(df, USER_ID, USER_IDX), IdSource(df, ITEM_ID, ITEM_IDX, existing=existing)])
        assert user_map.rdd.getNumPartitions() > 1
        alone_users = _as_dict(build_id_map(df, USER_ID, USER_IDX))
        alone_items = _as_dict(build_id_map(df, ITEM_ID, ITEM_IDX, existing=existing), ITEM_ID, ITEM_IDX)
        path = str(tmp_path / "users")
        save_id_map(user_map, path)
    finally:
        for k, v in old.items():
            spark.conf.set(k, v)
    assert _as_dict(user_map) == alone_users == {u: n for n, u in enumerate(users)}
    new_items = [i for i in items if i != "i050"]
    assert _as_dict(item_map, ITEM_ID, ITEM_IDX) == alone_items == {
        "i050": 0, "zz": 1, **{i: n + 2 for n, i in enumerate(new_items)}}
    assert (n_users, n_items) == (150, 91)
    # Saved without a global sort, the files read in name order are still in index order.
    import pandas as pd
    from pathlib import Path
    files = sorted(Path(path).glob("part-*.parquet"))
    assert len(files) > 1
    assert pd.concat(pd.read_parquet(f) for f in files)[USER_IDX].tolist() == list(range(150))


def test_id_map_with_existing_keeps_known_indices_and_appends_new_ids_in_order(spark):
    existing = spark.createDataFrame([("m", 0), ("z", 1), ("b", 2)], f"{USER_ID} string, {USER_IDX} int")
    df = spark.createDataFrame([("c",), ("b",), ("a",), ("m",)], f"{USER_ID} string").repartition(2)
    extended = build_id_map(df, USER_ID, USER_IDX, existing=existing)
    # "z" is absent today but keeps its slot: indices are never reused.
    assert _as_dict(extended) == {"m": 0, "z": 1, "b": 2, "a": 3, "c": 4}
    assert map_size(extended) == 5
    # Extending with nothing new is a no-op.
    again = build_id_map(df, USER_ID, USER_IDX, existing=extended)
    assert _as_dict(again) == _as_dict(extended)


def test_id_map_save_load_round_trip_and_no_silent_overwrite(spark, tmp_path):
    df = spark.createDataFrame([(i,) for i in IDS], f"{ITEM_ID} string")
    map_df = build_id_map(df, ITEM_ID, ITEM_IDX)
    path = str(tmp_path / "id_maps" / "items")
    save_id_map(map_df, path)
    loaded = load_id_map(spark, path, id_col=ITEM_ID, idx_col=ITEM_IDX)
    assert _as_dict(loaded, ITEM_ID, ITEM_IDX) == EXPECTED
    with pytest.raises(DataValidationError, match="overwrite=True"):
        save_id_map(map_df, path)
    with pytest.raises(DataValidationError, match="user_idx"):
        load_id_map(spark, path, id_col=USER_ID, idx_col=USER_IDX)
    with pytest.raises(DataValidationError, match="missing_map"):
        load_id_map(spark, str(tmp_path / "missing_map"))


def test_apply_id_maps_replaces_ids_and_refuses_unknown_ids(spark):
    users = spark.createDataFrame([("u1", 0), ("u2", 1)], f"{USER_ID} string, {USER_IDX} int")
    items = spark.createDataFrame([("i1", 0), ("i2", 1)], f"{ITEM_ID} string, {ITEM_IDX} int")
    df = spark.createDataFrame(
        [("u1", "i2", 2.0), ("u2", "i1", 1.0)], f"{USER_ID} string, {ITEM_ID} string, {WEIGHT} double"
    )
    out = apply_id_maps(df, users, items)
    assert out.dtypes == [(USER_IDX, "int"), (ITEM_IDX, "int"), (WEIGHT, "double"), (TIMESTAMP, "timestamp")]
    assert sorted((r[USER_IDX], r[ITEM_IDX], r[WEIGHT]) for r in out.collect()) == [(0, 1, 2.0), (1, 0, 1.0)]

    unknown = df.union(spark.createDataFrame([("u9", "i1", 1.0)], df.schema))
    with pytest.raises(DataValidationError) as err:
        apply_id_maps(unknown, users, items)
    assert "1 rows have a user_id missing" in str(err.value) and "'u9'" in str(err.value)


def test_persisted_apply_id_maps_and_sized_maps_give_the_same_results(spark):
    # Issue 18.5: the prepare path persists the indexed rows (filled by the unmatched check) and takes the map
    # sizes from build_id_maps instead of a map_size job each.
    from pyspark import StorageLevel

    df = spark.createDataFrame(
        [("u1", "i2", 2.0), ("u2", "i1", 1.0), ("u3", "i1", 1.0)],
        f"{USER_ID} string, {ITEM_ID} string, {WEIGHT} double",
    )
    (users, n_users), (items, n_items) = build_id_maps([IdSource(df, USER_ID, USER_IDX),
                                                        IdSource(df, ITEM_ID, ITEM_IDX)])
    assert (n_users, n_items) == (map_size(users), map_size(items)) == (3, 2)
    more = spark.createDataFrame([("u0",), ("u9",)], f"{USER_ID} string")
    [(grown, n_grown)] = build_id_maps([IdSource(more, USER_ID, USER_IDX, existing=users)])
    assert n_grown == map_size(grown) == 5
    assert build_id_maps([IdSource(df.limit(0), USER_ID, USER_IDX)])[0][1] == 0
    plain = apply_id_maps(df, users, items)
    cached = apply_id_maps(df, users, items, persist=StorageLevel.MEMORY_AND_DISK)
    assert cached.is_cached and sorted(cached.collect()) == sorted(plain.collect())
    cached.unpersist()
    with pytest.raises(DataValidationError, match="1 rows have a user_id missing.*'u9'"):
        apply_id_maps(df.union(spark.createDataFrame([("u9", "i1", 1.0)], df.schema)), users, items,
                      persist=StorageLevel.MEMORY_AND_DISK)
