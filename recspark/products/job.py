"""The embedding-products job: read a trained model, write its neighbour tables, log to MLflow.

Input is a training run's output directory (``source.run_dir``) and one model
in it (``source.model``):

* ``warp``/``bpr``: ``models/<model>/model`` (a :class:`RankingFMModel`): item
  representations, and side-feature embeddings when it was trained with
  ``features.items``;
* ``als``: ``models/als/item_factors`` (``item_id``, ``item_idx``, ``features``);
  ALS has no side features, so the feature products are skipped.

Explanations also read ``id_maps/users``, ``matrix/train`` and
``recommendations/<model>`` of the same run.

Outputs go to ``<output>/products/<model>/<product>`` (Parquet, original ids
and feature names) plus ``_manifest.json``. Like the training job, a run
writes into ``<...>/products/<model>.staging`` and publishes it by one rename
(:class:`~recspark.runs.outputs.StagedOutput`), so readers see either the
previous run's products or this run's, never a mix; products not computed by
this run are not carried over.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession

from recspark.config import ModelSource, ProductsConfig
from recspark.data import fs
from recspark.data.columns import FEATURES, ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.data.indexing import load_id_map
from recspark.data.matrix import read_matrix
from recspark.errors import DataValidationError
from recspark.models.warp.estimator import RankingFMModel
from recspark.runs.outputs import StagedOutput, protected_paths
from recspark.runs.timing import StageTimer
from recspark.redact import redact
from recspark.products.similarity import (
    Embeddings,
    explanations,
    feature_items,
    feature_suggestions,
    group_rows,
    similar_features,
    similar_items,
)
from recspark.tracking.mlflow_log import (
    log_config,
    log_dict_artifact,
    log_metrics,
    log_params,
    mlflow_run,
    resolve_tracking_uri,
    run_name,
)

log = logging.getLogger(__name__)

#: Products that need side-feature embeddings (WARP/BPR trained with ``features.items``).
FEATURE_PRODUCTS = ("feature_items", "feature_suggestions", "similar_features")


@dataclass
class ModelEmbeddings:
    """What the products need from a trained model, on the driver (O(items x dim)).

    ``items`` rows are ``item_idx``. ``features``/``item_features`` are None
    for a model without side features; ``item_features`` is [n_items,
    n_features] (which side features each item has, columns as ``features``).
    """

    model: str
    items: Embeddings
    features: Embeddings | None = None
    item_features: sp.csr_matrix | None = None


@dataclass
class ProductsSummary:
    """What a products run wrote: for the job's log and for tests."""

    run_id: str
    tracking_uri: str
    out_dir: str
    outputs: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # product -> reason
    timings: dict[str, float] = field(default_factory=dict)


def _require(spark: SparkSession, path: str, what: str) -> None:
    if not fs.exists(spark, path):
        raise DataValidationError(f"{what} not found at {path}; check source.run_dir and source.model "
                                  "(the training run must have trained that model)")


def _item_keys(item_map: DataFrame, n_rows: int) -> np.ndarray:
    """``item_id`` per ``item_idx`` row (None where the map has no id)."""
    pdf = item_map.select(ITEM_ID, ITEM_IDX).toPandas()
    keys = np.full(n_rows, None, dtype=object)
    idx = pdf[ITEM_IDX].to_numpy()
    inside = (idx >= 0) & (idx < n_rows)
    keys[idx[inside]] = pdf[ITEM_ID].to_numpy(dtype=object)[inside]
    return keys


def load_model_embeddings(spark: SparkSession, source: ModelSource) -> ModelEmbeddings:
    """Item (and side-feature) vectors of the source model, keyed by original ids / feature names."""
    run = source.run_dir.rstrip("/")
    if source.model == "als":
        path = f"{run}/models/als/item_factors"
        _require(spark, path, "ALS item factors")
        pdf = spark.read.parquet(path).select(ITEM_ID, ITEM_IDX, FEATURES).toPandas()
        if pdf.empty:
            raise DataValidationError(f"{path} has no rows")
        idx = pdf[ITEM_IDX].to_numpy()
        lengths = {len(v) for v in pdf[FEATURES]}
        if len(lengths) != 1 or idx.min() < 0 or len(np.unique(idx)) != len(idx):
            raise DataValidationError(f"{path}: expected one factor row of one rank per item_idx >= 0")
        vectors = np.zeros((int(idx.max()) + 1, lengths.pop()), dtype=np.float32)
        vectors[idx] = np.stack(pdf[FEATURES].to_numpy()).astype(np.float32)
        keys = np.full(len(vectors), None, dtype=object)
        keys[idx] = pdf[ITEM_ID].to_numpy(dtype=object)
        log.info("ALS item factors: %d items x %d", len(pdf), vectors.shape[1])
        return ModelEmbeddings("als", Embeddings(keys, vectors))
    path = f"{run}/models/{source.model}/model"
    _require(spark, path, f"{source.model} model")
    model = RankingFMModel.read().session(spark).load(path)
    reps, _biases = model.state.item_representations()  # biases ignored: cosine of representations
    items = Embeddings(_item_keys(model.item_map, len(reps)), reps)
    names, vectors = model.item_feature_vectors()
    log.info("%s model: %d items x %d, %d side features", source.model, reps.shape[0], reps.shape[1], len(names))
    if not names:
        return ModelEmbeddings(source.model, items)
    has = sp.csr_matrix(model.state.item_features)[:, model.n_item_identity:]
    return ModelEmbeddings(source.model, items, Embeddings(np.asarray(names, dtype=object), vectors),
                           sp.csr_matrix(has))


def _feature_group(emb: ModelEmbeddings, group: str) -> tuple[Embeddings, sp.csr_matrix] | None:
    if emb.features is None:
        return None
    rows = group_rows(list(emb.features.keys), group)
    if not len(rows):
        return None
    return emb.features.select(rows), emb.item_features[:, rows].tocsr()


def _skip_reason(emb: ModelEmbeddings, group: str) -> str:
    if emb.model == "als":
        return "ALS has no side-feature embeddings"
    if emb.features is None:
        return f"the {emb.model} model was trained without item side features (features.items.sources)"
    return f"the {emb.model} model has no features in group {group!r} (names {group}_...)"


def build_product(spark: SparkSession, conf: ProductsConfig, emb: ModelEmbeddings, product: str) -> DataFrame | None:
    """The lazy DataFrame of one product, or None when the model cannot support it (logged by the caller)."""
    if product == "similar_items":
        return similar_items(spark, emb.items, conf.k)
    if product == "explanations":
        run = conf.source.run_dir.rstrip("/")
        recs_path = f"{run}/recommendations/{emb.model}"
        _require(spark, recs_path, f"{emb.model} recommendations")
        recs = spark.read.parquet(recs_path)
        train = read_matrix(spark, f"{run}/matrix").train
        user_map = load_id_map(spark, f"{run}/id_maps/users", id_col=USER_ID, idx_col=USER_IDX)
        return explanations(recs, train, user_map, emb.items, conf.explain_n)
    group = _feature_group(emb, conf.feature_group)
    if group is None:
        return None
    features, has = group
    if product == "feature_items":
        return feature_items(spark, features, emb.items, conf.k)
    if product == "feature_suggestions":
        return feature_suggestions(spark, emb.items, features, has, conf.k)
    if product == "similar_features":
        return similar_features(spark, features, conf.k)
    raise ValueError(f"unknown product {product!r}")  # config validation makes this unreachable


def run_products(spark: SparkSession, conf: ProductsConfig) -> ProductsSummary:
    """Run the products job: compute each configured product, publish them together, log to MLflow."""
    timer = StageTimer()
    model = conf.source.model
    root = (conf.output or conf.source.run_dir).rstrip("/")
    staged = StagedOutput(spark, f"{root}/products/{model}", setting="output" if conf.output else "source.run_dir",
                          protected=protected_paths(conf), job="products")
    staged.recover()
    title = run_name("products", model, data_path=conf.source.run_dir)
    with mlflow_run(conf.mlflow, spark_version=spark.version, run_name=title, timer=timer) as run:
        log_config(conf)
        summary = ProductsSummary(run.info.run_id, resolve_tracking_uri(conf.mlflow), staged.staging)
        with timer.stage("load_model"):
            emb = load_model_embeddings(spark, conf.source)
        group = _feature_group(emb, conf.feature_group)
        log_metrics({"n_items": int(emb.items.usable().sum()),
                     "n_features": 0 if emb.features is None else len(emb.features),
                     f"n_features_{conf.feature_group}": 0 if group is None else len(group[0]),
                     "dim": emb.items.vectors.shape[1]})
        for product in conf.products:
            frame = build_product(spark, conf, emb, product)
            if frame is None:
                reason = _skip_reason(emb, conf.feature_group)
                log.warning("skipping %s: %s", product, reason)
                summary.skipped[product] = reason
                continue
            path = f"{staged.staging}/{product}"
            with timer.stage(product):
                frame.write.mode("overwrite").parquet(path)
            rows = spark.read.parquet(path).count()  # from the Parquet footers
            log.info("%s: %d rows -> %s", product, rows, path)
            summary.rows[product], summary.outputs[product] = rows, path
        log_metrics({f"{p}_rows": n for p, n in summary.rows.items()})
        log_params({"products_written": ",".join(summary.rows) or "-",
                    "products_skipped": ",".join(summary.skipped) or "-"})
        manifest = {"source": {"run_dir": conf.source.run_dir, "model": model}, "k": conf.k,
                    "explain_n": conf.explain_n, "feature_group": conf.feature_group, "rows": summary.rows,
                    "skipped": summary.skipped, "mlflow_run_id": run.info.run_id}
        fs.write_text(spark, f"{staged.staging}/_manifest.json", json.dumps(manifest, indent=2))
        staged.publish(summary, timer)
        if summary.skipped:
            log_dict_artifact(summary.skipped, "skipped.json")
    return summary


def format_products_summary(summary: ProductsSummary) -> str:
    """A few lines for the console: each product's rows and path, what was skipped, the MLflow run."""
    lines = [f"recspark products -> {summary.out_dir}"]
    lines += [f"  {p:<20} {summary.rows[p]:>10,} rows  {summary.outputs[p]}" for p in summary.rows]
    lines += [f"  {p:<20} skipped: {reason}" for p, reason in summary.skipped.items()]
    lines.append(f"  MLflow run {summary.run_id} ({redact(summary.tracking_uri)})")
    return "\n".join(lines)
