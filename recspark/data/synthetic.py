"""Synthetic implicit-feedback data with planted structure, generated in Spark.

Why a generator of our own: the demo, the end-to-end tests and the benchmarks
need data of any size (10k to 20M rows) whose "right answer" is known, so that a
working collaborative model must beat popularity by a wide margin and a broken
one visibly does not.

The planted structure
---------------------
* Items are split into ``n_clusters`` latent clusters ("genres"). Cluster masses
  follow a Zipf law with exponent ``zipf_exponent / 2`` (some genres are bigger)
  and, inside each cluster, items follow a Zipf law with exponent
  ``zipf_exponent`` over a random ranking. The global item popularity is the
  mass-weighted mixture of the within-cluster distributions.
* Every user prefers ``clusters_per_user`` (a range, e.g. 1-3) clusters, drawn
  in proportion to cluster mass, mixed with Dirichlet(1) weights. Each of the
  user's interactions goes, with probability ``cluster_affinity``, to one of the
  preferred clusters (item drawn by within-cluster popularity) and otherwise to
  the global popularity distribution (noise that popularity can explain).
* User activity is skewed: ``min_user_interactions`` plus a lognormal tail whose
  mean makes the total about ``n_interactions``, capped (see below).
* Optional ``weight`` is a play count ``>= 1`` (geometric), larger on average for
  in-cluster interactions (mean 3.3 versus 1.7), so weights carry signal.
* Optional ``timestamp`` values increase with the order in which a user's rows
  were drawn: each user "joins" at a uniform time in the first 80% of the date
  range and is active until its end, so time-based splits are meaningful.
* Item tags: each item has ``1 + Poisson(tags_per_item - 1)`` distinct tags; each
  tag comes with probability 0.7 from its cluster's three "signature" tags, else
  from a Zipf distribution over all ``n_tags``; so tags are informative side
  features but not a cluster label.

Determinism and memory
----------------------
Users are cut into fixed chunks of about ``rows_per_chunk`` rows (a property of
the spec, not of the cluster). One Spark task per chunk (``spark.range`` +
``mapInArrow``) derives the global structure (item clusters, popularity, tags;
``O(n_items)`` and cached per Python worker) from ``seed`` alone, and its own
randomness from ``np.random.default_rng([seed, 1, chunk_id])``. Hence a retried
task writes identical rows, and the *set* of rows is identical for any number of
Spark partitions. The driver holds nothing ``O(rows)``; an executor holds one
chunk (a few tens of MB for the default chunk size).

Duplicates: a user's candidate items are deduplicated within the user, topping
up in up to four rounds; users whose preferred clusters are too small to supply
enough distinct items end with fewer rows than drawn, so the row count is
approximate (typically within a few percent below ``n_interactions``). The
output has no duplicate ``(user_id, item_id)`` pairs except where bad-row
injection nulls an id.

Examples
--------
As a job (every ``SyntheticSpec`` field is a ``synthetic.*`` config key)::

    ./spark-submit.sh jobs/generate_data.py --conf conf/generate.yaml --set synthetic.n_interactions=2000000
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from recspark.config import SyntheticSpec
from recspark.data import fs
from recspark.data.columns import FEATURE, ITEM_ID, TIMESTAMP, USER_ID, VALUE, WEIGHT
from recspark.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

__all__ = [
    "generate",
    "generate_if_missing",
    "interactions_frame",
    "item_tags_frame",
    "planted_item_clusters",
    "user_interests_frame",
    "FEATURE",
    "VALUE",
    "BAD_ROW_KINDS",
]

#: Kinds of injected bad rows; the weight kinds only occur with ``with_weights``.
BAD_ROW_KINDS = ("null_user_id", "null_item_id", "negative_weight", "nan_weight")

# Seed-stream tags: the global structure, per-user-chunk rows, per-item-chunk tags.
_STREAM_GLOBAL, _STREAM_USERS, _STREAM_TAGS = 0, 1, 2
_ITEMS_PER_TAG_CHUNK = 100_000
_SIGNATURE_TAGS = 3  # per cluster
_TAG_AFFINITY = 0.7  # probability a tag is one of the item's cluster signature tags
_JOIN_FRACTION = 0.8  # users join within the first 80% of the date range
_ACTIVITY_SIGMA = 1.0  # lognormal sigma of per-user activity above the minimum
_TOPUP_ROUNDS = 4
_P_PLAYS_IN_CLUSTER, _P_PLAYS_NOISE = 0.3, 0.6  # geometric play counts
_BATCH_ROWS = 65_536  # Arrow batch size handed back to Spark

_TAG_WORDS = (
    "rock", "pop", "jazz", "blues", "folk", "metal", "punk", "soul", "funk", "disco",
    "house", "techno", "ambient", "classical", "opera", "reggae", "ska", "country",
    "gospel", "hiphop", "rap", "trap", "grime", "dub", "indie", "emo", "grunge",
    "latin", "salsa", "tango", "kpop", "jpop", "lofi", "swing", "bebop", "fusion",
    "drone", "noise", "synth", "wave", "garage", "trance", "dnb", "jungle", "bossa",
    "samba", "afro", "celtic", "baroque", "choral",
)  # fmt: skip


# ---------------------------------------------------------------------------
# Global structure: O(n_items), derived from the seed alone, cached per worker.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Structure:
    item_cluster: npt.NDArray[np.int32]  # [n_items] cluster of each item
    item_prob: npt.NDArray[np.float64]  # [n_items] global popularity, sums to 1
    cluster_mass: npt.NDArray[np.float64]  # [n_clusters] sums to 1
    global_cdf: npt.NDArray[np.float64]  # [n_items] cumulative item_prob
    # Items sorted by cluster; cluster_cdf[j] = cluster + within-cluster cumulative
    # probability, so searchsorted(cluster_cdf, c + u) samples item in cluster c.
    sorted_items: npt.NDArray[np.int64]
    cluster_cdf: npt.NDArray[np.float64]
    signature_tags: npt.NDArray[np.int64]  # [n_clusters, _SIGNATURE_TAGS]
    tag_cdf: npt.NDArray[np.float64]  # [n_tags]


def _zipf(n: int, exponent: float) -> npt.NDArray[np.float64]:
    return 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent


@functools.lru_cache(maxsize=4)
def _structure(spec: SyntheticSpec) -> _Structure:
    rng = np.random.default_rng([spec.seed, _STREAM_GLOBAL])
    n_items, n_clusters = spec.n_items, spec.n_clusters
    # Every cluster gets at least two items, the rest are assigned at random.
    item_cluster = np.concatenate(
        [np.repeat(np.arange(n_clusters), 2), rng.integers(0, n_clusters, n_items - 2 * n_clusters)]
    )
    item_cluster = rng.permutation(item_cluster).astype(np.int32)
    cluster_mass = _zipf(n_clusters, spec.zipf_exponent / 2)[rng.permutation(n_clusters)]
    cluster_mass /= cluster_mass.sum()

    # Within-cluster Zipf over a random order: rank of each item inside its cluster.
    order = np.lexsort((rng.random(n_items), item_cluster))  # by cluster, random within
    sizes = np.bincount(item_cluster, minlength=n_clusters)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.arange(n_items) - np.repeat(starts, sizes)
    within = 1.0 / (rank + 1.0) ** spec.zipf_exponent
    within_sum = np.bincount(item_cluster[order], weights=within, minlength=n_clusters)
    within /= within_sum[item_cluster[order]]
    # Each cluster's probabilities sum to 1, so the running sum over the sorted items
    # is exactly ``cluster + within-cluster cumulative probability``.
    cluster_cdf = np.cumsum(within)
    # Pin each cluster's last entry to c + 1 so rounding never spills into the next.
    cluster_cdf[np.cumsum(sizes) - 1] = np.arange(1, n_clusters + 1)

    item_prob = np.empty(n_items)
    item_prob[order] = within * cluster_mass[item_cluster[order]]
    item_prob /= item_prob.sum()
    global_cdf = np.cumsum(item_prob)
    global_cdf[-1] = 1.0

    tag_weights = _zipf(spec.n_tags, 1.0)[rng.permutation(spec.n_tags)]
    tag_cdf = np.cumsum(tag_weights / tag_weights.sum())
    tag_cdf[-1] = 1.0
    k = min(_SIGNATURE_TAGS, spec.n_tags)
    signature = np.argsort(rng.random((n_clusters, spec.n_tags)), axis=1)[:, :k]
    return _Structure(
        item_cluster=item_cluster,
        item_prob=item_prob,
        cluster_mass=cluster_mass,
        global_cdf=global_cdf,
        sorted_items=order.astype(np.int64),
        cluster_cdf=cluster_cdf,
        signature_tags=signature.astype(np.int64),
        tag_cdf=tag_cdf,
    )


def _id_width(prefix: str, n: int) -> int:
    return max(7 if prefix == "u" else 6, len(str(n - 1)))


def _ids(prefix: str, start: int, stop: int, n_total: int) -> pa.Array:
    width = _id_width(prefix, n_total)
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(start, stop)], type=pa.string())


@functools.lru_cache(maxsize=2)
def _item_ids(n_items: int) -> pa.Array:
    return _ids("i", 0, n_items, n_items)


def _tag_names(n_tags: int) -> list[str]:
    words = len(_TAG_WORDS)
    return [
        f"tag_{_TAG_WORDS[k % words]}{'' if k < words else k // words + 1}" for k in range(n_tags)
    ]


def planted_item_clusters(
    spec: SyntheticSpec,
) -> tuple[list[str], npt.NDArray[np.int32], npt.NDArray[np.float64]]:
    """Ground truth of the planted item structure, for quality checks and tests.

    Parameters
    ----------
    spec : SyntheticSpec
        The spec the data was generated with.

    Returns
    -------
    item_ids : list of str
        All ``n_items`` item ids, in index order.
    cluster : numpy.ndarray of int32, shape [n_items]
        Latent cluster of each item.
    popularity : numpy.ndarray of float64, shape [n_items]
        Global probability that a noise draw picks the item (sums to 1).
    """
    structure = _structure(spec)
    return (
        _item_ids(spec.n_items).to_pylist(),
        structure.item_cluster.copy(),
        structure.item_prob.copy(),
    )


# ---------------------------------------------------------------------------
# Per-chunk generation (runs on executors; pure NumPy + PyArrow).
# ---------------------------------------------------------------------------


def _dedupe_by_user(
    users: npt.NDArray[np.int64], items: npt.NDArray[np.int64], n_items: int
) -> npt.NDArray[np.int64]:
    """Indices of first occurrences of each (user, item), grouped by user in draw order."""
    _, first = np.unique(users * n_items + items, return_index=True)
    first.sort()
    return first[np.argsort(users[first], kind="stable")]


def _chunk_rows(spec: SyntheticSpec, chunk: int) -> dict[str, np.ndarray]:
    """Draw the rows of one user chunk; every array has one entry per row."""
    st = _structure(spec)
    rng = np.random.default_rng([spec.seed, _STREAM_USERS, chunk])
    first_user = chunk * spec.users_per_chunk
    n_local = min(spec.users_per_chunk, spec.n_users - first_user)

    # Activity: minimum + lognormal tail with the mean that hits n_interactions.
    extra_mean = spec.mean_user_interactions - spec.min_user_interactions
    cap = spec.max_user_interactions
    if extra_mean > 0:
        mu = math.log(extra_mean) - _ACTIVITY_SIGMA**2 / 2
        extra = rng.lognormal(mu, _ACTIVITY_SIGMA, n_local)
    else:
        extra = np.zeros(n_local)
    target = np.minimum(spec.min_user_interactions + np.floor(extra + rng.random(n_local)), cap)
    target = target.astype(np.int64)

    # Preferred clusters: Gumbel top-k weighted by cluster mass, Dirichlet(1) mixing.
    lo, hi = spec.clusters_per_user
    n_pref = rng.integers(lo, hi + 1, n_local)
    noise = -np.log(-np.log(rng.random((n_local, spec.n_clusters))))
    gumbel = np.log(st.cluster_mass)[None, :] + noise
    pref = np.argsort(-gumbel, axis=1)[:, :hi]
    mix = rng.exponential(1.0, (n_local, hi)) * (np.arange(hi)[None, :] < n_pref[:, None])
    mix_cdf = np.cumsum(mix / mix.sum(axis=1, keepdims=True), axis=1)
    mix_cdf[:, -1] = 1.0

    def draw(need: npt.NDArray[np.int64]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        user = np.repeat(np.arange(n_local, dtype=np.int64), need)
        in_cluster = rng.random(user.size) < spec.cluster_affinity
        slot = (rng.random(user.size)[:, None] > mix_cdf[user]).sum(axis=1)
        cluster = pref[user, np.minimum(slot, hi - 1)]
        u = rng.random(user.size)
        pos = np.searchsorted(st.cluster_cdf, cluster + u, side="right")
        from_cluster = st.sorted_items[np.minimum(pos, spec.n_items - 1)]
        from_global = np.minimum(np.searchsorted(st.global_cdf, u, side="right"), spec.n_items - 1)
        return user, np.where(in_cluster, from_cluster, from_global), in_cluster

    user = np.empty(0, np.int64)
    item = np.empty(0, np.int64)
    in_cluster = np.empty(0, bool)
    need = target
    for _ in range(_TOPUP_ROUNDS):
        # Oversample a little so one round usually suffices.
        extra = np.where(need > 0, np.ceil(need * 1.2).astype(np.int64) + 1, 0)
        new_user, new_item, new_in = draw(extra)
        user = np.concatenate([user, new_user])
        item = np.concatenate([item, new_item])
        in_cluster = np.concatenate([in_cluster, new_in])
        keep = _dedupe_by_user(user, item, spec.n_items)
        user, item, in_cluster = user[keep], item[keep], in_cluster[keep]
        starts = np.searchsorted(user, np.arange(n_local))
        rank = np.arange(user.size) - starts[user]
        keep = rank < target[user]
        user, item, in_cluster = user[keep], item[keep], in_cluster[keep]
        need = target - np.bincount(user, minlength=n_local)
        if not need.any():
            break

    rows: dict[str, np.ndarray] = {"user": user + first_user, "item": item}
    if spec.with_weights:
        p = np.where(in_cluster, _P_PLAYS_IN_CLUSTER, _P_PLAYS_NOISE)
        rows["weight"] = rng.geometric(p).astype(np.float64)
    if spec.with_timestamps:
        start = dt.datetime.fromisoformat(spec.start_date).replace(tzinfo=dt.timezone.utc)
        start_us = int(start.timestamp()) * 1_000_000
        span_us = spec.time_span_days * 86_400 * 1_000_000
        join = rng.random(n_local) * _JOIN_FRACTION
        # Sorting user + u (u in [0, 1)) sorts u within each user: increasing times.
        frac = np.sort(user + rng.random(user.size)) - user
        frac = join[user] + frac * (1.0 - join[user])
        rows["timestamp"] = start_us + (frac * span_us).astype(np.int64)
    if spec.bad_row_fraction > 0:
        kinds = 4 if spec.with_weights else 2
        bad = rng.random(user.size) < spec.bad_row_fraction
        rows["bad_kind"] = np.where(bad, rng.integers(0, kinds, user.size), -1)
    return rows


def _to_batches(spec: SyntheticSpec, schema: pa.Schema, chunk: int) -> Iterator[pa.RecordBatch]:
    rows = _chunk_rows(spec, chunk)
    first_user = chunk * spec.users_per_chunk
    n_local = min(spec.users_per_chunk, spec.n_users - first_user)
    user_ids = _ids("u", first_user, first_user + n_local, spec.n_users)
    item_ids = _item_ids(spec.n_items)
    kind = rows.get("bad_kind")
    for lo in range(0, rows["user"].size, _BATCH_ROWS):
        sl = slice(lo, lo + _BATCH_ROWS)
        bad = kind[sl] if kind is not None else None
        user_col = user_ids.take(pa.array(rows["user"][sl] - first_user))
        item_col = item_ids.take(pa.array(rows["item"][sl]))
        if bad is not None:
            user_col = _null_where(user_col, bad == 0)
            item_col = _null_where(item_col, bad == 1)
        cols = [user_col, item_col]
        if spec.with_weights:
            weight = rows["weight"][sl].copy()
            if bad is not None:
                weight[bad == 2] = -weight[bad == 2]
                weight[bad == 3] = np.nan
            cols.append(pa.array(weight, type=pa.float64()))
        if spec.with_timestamps:
            cols.append(pa.array(rows["timestamp"][sl], type=schema.field(TIMESTAMP).type))
        yield pa.RecordBatch.from_arrays(cols, schema=schema)


def _null_where(arr: pa.Array, mask: npt.NDArray[np.bool_]) -> pa.Array:
    if not mask.any():
        return arr
    import pyarrow.compute as pc

    return pc.if_else(pa.array(mask), pa.nulls(len(arr), arr.type), arr)


def _tag_chunk(spec: SyntheticSpec, schema: pa.Schema, chunk: int) -> Iterator[pa.RecordBatch]:
    st = _structure(spec)
    rng = np.random.default_rng([spec.seed, _STREAM_TAGS, chunk])
    lo = chunk * _ITEMS_PER_TAG_CHUNK
    hi = min(lo + _ITEMS_PER_TAG_CHUNK, spec.n_items)
    items = np.arange(lo, hi, dtype=np.int64)
    n_tags = 1 + rng.poisson(spec.tags_per_item - 1.0, items.size)
    n_tags = np.minimum(n_tags, spec.n_tags)
    # Oversample 3x then dedupe per item; short items keep what they got (>= 1 tag).
    draws = np.repeat(items, 3 * n_tags)
    from_sig = rng.random(draws.size) < _TAG_AFFINITY
    slot = rng.integers(0, st.signature_tags.shape[1], draws.size)
    sig = st.signature_tags[st.item_cluster[draws], slot]
    glob = np.searchsorted(st.tag_cdf, rng.random(draws.size), side="right")
    glob = np.minimum(glob, spec.n_tags - 1)
    tag = np.where(from_sig, sig, glob)
    keep = _dedupe_by_user(draws, tag, spec.n_tags)
    draws, tag = draws[keep], tag[keep]
    rank = np.arange(draws.size) - np.searchsorted(draws, draws)
    keep = rank < n_tags[draws - lo]
    draws, tag = draws[keep], tag[keep]
    names = pa.array(_tag_names(spec.n_tags), type=pa.string())
    item_ids = _item_ids(spec.n_items)
    for start in range(0, draws.size, _BATCH_ROWS):
        sl = slice(start, start + _BATCH_ROWS)
        yield pa.RecordBatch.from_arrays(
            [
                item_ids.take(pa.array(draws[sl])),
                names.take(pa.array(tag[sl])),
                pa.array(np.ones(draws[sl].size), type=pa.float64()),
            ],
            schema=schema,
        )


def _spark_schema(spec: SyntheticSpec) -> StructType:
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType, TimestampType

    fields = [StructField(USER_ID, StringType(), True), StructField(ITEM_ID, StringType(), True)]
    if spec.with_weights:
        fields.append(StructField(WEIGHT, DoubleType(), True))
    if spec.with_timestamps:
        fields.append(StructField(TIMESTAMP, TimestampType(), True))
    return StructType(fields)


def _arrow_schema(spec: SyntheticSpec, session_tz: str) -> pa.Schema:
    fields = [pa.field(USER_ID, pa.string()), pa.field(ITEM_ID, pa.string())]
    if spec.with_weights:
        fields.append(pa.field(WEIGHT, pa.float64()))
    if spec.with_timestamps:
        fields.append(pa.field(TIMESTAMP, pa.timestamp("us", tz=session_tz)))
    return pa.schema(fields)


_TAGS_ARROW_SCHEMA = pa.schema(
    [pa.field(ITEM_ID, pa.string()), pa.field(FEATURE, pa.string()), pa.field(VALUE, pa.float64())]
)


def _chunk_frame(spark: SparkSession, n_chunks: int, n_partitions: int | None) -> DataFrame:
    n_partitions = n_chunks if n_partitions is None else max(1, min(n_partitions, n_chunks))
    return spark.range(0, n_chunks, 1, numPartitions=n_partitions)


def interactions_frame(
    spark: SparkSession, spec: SyntheticSpec, n_partitions: int | None = None
) -> DataFrame:
    """Lazy DataFrame of the synthetic interactions (what `generate` writes).

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    spec : SyntheticSpec
    n_partitions : int, optional
        Spark partitions (tasks); default one per chunk. Does not change the rows.

    Returns
    -------
    pyspark.sql.DataFrame
        ``user_id`` string, ``item_id`` string, optional ``weight`` double,
        optional ``timestamp`` timestamp; rows grouped by user, in draw order.
    """
    tz = spark.conf.get("spark.sql.session.timeZone") or "UTC"
    arrow_schema = _arrow_schema(spec, tz)

    def gen(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for chunk in batch.column(0).to_pylist():
                yield from _to_batches(spec, arrow_schema, int(chunk))

    return _chunk_frame(spark, spec.n_chunks, n_partitions).mapInArrow(gen, _spark_schema(spec))


def item_tags_frame(
    spark: SparkSession, spec: SyntheticSpec, n_partitions: int | None = None
) -> DataFrame:
    """Lazy DataFrame of item tags in long form: ``item_id``, ``feature``, ``value`` (1.0)."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    schema = StructType(
        [
            StructField(ITEM_ID, StringType(), True),
            StructField(FEATURE, StringType(), True),
            StructField(VALUE, DoubleType(), True),
        ]
    )

    def gen(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for chunk in batch.column(0).to_pylist():
                yield from _tag_chunk(spec, _TAGS_ARROW_SCHEMA, int(chunk))

    n_chunks = math.ceil(spec.n_items / _ITEMS_PER_TAG_CHUNK)
    return _chunk_frame(spark, n_chunks, n_partitions).mapInArrow(gen, schema)


def user_interests_frame(interactions: DataFrame, spec: SyntheticSpec, accuracy: float = 0.7) -> DataFrame:
    """Declared user interests in long form (``user_id``, ``feature``, ``value`` 1.0): user side features.

    Each user "declares" one interest ``c<cluster>``: with probability
    ``accuracy`` the planted cluster most of their interactions fall in, else
    a uniformly random cluster (users' sign-up answers are noisy). The draw
    is a hash of the user id and the spec's seed, so it is deterministic.
    Derived from ``interactions`` (the spec's generated rows).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    item_ids, cluster, _ = planted_item_clusters(spec)
    spark = interactions.sparkSession
    clusters = spark.createDataFrame(list(zip(item_ids, cluster.tolist())), f"{ITEM_ID} string, cluster int")
    counts = interactions.join(F.broadcast(clusters), ITEM_ID).groupBy(USER_ID, "cluster").count()
    rank = F.row_number().over(Window.partitionBy(USER_ID).orderBy(F.desc("count"), "cluster"))
    draw = F.pmod(F.xxhash64(USER_ID, F.lit(spec.seed)), F.lit(1_000_000)) / 1_000_000
    noise = F.pmod(F.xxhash64(USER_ID, F.lit(spec.seed + 1)), F.lit(spec.n_clusters))
    interest = F.when(draw < accuracy, F.col("cluster")).otherwise(noise)
    return counts.withColumn("rank", rank).where(F.col("rank") == 1).select(
        USER_ID, F.concat(F.lit("c"), interest.cast("string")).alias(FEATURE), F.lit(1.0).alias(VALUE))


# ---------------------------------------------------------------------------
# Public entry points.
# ---------------------------------------------------------------------------


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def generate(
    spark: SparkSession, spec: SyntheticSpec, out_dir: str, n_partitions: int | None = None
) -> dict[str, int]:
    """Generate the synthetic dataset and write it as Parquet under ``out_dir``.

    Writes ``out_dir/interactions`` (``user_id`` string, ``item_id`` string,
    optional ``weight`` double, optional ``timestamp`` timestamp) and
    ``out_dir/item_tags`` (``item_id``, ``feature`` like ``tag_rock``, ``value``
    1.0) and ``out_dir/user_interests`` (``user_id``, ``feature`` like ``c3``,
    ``value`` 1.0; see :func:`user_interests_frame`), overwriting them. Ids are zero-padded strings (``u0000123``,
    ``i000045``) so they sort like numbers and cannot be mistaken for indices.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    spec : SyntheticSpec
        What to generate; fully determines the rows.
    out_dir : str
        Local path or Hadoop URI (``hdfs://``, ``s3a://``...).
    n_partitions : int, optional
        Tasks (and files) for the interactions; default one per chunk of about
        ``spec.rows_per_chunk`` rows. Changes the file layout, never the rows.

    Returns
    -------
    dict of str to int
        ``interactions``, ``item_tags`` and ``user_interests``: rows written (read back from the
        Parquet footers, cheap); ``bad_rows``: injected bad rows (a scan, only
        when ``spec.bad_row_fraction > 0``, else 0).
    """
    t0 = time.perf_counter()
    log.info(
        "generating synthetic data: %d users, %d items, ~%d rows in %d chunks, seed %d -> %s",
        spec.n_users, spec.n_items, spec.n_interactions, spec.n_chunks, spec.seed, out_dir,
    )
    inter_path, tags_path = _join(out_dir, "interactions"), _join(out_dir, "item_tags")
    interactions_frame(spark, spec, n_partitions).write.mode("overwrite").parquet(inter_path)
    item_tags_frame(spark, spec).write.mode("overwrite").parquet(tags_path)
    written = spark.read.parquet(inter_path)
    interests_path = _join(out_dir, "user_interests")
    valid = written.where(written[USER_ID].isNotNull() & written[ITEM_ID].isNotNull())
    user_interests_frame(valid, spec).write.mode("overwrite").parquet(interests_path)

    counts = {
        "interactions": written.count(),
        "item_tags": spark.read.parquet(tags_path).count(),
        "user_interests": spark.read.parquet(interests_path).count(),
        "bad_rows": 0,
    }
    if spec.bad_row_fraction > 0:
        from pyspark.sql import functions as F

        cond = F.col(USER_ID).isNull() | F.col(ITEM_ID).isNull()
        if spec.with_weights:
            cond = cond | (F.col(WEIGHT) < 0) | F.isnan(F.col(WEIGHT))
        counts["bad_rows"] = written.filter(cond).count()
    log.info("synthetic data written in %.1fs: %s", time.perf_counter() - t0, counts)
    return counts


#: Written into the folder :func:`generate_if_missing` generated, so later runs know the data is theirs.
GENERATED_MARKER = "_RECSPARK_SYNTHETIC"


def generate_if_missing(spark: SparkSession, spec: SyntheticSpec, out_dir: str) -> bool:
    """Generate into ``out_dir`` unless an earlier call did (for the demo); never over a user's data.

    ``out_dir`` gets ``interactions/``, ``item_tags/``, ``user_interests/`` and the
    :data:`GENERATED_MARKER`. The check does not compare specs: delete ``out_dir`` after
    changing the spec.

    Returns
    -------
    bool
        True if data was generated, False if it was already there.

    Raises
    ------
    ConfigError
        ``out_dir`` has no marker but one of the three folders exists and is not empty
        (someone else's data: it is neither read as synthetic nor replaced).
    """
    marker = _join(out_dir, GENERATED_MARKER)
    if fs.exists(spark, marker):
        log.info("synthetic data already present (%s); not regenerating", marker)
        return False
    for name in ("interactions", "item_tags", "user_interests"):
        target = _join(out_dir, name)
        if not fs.is_empty_dir(spark, target):
            raise ConfigError(f"data.path: {target} already exists and was not generated by recspark (no "
                              f"{marker}); data.generate only writes into a new or empty folder. Remove "
                              "data.generate to train on that data, or point data.path at a new folder")
    generate(spark, spec, out_dir)
    fs.write_text(spark, marker, f"generated by recspark: {spec}\n")
    return True
