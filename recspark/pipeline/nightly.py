"""The nightly retrain: a dated snapshot -> candidate -> quality gate -> champion and published recommendations.

Steps (one MLflow run, ``nightly-<date>``):

1. **Base**: the registry's ``champion`` version names the run folder it was
   trained in (tag ``recspark.run_dir``): its id maps and parameters are the
   base of tonight's run. No champion: a cold start, promoted unconditionally.
2. **Data**: the snapshot ``data.path`` (``{date}`` replaced) goes through the
   training job's path (:func:`~recspark.pipeline.prepare.prepare_matrix`),
   indexed with the champion's id maps extended: known ids keep their
   indices, new ones are appended, nothing is renumbered.
3. **Candidate**: ALS from scratch, or WARP warm-started from the champion
   (``warm_start``): its users and items keep their parameters and optimiser
   state, new users/items start fresh (:func:`warm_start_model`).
4. **Gate**: candidate and champion are evaluated by the same code on the same
   fresh holdout. Both rank only today's catalogue (items in the snapshot);
   the champion cannot rank items it has never seen (they are scored last)
   and scores users it does not know with a zero vector (item bias only), as
   :func:`~recspark.evaluation.ranking.evaluate` does for any user without
   factors. The candidate is promoted when
   ``candidate >= champion - promotion.tolerance`` on ``promotion.primary_metric``.
5. **Register** the candidate (a NumPy pyfunc, :mod:`recspark.tracking.pyfunc`)
   as a new version tagged with the date; a rerun of a date replaces it. Its
   per-user table is written by Spark (:func:`write_pyfunc_users`) and copied
   into the model as files: only item-side arrays are built on the driver.
6. **Publish** when promoted: switch ``<root>/_CURRENT`` to this run's folder
   (atomic rename, :mod:`recspark.pipeline.publish`), then move the
   ``champion`` alias. When rejected neither moves, the version and the run
   are tagged with the reason, and :class:`~recspark.errors.CandidateRejected`
   is raised after the MLflow run is closed (the job exits 5).

Each attempt writes its own folder ``<root>/runs/<date>/<mlflow run id>/``
(rejects, id maps, matrix, model, recommendations, pyfunc) and never touches another
attempt's; a rerun of a date deletes that date's folders that neither the
pointer nor the champion uses.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.config import NightlyConfig
from recspark.data.columns import FEATURES, ITEM_ID, ITEM_IDX, SCORE, USER_ID, USER_IDX, WEIGHT
from recspark.data.features import FeatureMatrix, build_feature_matrix
from recspark.data.indexing import load_id_map
from recspark.errors import CandidateRejected
from recspark.evaluation.ranking import evaluate
from recspark.models.als import factor_frames, fit_als
from recspark.models.baselines import PopularityScorer
from recspark.models.scoring import FactorScorer, Scorer
from recspark.models.topk import recommend, with_original_ids
from recspark.models.warp.estimator import RankingFMModel
from recspark.models.warp.state import SideParams
from recspark.models.weights import transformed_weight
from recspark.pipeline import publish
from recspark.pipeline.outputs import claim_root, protected_paths
from recspark.pipeline.prepare import PreparedData, prepare_matrix
from recspark.pipeline.timing import StageTimer
from recspark.pipeline.train import warp_estimator
from recspark.tracking import registry
from recspark.tracking.mlflow_log import log_config, log_metrics, log_params, mlflow_run

log = logging.getLogger(__name__)

#: Item bias of items a model must not recommend (not in today's catalogue, or unknown to the
#: champion): finite, as the Scorer contract requires, and far below any real score.
EXCLUDED_SCORE = np.float32(-1e30)


@dataclass
class NightlySummary:
    """What a nightly run decided and produced: for the job's log line and for tests."""

    run_id: str
    date: str
    run_dir: str
    model_version: str
    promoted: bool
    reason: str
    warm_started: bool
    candidate: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    counts: dict[str, float] = field(default_factory=dict)


@dataclass
class Candidate:
    """Tonight's model as arrays over the new index space, plus its users' factors (in Spark)."""

    item_vectors: npt.NDArray[np.float32]  # [n_items, k]
    item_bias: npt.NDArray[np.float32]  # [n_items]
    user_factors: DataFrame  # user_idx, features
    warp: RankingFMModel | None = None  # kept for the next night's warm start
    warm_started: bool = False
    # WARP with user side features: their names and embeddings (a new user is the sum of theirs).
    user_feature_names: list[str] = field(default_factory=list)
    user_feature_vectors: npt.NDArray[np.float32] | None = None


def run_nightly(spark: SparkSession, conf: NightlyConfig) -> NightlySummary:
    """Run one night (see the module docstring); raises CandidateRejected when the gate fails."""
    date, root = conf.run_date(), conf.root.rstrip("/")
    name, primary = conf.promotion.registered_model, conf.promotion.primary_metric
    timer = StageTimer()
    claim_root(spark, root, "root", protected_paths(conf), job="nightly")
    with mlflow_run(conf.mlflow, spark_version=spark.version, run_name=f"nightly-{date}") as run:
        client = MlflowClient()
        base = registry.champion(client, name)
        base_dir = base.tags.get(registry.RUN_DIR_TAG) if base else None
        publish.remove_stale_attempts(spark, root, date, keep={publish.read_pointer(spark, root), base_dir})
        run_dir = publish.run_dir(root, date, run.info.run_id)
        log_config(conf)
        mlflow.set_tags({registry.DATE_TAG: date, "nightly.base_version": base.version if base else "none",
                         "nightly.base_run_dir": base_dir or "none"})
        data = dataclasses.replace(conf.data, path=conf.snapshot_path())
        prepared = prepare_matrix(spark, data, conf.split, run_dir, timer,
                                  previous_id_maps=f"{base_dir}/id_maps" if base_dir else None)
        log_metrics(prepared.counts)
        matrix = prepared.matrix
        train, test = matrix.train.cache(), matrix.test.cache()
        catalogue = catalogue_mask(train, test, matrix.n_items)
        candidate = fit_candidate(spark, conf, prepared, base_dir, run_dir, timer)
        log_params({"nightly.warm_start_used": candidate.warm_started})
        scorer = FactorScorer(candidate.item_vectors, candidate.user_factors,
                              item_bias=np.where(catalogue, candidate.item_bias, EXCLUDED_SCORE))
        with timer.stage("evaluate"):
            popularity = PopularityScorer.fit(train, matrix.n_items)
            metrics = evaluate_on_holdout(conf, train, test, {"candidate": scorer, "popularity": popularity},
                                          base_dir, catalogue)
        for model, values in metrics.items():
            log_metrics(values, prefix=f"{model}_test_")
        promoted, reason = decide(metrics["candidate"][primary], metrics.get("champion", {}).get(primary), conf)
        log.info("quality gate: %s", reason)
        seen = train.select(USER_IDX, ITEM_IDX).unionByName(test.select(USER_IDX, ITEM_IDX))
        with timer.stage("recommend"):
            save_run(spark, conf, prepared, candidate, scorer, seen, run_dir)
        with timer.stage("register"):
            version = registry.register_candidate(
                name, pyfunc_arrays(prepared, candidate, catalogue, popularity.counts),
                write_pyfunc_users(prepared, candidate, catalogue, seen, run_dir), date=date, run_dir=run_dir,
                k=conf.evaluation.recommend_k, normalize_user_features=conf.features.users.normalize)
        if promoted:
            publish.switch_pointer(spark, root, run_dir)  # readers first: a crash here leaves the champion as is
        registry.record_decision(client, version, promoted, reason)
        registry.drop_other_versions_of_date(client, version)
        mlflow.set_tags({"promoted": str(promoted).lower(), "model_version": version.version,
                         **({} if promoted else {"rejected": reason})})
        log_metrics(timer.metrics())
        scorer.unpersist()
        popularity.unpersist()
        if candidate.warp is not None:
            candidate.warp.state.unpersist()
        candidate.user_factors.unpersist()
        train.unpersist()
        test.unpersist()
        summary = NightlySummary(run.info.run_id, date, run_dir, version.version, promoted, reason,
                                 candidate.warm_started, metrics["candidate"], metrics.get("champion"),
                                 base.version if base else None, prepared.counts)
    if not promoted:
        raise CandidateRejected(f"{name} version {version.version} ({date}): {reason}; the champion "
                                f"(version {base.version if base else 'none'}) and {root}/_CURRENT are unchanged")
    return summary


def evaluate_on_holdout(conf: NightlyConfig, train: DataFrame, test: DataFrame, scorers: dict[str, Scorer],
                        base_dir: str | None, catalogue: npt.NDArray[np.bool_]) -> dict[str, dict[str, float]]:
    """Metrics of each scorer and, when there is one, of the champion saved in ``base_dir``: same split, same code."""
    ks, exclude = tuple(conf.evaluation.ks), conf.evaluation.exclude_train
    metrics = {name: evaluate(scorer, train, test, ks=ks, exclude_train=exclude) for name, scorer in scorers.items()}
    if base_dir:
        champion = load_champion_scorer(train.sparkSession, base_dir, catalogue)
        metrics["champion"] = evaluate(champion, train, test, ks=ks, exclude_train=exclude)
        champion.unpersist()
    return metrics


def decide(candidate: float, champion: float | None, conf: NightlyConfig) -> tuple[bool, str]:
    """The quality gate: ``(promoted, reason)``; no champion yet promotes unconditionally."""
    metric, tolerance = conf.promotion.primary_metric, conf.promotion.tolerance
    if champion is None:
        return True, f"no champion yet; candidate {metric}={candidate:.4f}"
    verdict = "promoted" if candidate >= champion - tolerance else "rejected"
    return verdict == "promoted", (f"{verdict}: candidate {metric}={candidate:.4f} vs champion {champion:.4f} "
                                   f"(tolerance {tolerance:g})")


def catalogue_mask(train: DataFrame, test: DataFrame, n_items: int) -> npt.NDArray[np.bool_]:
    """Items present in today's snapshot (after thresholds): the only ones a model may rank."""
    present = train.select(ITEM_IDX).union(test.select(ITEM_IDX)).distinct().toPandas()[ITEM_IDX].to_numpy()
    mask = np.zeros(n_items, dtype=bool)
    mask[present] = True
    return mask


# --------------------------------------------------------------------------- candidate


def fit_candidate(spark: SparkSession, conf: NightlyConfig, prepared: PreparedData, base_dir: str | None,
                  run_dir: str, timer: StageTimer) -> Candidate:
    """Train tonight's model on the train split: ALS from scratch, or WARP (warm-started when configured)."""
    matrix = prepared.matrix
    if conf.model == "als":
        with timer.stage("als_fit"):
            users, items = factor_frames(fit_als(matrix.train, conf.als))
            users = users.cache()
            arrays = FactorScorer.from_dataframes(users, items, matrix.n_items)
            vectors = arrays.item_vectors
            arrays.unpersist()
        return Candidate(vectors, np.zeros(matrix.n_items, np.float32), users)
    user_map = load_id_map(spark, prepared.paths["id_maps/users"])
    item_map = load_id_map(spark, prepared.paths["id_maps/items"])
    item_features = None
    if conf.features.items.sources:
        item_features = build_feature_matrix(spark, conf.features.items, item_map, ITEM_ID, ITEM_IDX,
                                             matrix.n_items, f"{run_dir}/rejects")
        log_metrics({"features_item_total": item_features.n_features})
    user_features = None
    if conf.features.users.sources:
        user_features = build_feature_matrix(spark, conf.features.users, user_map, USER_ID, USER_IDX,
                                             matrix.n_users, f"{run_dir}/rejects", side="user", collect=False)
        log_metrics({"features_user_total": user_features.n_features})
    init = None
    if conf.warm_start and base_dir:
        init = warm_start_model(spark, f"{base_dir}/model/warp", conf, user_map, item_map, matrix.n_users,
                                matrix.n_items, item_features, user_features)
    weighted = matrix.train.select(USER_IDX, ITEM_IDX, transformed_weight(conf.warp.sample_weight).alias(WEIGHT))
    with timer.stage("warp_fit"):
        model = warp_estimator(conf.warp).fit_indexed(
            weighted, user_map, item_map, n_users=matrix.n_users, n_items=matrix.n_items, init=init,
            item_features=item_features, user_features=user_features,
            on_epoch=lambda epoch, stats, _: log_metrics({"mean_loss": stats["mean_loss"]}, "warp_", epoch))
    vectors, biases = model.state.item_representations()
    shared = model.state.user_shared
    return Candidate(vectors, biases, model.user_factors_indexed().cache(), model, init is not None,
                     model.user_feature_names, shared.embeddings if shared is not None else None)


def warm_start_model(spark: SparkSession, champion_path: str, conf: NightlyConfig, user_map: DataFrame,
                     item_map: DataFrame, n_users: int, n_items: int, item_features: FeatureMatrix | None,
                     user_features: FeatureMatrix | None = None) -> RankingFMModel | None:
    """The champion's WARP model grown to tonight's catalogue, to pass as ``fit_indexed(init=...)``.

    Rows are matched by what they stand for: item identity rows by item
    index, item and user side feature rows by name. Matched rows keep the
    champion's parameters and optimiser state; new items and features get
    LightFM's fresh initialisation; features the champion had and tonight's
    data lacks are dropped. Users' own rows are matched by index inside the
    trainer (``init.user_blocks``). Returns None, logging why, when the
    champion cannot seed this config (another embedding size or optimiser):
    the candidate then trains from scratch.
    """
    champion = RankingFMModel.load(spark, champion_path)
    old_side, warp = champion.state.item_side, conf.warp
    if (old_side.no_components, old_side.optimiser) != (warp.no_components, warp.optimiser):
        log.warning("warm start skipped: the champion has %d components/%s, the config %d/%s",
                    old_side.no_components, old_side.optimiser, warp.no_components, warp.optimiser)
        return None
    if item_features is None:
        matrix, n_identity, names = sp.identity(n_items, dtype=np.float32, format="csr"), n_items, []
    else:
        matrix, n_identity, names = item_features.matrix, item_features.n_identity, item_features.names
    old_keys = [("identity", j) for j in range(champion.n_item_identity)]
    old_keys += [("feature", n) for n in champion.item_feature_names]
    new_keys = [("identity", j) for j in range(n_identity)] + [("feature", n) for n in names]
    epochs_done = champion.state.epochs_done
    item_side = _regrown(old_side, old_keys, new_keys, conf, np.random.default_rng([warp.seed, epochs_done, 0x9A8]))
    user_names = user_features.names if user_features is not None else []
    user_shared = (_regrown(champion.state.user_shared, champion.user_feature_names, user_names, conf,
                           np.random.default_rng([warp.seed, epochs_done, 0x05E7]))
                   if user_names else None)
    log.info("warm start from %s: item side %d of %d rows kept; user side features %d of %d kept",
             champion_path, len(set(old_keys) & set(new_keys)), len(new_keys),
             len(set(champion.user_feature_names) & set(user_names)), len(user_names))
    # Everything else (user blocks, epochs done, history) continues as saved.
    state = dataclasses.replace(champion.state, item_side=item_side, user_shared=user_shared,
                                item_features=sp.csr_matrix(matrix, dtype=np.float32), n_users=n_users,
                                n_items=n_items)
    return RankingFMModel(state, user_map, item_map, names, user_names)


def _regrown(old: SideParams | None, old_keys: Sequence[Hashable], new_keys: Sequence[Hashable],
            conf: NightlyConfig, rng: np.random.Generator) -> SideParams:
    """One row per ``new_keys``: the old row's parameters and optimiser state where its key is in
    ``old_keys`` (``old``'s rows, in order), LightFM's fresh initialisation where it is new."""
    grown = SideParams.init(len(new_keys), conf.warp.no_components, conf.warp.optimiser, rng).to_dict()
    old_at = {key: row for row, key in enumerate(old_keys)}
    pairs = np.array([(new, old_at[key]) for new, key in enumerate(new_keys) if key in old_at],
                     dtype=np.int64).reshape(-1, 2)
    if old is not None and len(pairs):
        for name, values in old.to_dict().items():
            grown[name][pairs[:, 0]] = values[pairs[:, 1]]
    return SideParams.from_dict(grown)


def load_champion_scorer(spark: SparkSession, base_dir: str,
                         catalogue: npt.NDArray[np.bool_]) -> FactorScorer:
    """The champion's factors (saved by :func:`save_run`) as a scorer over tonight's items.

    Ids are stable, so the champion's indices are tonight's; items it never
    saw, and items outside today's catalogue, score :data:`EXCLUDED_SCORE`.
    """
    items = spark.read.parquet(f"{base_dir}/model/item_factors").select(ITEM_IDX, FEATURES, "bias").toPandas()
    idx = items[ITEM_IDX].to_numpy()
    vectors = np.zeros((len(catalogue), len(items[FEATURES].iloc[0])), dtype=np.float32)
    vectors[idx] = np.stack(items[FEATURES].to_numpy())
    bias = np.full(len(catalogue), EXCLUDED_SCORE, dtype=np.float32)
    bias[idx] = items["bias"].to_numpy(np.float32)
    users = spark.read.parquet(f"{base_dir}/model/user_factors").select(USER_IDX, FEATURES)
    return FactorScorer(vectors, users, item_bias=np.where(catalogue, bias, EXCLUDED_SCORE))


# --------------------------------------------------------------------------- outputs


def save_run(spark: SparkSession, conf: NightlyConfig, prepared: PreparedData, candidate: Candidate,
             scorer: FactorScorer, seen: DataFrame, run_dir: str) -> None:
    """Write the run folder's model (factors with ids; the WARP model) and its recommendations.

    Recommendations exclude everything the user has (train and held-out
    items) and rank only today's catalogue.
    """
    user_map = load_id_map(spark, prepared.paths["id_maps/users"])
    item_map = load_id_map(spark, prepared.paths["id_maps/items"])
    users = candidate.user_factors.select(USER_IDX, FEATURES)
    users.join(user_map, USER_IDX).select(USER_ID, USER_IDX, FEATURES).write.parquet(f"{run_dir}/model/user_factors")
    items = spark.createDataFrame(
        pd.DataFrame({ITEM_IDX: np.arange(len(candidate.item_bias), dtype=np.int32),
                      FEATURES: list(candidate.item_vectors), "bias": candidate.item_bias}),
        f"{ITEM_IDX} int, {FEATURES} array<float>, bias float")
    items.join(item_map, ITEM_IDX).select(ITEM_ID, ITEM_IDX, FEATURES, "bias") \
        .write.parquet(f"{run_dir}/model/item_factors")
    if candidate.warp is not None:
        candidate.warp.save(f"{run_dir}/model/warp")
    recs = recommend(scorer, seen, k=conf.evaluation.recommend_k).where(F.col(SCORE) > EXCLUDED_SCORE / 2)
    with_original_ids(recs, user_map, item_map).write.parquet(f"{run_dir}/recommendations")


def pyfunc_arrays(prepared: PreparedData, candidate: Candidate, catalogue: npt.NDArray[np.bool_],
                  popularity: npt.NDArray[np.float32]) -> dict[str, Any]:
    """The pyfunc's item-side arrays (see :func:`recspark.tracking.registry.write_model_arrays`).

    Built on the driver: only O(items x factors) (today's catalogue, in
    column order, and the user feature embeddings). The per-user part is
    :func:`write_pyfunc_users`.
    """
    spark = candidate.user_factors.sparkSession
    items = load_id_map(spark, prepared.paths["id_maps/items"]).toPandas().sort_values(ITEM_IDX)
    columns = np.flatnonzero(catalogue)
    features = candidate.user_feature_vectors
    if features is None:
        features = np.zeros((0, candidate.item_vectors.shape[1]), np.float32)
    return {"item_ids": items[ITEM_ID].to_numpy()[columns], "item_vectors": candidate.item_vectors[columns],
            "item_bias": candidate.item_bias[columns], "popularity": popularity[columns],
            "user_feature_names": candidate.user_feature_names, "user_feature_vectors": features}


def write_pyfunc_users(prepared: PreparedData, candidate: Candidate, catalogue: npt.NDArray[np.bool_],
                       seen: DataFrame, run_dir: str) -> str:
    """Write the pyfunc's per-user table to ``<run_dir>/pyfunc/users``; returns that folder.

    One row per user with factors: ``user_id``, ``vector`` and ``seen`` (the
    catalogue columns of the user's train and held-out items, which the pyfunc
    excludes), layout in :mod:`recspark.tracking.pyfunc`. It is O(users x
    factors + interactions), so Spark joins and writes it from the executors:
    only the O(items) item -> column map is broadcast, nothing per user
    reaches the driver. MLflow copies the folder into the model as files.
    """
    spark = candidate.user_factors.sparkSession
    columns = np.flatnonzero(catalogue)
    column_of = spark.createDataFrame(
        pd.DataFrame({ITEM_IDX: columns.astype(np.int32), "column": np.arange(len(columns), dtype=np.int32)}),
        f"{ITEM_IDX} int, column int")
    seen_columns = (seen.join(F.broadcast(column_of), ITEM_IDX).groupBy(USER_IDX)
                    .agg(F.array_sort(F.collect_set("column")).alias("seen")))
    users = (candidate.user_factors.select(USER_IDX, F.col(FEATURES).cast("array<float>").alias("vector"))
             .join(load_id_map(spark, prepared.paths["id_maps/users"]), USER_IDX)
             .join(seen_columns, USER_IDX, "left")
             .select(USER_ID, "vector", F.coalesce("seen", F.array().cast("array<int>")).alias("seen")))
    path = f"{run_dir}/pyfunc/users"
    users.write.parquet(path)
    return path
