"""Side features from long-form Parquet (``<id>, feature, value``) -> a side's feature matrix.

LightFM represents an item as the sum of its features' embeddings; with side
features (tags, categories, binned prices) items that share features share
signal, and an item nobody has interacted with yet still has a representation.
This module turns feature files into that matrix, with the options the seed
posts asked for:

* each file is a *group* whose names get its prefix (``tag_rock``), so groups
  never collide and outputs can filter by group;
* numeric groups (price, age) are discretised per feature name into quantile
  bins (``price_q3``): bins learned better than raw numbers in the seed;
* identity features (one per item, first in the vocabulary) on or off;
* rows normalised to sum 1, so an item with 30 tags does not dominate;
* features on fewer than ``min_frequency`` items dropped (counted per group).

Bad rows (null id or feature name, null/NaN/infinite/negative value, an id
that is not in the id map) are written to ``rejects/<side>_features_<group>``
with their reason and counted; they never shift an index. Ids in the feature
files but not in the interactions are only kept when the caller extended the
id map with them (cold start, see :func:`feature_ids`).

The weighted entries (``row, col, value``) are computed in Spark. Items
collect them into a CSR matrix on the driver: O(items x features per item),
the same order as the item-side state the trainer keeps there. Users keep
them distributed (O(users) never reaches the driver); the trainer ships each
shard its users' rows.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from pyspark.sql import DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from recspark.config import FeatureSource, SideFeatures
from recspark.data.columns import FEATURE, REASON, VALUE
from recspark.data.ingest import input_errors
from recspark.errors import DataValidationError

log = logging.getLogger(__name__)

#: Reject reasons of feature rows, in priority order (a row is counted under its first).
FEATURE_REJECT_REASONS: tuple[str, ...] = (
    "missing_id",  # null or blank id
    "missing_feature",  # null or blank feature name
    "missing_value",  # null or NaN value
    "infinite_value",
    "negative_value",  # a weight below 0 (numeric groups may be negative: they are binned)
    "unknown_id",  # id not in the id map (not in the interactions, and not added for cold start)
)


@dataclass
class GroupReport:
    """What happened to one feature file: rows, rejects per reason, features kept and dropped."""

    group: str
    path: str
    rows_read: int
    rejects: dict[str, int]
    rejects_path: str
    features_kept: int = 0
    features_dropped: int = 0  # below min_frequency

    def as_metrics(self, side: str) -> dict[str, float]:
        prefix = f"features_{side}_{self.group}_"
        return {f"{prefix}rows_read": self.rows_read, f"{prefix}rows_rejected": sum(self.rejects.values()),
                f"{prefix}kept": self.features_kept, f"{prefix}dropped_min_frequency": self.features_dropped}


@dataclass
class FeatureMatrix:
    """A side's feature matrix: row ``r`` holds the weights of item (or user) index ``r``.

    Columns ``0 .. n_identity - 1`` are the identity features (column ``r`` is
    row ``r``'s own), the rest are side features named by ``names`` (column
    ``n_identity + j`` is ``names[j]``). ``entries`` holds the non-zero
    weights as a DataFrame (``row``, ``col``, ``value``); ``matrix`` is the
    same collected as CSR (items), or None where it must stay distributed (users).
    """

    matrix: sp.csr_matrix | None
    names: list[str]
    n_identity: int
    reports: list[GroupReport] = field(default_factory=list)
    group_alpha: dict[str, float] = field(default_factory=dict)  # per-group extra L2 (FeatureSource.alpha)
    entries: DataFrame | None = None

    @property
    def n_features(self) -> int:
        return self.n_identity + len(self.names)

    def feature_index(self, name: str) -> int:
        """Column of side feature ``name`` (e.g. ``tag_rock``); KeyError naming close matches if absent."""
        try:
            return self.n_identity + self.names.index(name)
        except ValueError:
            close = [n for n in self.names if name.split("_")[-1] in n][:5]
            raise KeyError(f"no feature {name!r}" + (f"; similar: {close}" if close else "")) from None

    def feature_alpha(self) -> np.ndarray | None:
        """Per-column extra L2 from the groups' ``alpha`` (identity columns 0); None when all are 0."""
        if not any(self.group_alpha.values()):
            return None
        alpha = np.zeros(self.n_features, dtype=np.float32)
        for group, value in self.group_alpha.items():
            alpha[self.group_columns(group)] = value
        return alpha

    def group_columns(self, group: str) -> np.ndarray:
        """Columns of a group's features (prefix ``<group>_``)."""
        prefix = f"{group}_"
        return np.array([self.n_identity + j for j, n in enumerate(self.names) if n.startswith(prefix)],
                        dtype=np.int64)


def read_source(spark: SparkSession, source: FeatureSource, default_id_col: str) -> DataFrame:
    """One feature file as ``id`` (string), ``feature`` (string), ``value`` (double); columns checked."""
    id_col = source.id_col or default_id_col
    where = f"features group {source.group!r} at {source.path!r}"
    try:
        raw = spark.read.parquet(source.path)
    except Exception as err:  # AnalysisException for a missing path
        raise DataValidationError(f"{where}: cannot read Parquet: {str(err).splitlines()[0]}") from None
    wanted = [c for c in (id_col, source.feature_col, source.value_col) if c]
    missing = [c for c in wanted if c not in raw.columns]
    if missing:
        raise DataValidationError(f"{where}: missing column(s) {missing}; available: {raw.columns}. Set "
                                  "id_col / feature_col / value_col of this source.")
    value = F.col(source.value_col).cast("double") if source.value_col else F.lit(1.0)
    return raw.select(F.col(id_col).cast("string").alias("id"), F.col(source.feature_col).cast("string")
                      .alias(FEATURE), value.alias(VALUE))


def feature_ids(spark: SparkSession, sources: list[FeatureSource], default_id_col: str) -> DataFrame:
    """Distinct non-blank ids of the feature files (to extend an id map with feature-only, cold rows)."""
    frames = [read_source(spark, s, default_id_col).select("id") for s in sources]
    ids = frames[0]
    for frame in frames[1:]:
        ids = ids.unionByName(frame)
    return ids.where(F.trim(F.col("id")) != "").distinct()


def build_feature_matrix(
    spark: SparkSession,
    conf: SideFeatures,
    id_map: DataFrame,
    id_col: str,
    idx_col: str,
    n_rows: int,
    rejects_dir: str,
    side: str = "item",
    collect: bool = True,
) -> FeatureMatrix:
    """The side's feature matrix from ``conf.sources`` over the ``n_rows`` indices of ``id_map``.

    Parameters
    ----------
    conf : SideFeatures
        Sources and options (identity, normalize, min_frequency).
    id_map : DataFrame
        ``id_col`` (string), ``idx_col`` (int): the side's id map.
    n_rows : int
        Rows of the matrix (the id map's size).
    rejects_dir : str
        Bad feature rows go to ``<rejects_dir>/<side>_features_<group>``.
    collect : bool
        Also collect the entries into ``matrix`` (CSR on the driver); False
        for users, whose entries stay a DataFrame.

    Raises
    ------
    DataValidationError
        A file is unreadable or lacks a column, or no feature is left and
        identity features are off (rows would have no representation).
    """
    reports: list[GroupReport] = []
    kept_frames: list[DataFrame] = []
    ids = id_map.select(F.col(id_col).alias("id"), F.col(idx_col).alias("row"))
    for source in conf.sources:
        rows, report = _validated(spark, source, id_col, ids, f"{rejects_dir}/{side}_features_{source.group}")
        reports.append(report)
        named = _binned(rows, source) if source.numeric else rows.withColumn(
            FEATURE, F.concat(F.lit(f"{source.group}_"), F.trim(F.col(FEATURE))))
        kept_frames.append(named.select("row", FEATURE, VALUE, F.lit(source.group).alias("group")))

    names: list[str] = []
    n_identity = n_rows if conf.identity else 0
    parts: list[DataFrame] = []
    if conf.identity:
        parts.append(spark.range(n_rows).select(F.col("id").cast("int").alias("row"), F.col("id").cast("int")
                                                .alias("col"), F.lit(1.0).alias(VALUE)))
    if kept_frames:
        side_df = kept_frames[0]
        for frame in kept_frames[1:]:
            side_df = side_df.unionByName(frame)
        # Duplicate (row, feature) pairs keep their largest weight.
        side_df = side_df.groupBy("row", FEATURE, "group").agg(F.max(VALUE).alias(VALUE))
        frequency = side_df.groupBy(FEATURE, "group").agg(F.count("*").alias("n"))
        counted = {(r[FEATURE], r["group"]): r["n"] for r in frequency.collect()}  # O(features)
        names = sorted(name for (name, _), n in counted.items() if n >= conf.min_frequency)
        for report in reports:
            report.features_kept = sum(1 for (_, g), n in counted.items()
                                       if g == report.group and n >= conf.min_frequency)
            report.features_dropped = sum(1 for (_, g), n in counted.items()
                                          if g == report.group and n < conf.min_frequency)
        columns = spark.createDataFrame([(name, n_identity + j) for j, name in enumerate(names)],
                                        f"{FEATURE} string, col int")
        parts.append(side_df.join(F.broadcast(columns), FEATURE).select("row", "col", VALUE))
    if not parts:
        raise DataValidationError(f"{side} features: identity features are off and there are no feature sources; "
                                  f"every {side} would have no representation.")
    entries = parts[0]
    for part in parts[1:]:
        entries = entries.unionByName(part)
    if not conf.identity:
        empty_rows = n_rows - entries.select("row").distinct().count()
        if empty_rows:
            raise DataValidationError(
                f"{side} features: {empty_rows} of {n_rows} {side}s have no feature left and identity features "
                f"are off, so they would have no representation. Turn features.{side}s.identity on, lower "
                f"features.{side}s.min_frequency, or add features for them.")
    if conf.normalize:
        # Each row's weights divided by their sum, so an item with 30 tags does not dominate.
        total = F.sum(VALUE).over(Window.partitionBy("row"))
        entries = entries.withColumn(VALUE, F.when(total > 0, F.col(VALUE) / total).otherwise(F.lit(0.0)))
    entries = entries.select(F.col("row").cast("int"), F.col("col").cast("int"), F.col(VALUE).cast("float"))
    for report in reports:
        log.info("%s features %s: %d rows, %d rejected, %d features kept, %d dropped (< %d %ss)", side,
                 report.group, report.rows_read, sum(report.rejects.values()), report.features_kept,
                 report.features_dropped, conf.min_frequency, side)
    features = FeatureMatrix(None, names, n_identity, reports, {src.group: src.alpha for src in conf.sources},
                             entries)
    if collect:
        features.matrix = entries_to_csr(entries, n_rows, features.n_features)
    return features


def entries_to_csr(entries: DataFrame, n_rows: int, n_features: int) -> sp.csr_matrix:
    """Collect ``row, col, value`` entries into a float32 CSR matrix (driver: use for O(items) sides only)."""
    pdf = entries.toPandas()
    matrix = sp.csr_matrix((pdf[VALUE].to_numpy(np.float32), (pdf["row"].to_numpy(np.int64),
                                                               pdf["col"].to_numpy(np.int64))),
                           shape=(n_rows, n_features), dtype=np.float32)
    matrix.sum_duplicates()
    return matrix


def _validated(spark: SparkSession, source: FeatureSource, id_col: str, ids: DataFrame,
               rejects_path: str) -> tuple[DataFrame, GroupReport]:
    """Rows of ``source`` with a known id and a usable name and value; the others written to rejects."""
    raw = read_source(spark, source, id_col)
    value = F.col(VALUE)
    reason = (F.when(F.col("id").isNull() | (F.trim(F.col("id")) == ""), "missing_id")
              .when(F.col(FEATURE).isNull() | (F.trim(F.col(FEATURE)) == ""), "missing_feature")
              .when(value.isNull() | F.isnan(value), "missing_value")
              .when(F.abs(value) == float("inf"), "infinite_value"))
    if not source.numeric:
        reason = reason.when(value < 0, "negative_value")
    reason = reason.when(F.col("row").isNull(), "unknown_id")
    tagged = raw.join(ids, "id", "left").withColumn(REASON, reason)
    observation = Observation(f"features_{source.group}_{uuid.uuid4().hex[:8]}")
    observed = tagged.observe(observation, F.count(F.lit(1)).alias("rows_read"),
                              *[F.count(F.when(F.col(REASON) == r, True)).alias(r) for r in FEATURE_REJECT_REASONS])
    with input_errors(f"features group {source.group!r}"):
        observed.where(F.col(REASON).isNotNull()).select("id", FEATURE, F.col(VALUE).cast("string").alias(VALUE), REASON) \
            .write.mode("overwrite").parquet(rejects_path)
    metrics = observation.get
    report = GroupReport(source.group, source.path, int(metrics["rows_read"]),
                         {r: int(metrics[r]) for r in FEATURE_REJECT_REASONS if int(metrics[r])}, rejects_path)
    return tagged.where(F.col(REASON).isNull()).select("row", FEATURE, VALUE), report


def _binned(rows: DataFrame, source: FeatureSource) -> DataFrame:
    """Numeric values -> ``<group>_<name>_q<bin>`` with weight 1; bins are quantiles per feature name.

    ``percent_rank`` gives tied values the same bin, so a bin boundary never
    splits equal prices.
    """
    name = F.trim(F.col(FEATURE))
    rank = F.percent_rank().over(Window.partitionBy(name).orderBy(VALUE))
    bin_no = F.least(F.floor(rank * source.bins), F.lit(source.bins - 1)).cast("int")
    return rows.select("row", F.concat(F.lit(f"{source.group}_"), name, F.lit("_q"), bin_no.cast("string"))
                       .alias(FEATURE), F.lit(1.0).alias(VALUE))
