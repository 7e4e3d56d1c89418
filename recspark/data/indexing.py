"""Map external string ids to contiguous int32 indices, persistently.

Models store one factor row per index, so indices must be contiguous
(``0 .. n-1``), deterministic (a retried or re-run job gives the same map) and
stable across nightly retrains (an id keeps its index forever; new ids are
appended), which is what makes warm starts and comparisons between runs valid.

A map is a DataFrame with two columns: the id (string) and the index (int).
The lead stores them under ``id_maps/users`` and ``id_maps/items``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.data.columns import ITEM_ID, ITEM_IDX, TIMESTAMP, USER_ID, USER_IDX, WEIGHT
from recspark.errors import DataValidationError

log = logging.getLogger(__name__)

_INT32_MAX = 2**31 - 1
# monotonically_increasing_id() = partition index << 33 | row position in partition.
_POSITION_BITS = 33
_SIDE, _ID = "_side", "_id"  # build_id_maps: which source an id came from, and the id


def build_id_map(
    df: DataFrame,
    id_col: str,
    idx_col: str,
    existing: DataFrame | None = None,
) -> DataFrame:
    """Assign a contiguous int32 index to every distinct id of ``df[id_col]``.

    New ids are numbered in ascending string order, so the map depends only on
    the *set* of ids, never on row order or partitioning. It is computed
    without a single-partition window: the distinct ids are range-partitioned
    and sorted, each row's position inside its partition comes from
    ``monotonically_increasing_id``, and partition offsets come from one small
    per-partition count (one row per partition to the driver). The sorted ids
    are checkpointed so the indices are fixed however often the map is reused.
    :func:`build_id_maps` builds several maps (users and items) in one sort.

    Parameters
    ----------
    df : DataFrame
        Any DataFrame with ``id_col``; ids are cast to string. Null ids get
        no index (:func:`apply_id_maps` then reports them as unmatched).
    id_col : str
        Id column, e.g. ``user_id``.
    idx_col : str
        Name of the index column, e.g. ``user_idx``.
    existing : DataFrame, optional
        A previous map (``id_col``, ``idx_col``), e.g. from
        :func:`load_id_map`. Its ids keep their indices, including ids absent
        from ``df`` (never renumber: factors and downstream tables refer to
        them); ids not in it get ``max(existing idx) + 1, ...`` in ascending
        id order. It is trusted to be a valid map (unique ids, unique indices).

    Returns
    -------
    DataFrame
        ``id_col`` (string), ``idx_col`` (int), one row per id, read from a
        local checkpoint. Its size is ``max(idx) + 1``; see :func:`map_size`.

    Raises
    ------
    DataValidationError
        More ids than fit in int32, or ``existing`` lacks the columns.
    """
    return build_id_maps([IdSource(df, id_col, idx_col, existing)])[0][0]


@dataclass(frozen=True)
class IdSource:
    """One map for :func:`build_id_maps`: the ids of ``df[id_col]``, numbered into ``idx_col`` after ``existing``."""

    df: DataFrame
    id_col: str
    idx_col: str
    existing: DataFrame | None = None


def build_id_maps(sources: Sequence[IdSource]) -> list[tuple[DataFrame, int]]:
    """:func:`build_id_map` for several maps at once, each with its :func:`map_size`.

    The ids of every source are tagged with the source's position, made
    distinct, sorted and checkpointed together, so users and items cost one
    sort, one checkpoint and one per-partition count instead of one each
    (on a small dataset each is a Spark job of fixed cost). A map's indices
    are what :func:`build_id_map` gives it alone: a partition's rows of one
    source follow those of the sources before it, and the offsets count them.
    """
    if not sources:
        return []
    existing: dict[int, DataFrame] = {}  # per source with a previous map: its (id, idx) as string and int
    for side, source in enumerate(sources):
        if source.existing is not None:
            _check_map_columns(source.existing, source.id_col, source.idx_col, "existing id map")
            existing[side] = source.existing.select(F.col(source.id_col).cast("string").alias(source.id_col),
                                                    F.col(source.idx_col).cast("int").alias(source.idx_col))
    starts = [0] * len(sources)
    if existing:  # new ids start after each previous map's largest index: one job for every map
        tops = functools.reduce(DataFrame.unionByName, [
            m.select(F.lit(side).alias(_SIDE), F.col(sources[side].idx_col).alias("_idx"))
            for side, m in existing.items()])
        for r in tops.groupBy(_SIDE).agg(F.max("_idx").alias("top")).collect():
            starts[int(r[_SIDE])] = int(r["top"]) + 1
    tagged = []
    for side, source in enumerate(sources):
        ids = source.df.select(F.lit(side).alias(_SIDE), F.col(source.id_col).cast("string").alias(_ID)).where(
            F.col(_ID).isNotNull())
        if side in existing:
            ids = ids.join(existing[side].select(F.col(source.id_col).alias(_ID)), _ID, "left_anti")
        tagged.append(ids)
    # Checkpointed so the positions (and the partition layout, which AQE could
    # change between two executions) are fixed before offsets are computed.
    ordered = (
        functools.reduce(DataFrame.unionByName, tagged).distinct().orderBy(_SIDE, _ID)
        .withColumn("_mono", F.monotonically_increasing_id()).localCheckpoint(eager=True)
    )
    part = F.shiftright(F.col("_mono"), _POSITION_BITS)
    counts = {(int(r["part"]), int(r[_SIDE])): int(r["n"]) for r in
              ordered.groupBy(part.alias("part"), _SIDE).agg(F.count(F.lit(1)).alias("n")).collect()}
    parts = sorted({p for p, _ in counts})
    position = F.col("_mono").bitwiseAND(F.lit((1 << _POSITION_BITS) - 1))
    maps = []
    for side, (source, start) in enumerate(zip(sources, starts)):
        offsets: dict[int, int] = {}
        running = start
        for p in parts:
            # Rows of earlier sources come first in partition p; this source's rows there start at `running`.
            offsets[p] = running - sum(counts.get((p, s), 0) for s in range(side))
            running += counts.get((p, side), 0)
        if running - 1 > _INT32_MAX:
            raise DataValidationError(
                f"build_id_map: {running} distinct values of {source.id_col!r} do not fit an int32 index."
            )
        offset = (
            F.element_at(F.create_map(*[F.lit(v).cast("long") for kv in offsets.items() for v in kv]), part)
            if offsets
            else F.lit(0).cast("long")
        )
        new = ordered.where(F.col(_SIDE) == side).select(
            F.col(_ID).alias(source.id_col), (offset + position).cast("int").alias(source.idx_col))
        log.info("build_id_map(%s): %d new ids, indices %d..%d", source.id_col, running - start, start, running - 1)
        if side in existing:
            # Materialised: the caller may overwrite the folder ``existing`` was read from.
            new = existing[side].unionByName(new).localCheckpoint(eager=True)
        # max(idx) + 1: new ids end at running - 1; without new ids, running = max(existing idx) + 1.
        maps.append((new, running))
    return maps


def map_size(map_df: DataFrame, idx_col: str | None = None) -> int:
    """Number of index slots (``max(idx) + 1``, 0 for an empty map): ``n_users``/``n_items``.

    ``idx_col`` defaults to the map's integer column.
    """
    idx_col = idx_col or _idx_column_of(map_df)
    top = map_df.agg(F.max(idx_col)).first()[0]
    return 0 if top is None else int(top) + 1


def save_id_map(map_df: DataFrame, path: str, *, overwrite: bool = False) -> None:
    """Write an id map as Parquet, each file sorted by index (easy to inspect and diff).

    A map from :func:`build_id_map` is range-partitioned by id, so its files
    are in index order one after the other too; no global sort (a sampling
    job and a shuffle) is spent on it.

    ``overwrite=False`` refuses to replace an existing map: overwriting a map
    with a renumbered one would silently invalidate every model trained on it.
    """
    idx_col = _idx_column_of(map_df)
    writer = map_df.sortWithinPartitions(idx_col).write.mode("overwrite" if overwrite else "errorifexists")
    try:
        writer.parquet(path)
    except PySparkException as err:
        raise DataValidationError(
            f"save_id_map: cannot write {path!r}: {str(err).splitlines()[0]}. "
            "Use a new path or pass overwrite=True."
        ) from err
    log.info("saved id map to %s", path)


def load_id_map(
    spark: SparkSession,
    path: str,
    *,
    id_col: str | None = None,
    idx_col: str | None = None,
) -> DataFrame:
    """Read an id map written by :func:`save_id_map`.

    Parameters
    ----------
    spark : SparkSession
    path : str
    id_col, idx_col : str, optional
        When given, the map must have these columns (e.g. ``user_id``,
        ``user_idx``), which catches a users/items mix-up early.

    Returns
    -------
    DataFrame
        The id (string) and index (int) columns.

    Raises
    ------
    DataValidationError
        Unreadable path or unexpected columns.
    """
    try:
        df = spark.read.parquet(path)
    except PySparkException as err:
        raise DataValidationError(
            f"load_id_map: cannot read id map at {path!r}: {str(err).splitlines()[0]}. "
            "For a first run, build the map without `existing`."
        ) from err
    if id_col is not None and idx_col is not None:
        _check_map_columns(df, id_col, idx_col, f"id map at {path!r}")
        return df.select(id_col, idx_col)
    return df


def apply_id_maps(
    df: DataFrame,
    user_map: DataFrame,
    item_map: DataFrame,
    *,
    check_unmatched: bool = True,
    persist: StorageLevel | None = None,
) -> DataFrame:
    """Replace ``user_id``/``item_id`` by ``user_idx``/``item_idx``.

    Parameters
    ----------
    df : DataFrame
        ``user_id``, ``item_id``, ``weight`` and optionally ``timestamp``.
    user_map, item_map : DataFrame
        From :func:`build_id_map` (``user_id``/``user_idx``,
        ``item_id``/``item_idx``).
    check_unmatched : bool, default True
        Count rows whose user or item is absent from its map (one Spark job)
        and raise if there are any: an unmapped id means the maps were built
        from different data, and dropping the rows would hide it. False skips
        the job; unmatched rows then get a null index and must be handled by
        the caller.
    persist : StorageLevel, optional
        Persist the result (compact int columns, no string ids) at this level;
        the unmatched check is then the job that fills the cache, so the
        join runs once. The caller unpersists it.

    Returns
    -------
    DataFrame
        ``user_idx`` (int), ``item_idx`` (int), ``weight`` (double),
        ``timestamp`` (timestamp; null when ``df`` has none). Lazy; with
        ``persist`` and the check, materialised.

    Raises
    ------
    DataValidationError
        Some ids are not in the maps (counts and an example id are given).
    """
    ts = F.col(TIMESTAMP) if TIMESTAMP in df.columns else F.lit(None).cast("timestamp")
    joined = (
        df.select(USER_ID, ITEM_ID, WEIGHT, ts.alias(TIMESTAMP))
        .join(user_map.select(USER_ID, USER_IDX), USER_ID, "left")
        .join(item_map.select(ITEM_ID, ITEM_IDX), ITEM_ID, "left")
    )
    out = joined.select(
        F.col(USER_IDX).cast("int").alias(USER_IDX),
        F.col(ITEM_IDX).cast("int").alias(ITEM_IDX),
        F.col(WEIGHT).cast("double").alias(WEIGHT),
        F.col(TIMESTAMP).cast("timestamp").alias(TIMESTAMP),
    )
    if persist is not None:
        out = out.persist(persist)
    if check_unmatched:
        # Counted on the output (its cache when persisted); the example ids only on failure.
        row = out.agg(
            F.count(F.when(F.col(USER_IDX).isNull(), True)).alias("users"),
            F.count(F.when(F.col(ITEM_IDX).isNull(), True)).alias("items"),
        ).first()
        if row["users"] or row["items"]:
            if persist is not None:
                out.unpersist()
            example = joined.agg(
                _first_where(F.col(USER_IDX).isNull(), USER_ID).alias("user"),
                _first_where(F.col(ITEM_IDX).isNull(), ITEM_ID).alias("item"),
            ).first()
            raise DataValidationError(
                f"apply_id_maps: {row['users']} rows have a user_id missing from the user map "
                f"(e.g. {example['user']!r}) and {row['items']} rows an item_id missing from the item "
                f"map (e.g. {example['item']!r}). Build the maps from the same (filtered) interactions "
                "you index, passing the previous map as `existing`."
            )
    return out


def _first_where(cond, col: str):
    """Some value of ``col`` among rows where ``cond`` holds (for error messages)."""
    return F.first(F.when(cond, F.coalesce(F.col(col), F.lit("<null>"))), ignorenulls=True)


def _idx_column_of(map_df: DataFrame) -> str:
    ints = [f.name for f in map_df.schema.fields if isinstance(f.dataType, (T.IntegerType, T.LongType))]
    if len(ints) != 1:
        raise DataValidationError(
            f"id map: expected exactly one integer index column, found columns {map_df.columns}."
        )
    return ints[0]


def _check_map_columns(df: DataFrame, id_col: str, idx_col: str, what: str) -> None:
    missing = [c for c in (id_col, idx_col) if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{what}: missing column(s) {missing}; it has {df.columns}. "
            f"Expected ({id_col!r}, {idx_col!r}); was a user map passed for items or vice versa?"
        )
