"""The nightly retrain: a dated snapshot -> candidate -> quality gate -> champion and published recommendations.

Steps (one MLflow run, ``nightly warp · <data> · <date>``):

1. **Base**: the registry's ``champion`` version names the run folder it was
   trained in (tag ``recspark.run_dir``): its id maps and parameters are the
   base of tonight's run. No champion: a cold start, promoted unconditionally.
2. **Data**: the snapshot ``data.path`` (``{date}`` replaced) goes through the
   training job's path (:func:`~recspark.pipeline.prepare.prepare_matrix`),
   indexed with the champion's id maps extended: known ids keep their
   indices, new ones are appended, nothing is renumbered.
3. **Candidate**: ALS from scratch, or WARP warm-started from the champion
   (``warm_start``): its users and items keep their parameters and optimiser
   state, new users/items start fresh
   (:func:`~recspark.models.warp.warm_start.warm_start_model`).
4. **Gate**: candidate and champion are evaluated by the same code on the same
   fresh holdout. Both rank only today's catalogue (items in the snapshot);
   the champion cannot rank items it has never seen (they are scored last)
   and scores users it does not know with a zero vector (item bias only), as
   :func:`~recspark.evaluation.ranking.evaluate` does for any user without
   factors. The candidate is promoted when
   ``candidate >= champion - promotion.tolerance`` on ``promotion.primary_metric``.
5. **Register** the candidate (a NumPy pyfunc, :mod:`recspark.tracking.pyfunc`)
   as a new version tagged with the date; a rerun of a date replaces it. Its
   per-user table is written by Spark
   (:func:`~recspark.tracking.pyfunc_package.write_pyfunc_users`) and copied
   into the model as files: only item-side arrays are built on the driver.
6. **Publish** when promoted: switch ``<root>/_CURRENT`` to this run's folder
   (atomic rename, :mod:`recspark.runs.publish`), then move the
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
from dataclasses import dataclass, field

import mlflow
import numpy as np
import numpy.typing as npt
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.config import NightlyConfig
from recspark.data.columns import ITEM_IDX, SCORE, USER_IDX
from recspark.errors import CandidateRejected
from recspark.evaluation.ranking import UserSample, evaluate
from recspark.models.baselines import PopularityScorer
from recspark.models.fit import FittedModel, fit_als, fit_warp, side_feature_matrices
from recspark.models.scoring import FactorScorer, Scorer
from recspark.models.topk import recommend, with_original_ids
from recspark.models.warp.warm_start import warm_start_model
from recspark.pipeline.prepare import PreparedData, prepare_matrix
from recspark.runs import publish
from recspark.runs.model_folder import EXCLUDED_SCORE, load_champion_scorer, write_model
from recspark.runs.outputs import claim_root, protected_paths
from recspark.runs.timing import StageTimer
from recspark.tracking import registry
from recspark.tracking.mlflow_log import log_config, log_metrics, log_params, mlflow_run, run_name
from recspark.tracking.pyfunc_package import pyfunc_arrays, write_pyfunc_users

log = logging.getLogger(__name__)


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


def run_nightly(spark: SparkSession, conf: NightlyConfig) -> NightlySummary:
    """Run one night (see the module docstring); raises CandidateRejected when the gate fails."""
    date, root = conf.run_date(), conf.root.rstrip("/")
    name, primary = conf.promotion.registered_model, conf.promotion.primary_metric
    timer = StageTimer()
    claim_root(spark, root, "root", protected_paths(conf), job="nightly")
    title = run_name("nightly", conf.model, data_path=conf.data.path.replace("/{date}", ""), date=date)
    with mlflow_run(conf.mlflow, spark_version=spark.version, run_name=title, timer=timer) as run:
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
        matrix, (user_map, item_map) = prepared.matrix, prepared.id_maps(spark)
        train, test = matrix.train.cache(), matrix.test.cache()
        catalogue = catalogue_mask(train, test, matrix.n_items)
        fit, warm_started = fit_candidate(spark, conf, prepared, user_map, item_map, base_dir, run_dir, timer)
        log_params({"nightly.warm_start_used": warm_started})
        scorer = FactorScorer(fit.item_vectors, fit.user_factors,
                              item_bias=np.where(catalogue, fit.item_bias, EXCLUDED_SCORE))
        with timer.stage("evaluate"):
            popularity = PopularityScorer.fit(train, matrix.n_items)
            metrics = evaluate_on_holdout(conf, train, test, {"candidate": scorer, "popularity": popularity},
                                          base_dir, catalogue, n_test_users=int(prepared.counts["test_users"]))
        for model, values in metrics.items():
            log_metrics(values, prefix=f"{model}_test_")
        promoted, reason = decide(metrics["candidate"][primary], metrics.get("champion", {}).get(primary), conf)
        log.info("quality gate: %s", reason)
        seen = train.select(USER_IDX, ITEM_IDX).unionByName(test.select(USER_IDX, ITEM_IDX))
        with timer.stage("recommend"):
            write_model(fit, user_map, item_map, run_dir)
            write_recommendations(conf, scorer, seen, user_map, item_map, run_dir)
        with timer.stage("register"):
            version = registry.register_candidate(
                name, pyfunc_arrays(fit, item_map, catalogue, popularity.counts),
                write_pyfunc_users(fit, user_map, catalogue, seen, f"{run_dir}/pyfunc/users"), date=date,
                run_dir=run_dir, k=conf.evaluation.recommend_k,
                normalize_user_features=conf.features.users.normalize)
        with timer.stage("publish"):
            if promoted:
                publish.switch_pointer(spark, root, run_dir)  # readers first: a crash here leaves the champion as is
            registry.record_decision(client, version, promoted, reason)
            registry.drop_other_versions_of_date(client, version)
        mlflow.set_tags({"promoted": str(promoted).lower(), "model_version": version.version,
                         **({} if promoted else {"rejected": reason})})
        log_metrics(timer.metrics())
        scorer.unpersist()
        popularity.unpersist()
        fit.close()
        train.unpersist()
        test.unpersist()
        summary = NightlySummary(run.info.run_id, date, run_dir, version.version, promoted, reason,
                                 warm_started, metrics["candidate"], metrics.get("champion"),
                                 base.version if base else None, prepared.counts)
    if not promoted:
        raise CandidateRejected(f"{name} version {version.version} ({date}): {reason}; the champion "
                                f"(version {base.version if base else 'none'}) and {root}/_CURRENT are unchanged")
    return summary


def evaluate_on_holdout(conf: NightlyConfig, train: DataFrame, test: DataFrame, scorers: dict[str, Scorer],
                        base_dir: str | None, catalogue: npt.NDArray[np.bool_],
                        n_test_users: int) -> dict[str, dict[str, float]]:
    """Metrics of each scorer and, when there is one, of the champion saved in ``base_dir``: same split,
    same code, and (above ``evaluation.max_test_users``) the same seeded sample of test users."""
    ev = conf.evaluation
    ks, exclude = tuple(ev.ks), ev.exclude_train
    sample = UserSample.at_most(ev.max_test_users, n_test_users, ev.random_seed)
    metrics = {name: evaluate(scorer, train, test, ks=ks, exclude_train=exclude, sample=sample)
               for name, scorer in scorers.items()}
    if base_dir:
        champion = load_champion_scorer(train.sparkSession, base_dir, catalogue)
        metrics["champion"] = evaluate(champion, train, test, ks=ks, exclude_train=exclude, sample=sample)
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


def fit_candidate(spark: SparkSession, conf: NightlyConfig, prepared: PreparedData, user_map: DataFrame,
                  item_map: DataFrame, base_dir: str | None, run_dir: str,
                  timer: StageTimer) -> tuple[FittedModel, bool]:
    """Train tonight's model on the train split: ALS from scratch, or WARP (warm-started when configured).

    Returns the model and whether it continued the champion.
    """
    matrix = prepared.matrix
    if conf.model == "als":
        with timer.stage("als_fit"):
            return fit_als(matrix.train, conf.als, matrix.n_items), False
    with timer.stage("side_features"):
        features = side_feature_matrices(spark, conf.features, user_map, item_map, matrix.n_users, matrix.n_items,
                                         f"{run_dir}/rejects")
    log_metrics(features.metrics())
    init = None
    if conf.warm_start and base_dir:
        with timer.stage("warm_start"):
            init = warm_start_model(spark, f"{base_dir}/model/warp", user_map, item_map, matrix.n_users,
                                    matrix.n_items, features.items, features.users,
                                    no_components=conf.warp.no_components, optimiser=conf.warp.optimiser,
                                    seed=conf.warp.seed)
    with timer.stage("warp_fit"):
        fit = fit_warp(matrix.train, conf.warp, user_map, item_map, matrix.n_users, matrix.n_items,
                       features=features, init=init,
                       on_epoch=lambda epoch, stats, _: log_metrics({"mean_loss": stats["mean_loss"]}, "warp_", epoch))
    return fit, init is not None


def write_recommendations(conf: NightlyConfig, scorer: FactorScorer, seen: DataFrame, user_map: DataFrame,
                          item_map: DataFrame, run_dir: str) -> None:
    """Write ``<run_dir>/recommendations``: they exclude everything the user has (``seen``: train and
    held-out items) and rank only today's catalogue (excluded items are dropped)."""
    recs = recommend(scorer, seen, k=conf.evaluation.recommend_k).where(F.col(SCORE) > EXCLUDED_SCORE / 2)
    with_original_ids(recs, user_map, item_map).write.parquet(f"{run_dir}/recommendations")
