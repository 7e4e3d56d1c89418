"""Interactions Parquet -> the interaction matrix every trainer reads.

ingest -> validate (rejects) -> deduplicate -> threshold -> index -> split -> matrix.
Every stage runs in Spark; only counts come back to the driver. The outputs
under ``out_dir`` are ``rejects/``, ``id_maps/{users,items}`` and
``matrix/{train,test}``. Each stage's counts go to the active MLflow run as
soon as they are known, so a run that fails later (too many rejects, say)
still shows what it read and rejected.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.config import DataConfig, FeaturesConfig, SplitConfig
from recspark.data.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, WEIGHT
from recspark.data.features import feature_ids
from recspark.data.filtering import apply_min_counts, deduplicate
from recspark.data.indexing import IdSource, apply_id_maps, build_id_maps, load_id_map, save_id_map
from recspark.data.ingest import RejectReport, read_interactions, validate_interactions
from recspark.data.matrix import InteractionMatrix, read_matrix, write_matrix
from recspark.data.split import holdout_split, item_holdout_split, time_split
from recspark.data.synthetic import generate_if_missing
from recspark.errors import ConfigError
from recspark.runs.timing import StageTimer
from recspark.tracking.mlflow_log import log_dict_artifact, log_input_snapshot, log_metrics

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """The matrix plus what the run reports about how it was built."""

    matrix: InteractionMatrix
    counts: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    def id_maps(self, spark: SparkSession) -> tuple[DataFrame, DataFrame]:
        """The ``(users, items)`` id maps this run wrote, read back once for everything that needs ids."""
        return load_id_map(spark, self.paths["id_maps/users"]), load_id_map(spark, self.paths["id_maps/items"])


def ensure_input(spark: SparkSession, data: DataConfig) -> None:
    """Generate the synthetic dataset at ``data.path`` when configured and absent (demo runs)."""
    if data.generate is None:
        return
    root, _, name = data.path.rstrip("/").rpartition("/")  # not pathlib: it would turn hdfs://nn/x into hdfs:/nn
    if name != "interactions":
        raise ConfigError(f"data.path={data.path}: data.generate writes <folder>/interactions, <folder>/item_tags "
                          "and <folder>/user_interests, so data.path must end in /interactions; remove "
                          "data.generate to read your own data")
    root = root or "."
    if generate_if_missing(spark, data.generate, root):
        log.info("generated the synthetic dataset under %s", root)


def prepare_matrix(spark: SparkSession, data: DataConfig, split: SplitConfig, out_dir: str,
                   timer: StageTimer, *, published_dir: str | None = None, previous_id_maps: str | None = None,
                   features: FeaturesConfig | None = None) -> PreparedData:
    """Run the data path and write the matrix; returns it re-read from disk (short lineage).

    Call it inside the job's MLflow run: it logs the counts of every stage
    (``PreparedData.counts``, threshold passes as step metrics) and
    ``data/rejects_summary.json`` there as it goes. ``published_dir``: where
    ``out_dir`` is published at the end of the run (a staging folder's final
    name); the rejects path in the log and the summary names it.
    ``previous_id_maps``: an earlier run's ``id_maps`` folder (nightly retrains); its ids keep their
    indices and new ids are appended (:func:`~recspark.data.indexing.build_id_map` ``existing=``).
    ``features``: ids only in a side's feature files are appended too when its ``cold_start`` is on.
    """
    paths = {name: f"{out_dir}/{name}" for name in ("rejects", "id_maps/users", "id_maps/items", "matrix")}
    counts: dict[str, float] = {}

    def count(new: Mapping[str, float]) -> None:
        counts.update(new)
        log_metrics(new)

    def record_rejects(report: RejectReport) -> None:
        count(report.as_metrics())
        log_dict_artifact(dataclasses.asdict(report), "data/rejects_summary.json")
        log_input_snapshot(spark, data.path, report.rows_read)

    with timer.stage("ingest"):
        raw = read_interactions(spark, data.path, user_col=data.user_col, item_col=data.item_col,
                                weight_col=data.weight_col, timestamp_col=data.timestamp_col,
                                timestamp_format=data.timestamp_format)
        clean, report = validate_interactions(raw, rejects_path=paths["rejects"],
                                              max_reject_fraction=data.max_reject_fraction,
                                              keep_zero_weight=data.keep_zero_weight, config_prefix="data.",
                                              published_path=f"{published_dir}/rejects" if published_dir else None,
                                              on_report=record_rejects)
    with timer.stage("filter"):
        deduped = deduplicate(clean, how=data.dedupe)
        if data.min_weight is not None:
            count({"rows_after_dedupe": deduped.count()})
            deduped = deduped.filter(F.col(WEIGHT) >= data.min_weight)
        filtered, passes = apply_min_counts(deduped, min_user_interactions=data.min_user_interactions,
                                            min_item_interactions=data.min_item_interactions, config_prefix="data.")
        for step in passes:
            log_metrics({"threshold_rows": step.rows, "threshold_users": step.users, "threshold_items": step.items},
                        step=step.pass_number)
        if data.min_weight is None:
            count({"rows_after_dedupe": passes[0].rows})
        else:
            count({"rows_below_min_weight": counts["rows_after_dedupe"] - passes[0].rows})
        count({"threshold_passes": len(passes) - 1, "rows_after_threshold": passes[-1].rows})
    with timer.stage("index"):
        # The training job rebuilds its maps from this run's data; the nightly job extends stored ones.
        old_users, old_items = (None, None) if previous_id_maps is None else (
            load_id_map(spark, f"{previous_id_maps}/users", id_col=USER_ID, idx_col=USER_IDX),
            load_id_map(spark, f"{previous_id_maps}/items", id_col=ITEM_ID, idx_col=ITEM_IDX))
        (user_map, n_users), (item_map, n_items) = build_id_maps(
            [IdSource(filtered, USER_ID, USER_IDX, old_users), IdSource(filtered, ITEM_ID, ITEM_IDX, old_items)])
        if features is not None:
            warm = n_users, n_items
            (user_map, n_users), (item_map, n_items) = _with_feature_only_ids(
                spark, features, [(user_map, n_users), (item_map, n_items)])
        save_id_map(user_map, paths["id_maps/users"], overwrite=True)
        save_id_map(item_map, paths["id_maps/items"], overwrite=True)
        if features is not None:
            count({"cold_users": n_users - warm[0], "cold_items": n_items - warm[1]})
        # Persisted (compact ints), filled by the unmatched-id check: the split would otherwise re-run the join.
        indexed = apply_id_maps(filtered, user_map, item_map, persist=StorageLevel.MEMORY_AND_DISK)
    with timer.stage("split"):
        if split.strategy == "holdout":
            result = holdout_split(indexed, test_user_fraction=split.test_user_fraction, k=split.holdout_k,
                                   seed=split.seed)
        elif split.strategy == "cold_items":
            result = item_holdout_split(indexed, test_item_fraction=split.test_item_fraction, seed=split.seed)
        else:
            result = time_split(indexed, last_n=split.time_last_n, cutoff=split.time_cutoff)
        # Persisted, filled by the counts (which also check disjointness): writing both sides reuses the shuffle.
        result = result.persist(StorageLevel.MEMORY_AND_DISK)
        count(result.counts().as_metrics())
        indexed.unpersist()
        write_matrix(result.train, result.test, paths["matrix"], n_users=n_users, n_items=n_items)
        matrix = read_matrix(spark, paths["matrix"])
        result.unpersist()
    density = (matrix.train_rows + matrix.test_rows) / max(n_users * n_items, 1)
    count({"n_users": n_users, "n_items": n_items, "sparsity": 1.0 - density})
    return PreparedData(matrix=matrix, counts=counts, paths=paths)


def _with_feature_only_ids(spark: SparkSession, features: FeaturesConfig,
                           maps: list[tuple[DataFrame, int]]) -> list[tuple[DataFrame, int]]:
    """The ``[users, items]`` maps and sizes, each plus the ids only in its side's feature files (appended).

    A side grows only when it has feature files and ``cold_start`` on; the growing sides share one sort.
    """
    sides = ((features.users, USER_ID, USER_IDX), (features.items, ITEM_ID, ITEM_IDX))
    grown = {i: IdSource(feature_ids(spark, conf.sources, id_col).select(F.col("id").alias(id_col)), id_col,
                         idx_col, existing=maps[i][0])
             for i, (conf, id_col, idx_col) in enumerate(sides) if conf.sources and conf.cold_start}
    built = dict(zip(grown, build_id_maps(list(grown.values()))))
    return [built.get(i, kept) for i, kept in enumerate(maps)]
