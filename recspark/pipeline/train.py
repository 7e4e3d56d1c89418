"""The training job: matrix -> baselines and models -> evaluation -> outputs -> MLflow.

Every model is evaluated the same way (same split, same metrics, same
baselines, same recommendation output), so runs compare side by side in the
MLflow UI. Metric names carry model and split: ``als_test_precision_at_5``.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.config import TrainConfig
from recspark.data.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.evaluation.ranking import UserSample, evaluate, evaluate_cold_items
from recspark.models.baselines import PopularityScorer, RandomScorer
from recspark.models.fit import FittedModel, fit_als, fit_warp, side_feature_matrices
from recspark.models.scoring import FactorScorer, Scorer
from recspark.models.topk import recommend, with_original_ids
from recspark.models.warp.trainer import WarpState
from recspark.pipeline.prepare import PreparedData, ensure_input, prepare_matrix
from recspark.runs.outputs import StagedOutput, protected_paths
from recspark.runs.report import RunSummary
from recspark.runs.timing import StageTimer
from recspark.tracking import registry
from recspark.tracking.mlflow_log import (
    log_config,
    log_metrics,
    log_model_comparison,
    log_params,
    log_spark_model,
    mlflow_run,
    plot_learning_curves,
    resolve_tracking_uri,
    run_name,
)
from recspark.tracking.pyfunc_package import pyfunc_arrays, write_pyfunc_users

log = logging.getLogger(__name__)


class _Context:
    """Shared state of one run: the config, matrix, id maps, timer and summary being filled."""

    def __init__(self, spark: SparkSession, conf: TrainConfig, prepared: PreparedData, timer: StageTimer,
                 summary: RunSummary) -> None:
        self.spark, self.conf, self.prepared, self.timer, self.summary = spark, conf, prepared, timer, summary
        self.train = prepared.matrix.train
        self.test = prepared.matrix.test
        self.n_items = prepared.matrix.n_items
        self.curves: dict[str, list[tuple[int, float]]] = {}  # test p@k per model
        self.train_curves: dict[str, list[tuple[int, float]]] = {}  # train p@k (warp.train_metrics)
        self.popularity: npt.NDArray[np.float32] | None = None  # distinct train users per item (run_baselines)
        self.user_map, self.item_map = prepared.id_maps(spark)
        # split.strategy cold_items: the held-out items (O(items) on the driver), ranked among themselves.
        self.cold_items = (np.array(sorted(r[0] for r in self.test.select(ITEM_IDX).distinct().collect()))
                           if conf.split.strategy == "cold_items" else None)
        ev, n_test_users = conf.evaluation, int(prepared.counts["test_users"])
        self.sample = UserSample.at_most(ev.max_test_users, n_test_users, ev.random_seed)
        self.curve_sample = UserSample.at_most(ev.curve_test_users, n_test_users, ev.random_seed)
        summary.evaluated_on = (f"a seeded sample of ~{ev.max_test_users:,} of {n_test_users:,} test users "
                                "(evaluation.max_test_users; standard errors in MLflow as <metric>_se)"
                                if self.sample else f"all {n_test_users:,} test users (exact)")
        summary.evaluated_on += ", train items excluded" if ev.exclude_train else ", train items ranked too"
        log_params({"evaluation.sampled_fraction": self.sample.fraction if self.sample else 1.0})

    def curve_point(self, scorer: Scorer) -> float:
        """The primary test metric for a learning-curve point, on the curve's user sample."""
        ev = self.conf.evaluation
        return evaluate(scorer, self.train, self.test, ks=tuple(ev.ks), exclude_train=ev.exclude_train,
                        sample=self.curve_sample)[self.primary_metric()]

    def score(self, name: str, scorer: Scorer, step: int = 0) -> dict[str, float]:
        """Evaluate ``scorer`` on the test split; log (at ``step``: the model's last iteration) and keep them."""
        ev = self.conf.evaluation
        with self.timer.stage(f"{name}_evaluate"):
            metrics = evaluate(scorer, self.train, self.test, ks=tuple(ev.ks), exclude_train=ev.exclude_train,
                               sample=self.sample)
        log_metrics(metrics, prefix=f"{name}_test_", step=step)
        self.summary.metrics[name] = metrics
        log.info("%s: %s", name, _fmt_metrics(metrics, ev.ks))
        if self.cold_items is not None and isinstance(scorer, FactorScorer):
            vectors, bias = scorer.item_side
            with self.timer.stage(f"{name}_evaluate"):
                cold = evaluate_cold_items(vectors, bias, scorer.user_factors, self.test, self.cold_items,
                                           ks=tuple(ev.ks))
            log_metrics(cold, prefix=f"{name}_cold_", step=step)
            self.summary.metrics[f"{name}_cold"] = cold
            log.info("%s on cold items: %s", name, _fmt_metrics(cold, ev.ks))
        return metrics

    def publish(self, name: str, scorer: Scorer, users: DataFrame | None = None) -> None:
        """Write top-N recommendations for every training user (or ``users``), with original ids."""
        path = f"{self.summary.out_dir}/recommendations/{name}"
        with self.timer.stage(f"{name}_recommend"):
            recs = recommend(scorer, self.train, k=self.conf.evaluation.recommend_k, users=users,
                             exclude_train=self.conf.evaluation.exclude_train)
            with_original_ids(recs, self.user_map, self.item_map).write.mode("overwrite").parquet(path)
        self.summary.outputs[f"{name}_recommendations"] = path

    def save_factors(self, name: str, user_factors: DataFrame, item_factors: DataFrame) -> None:
        """Write factors keyed by original ids (``user_id``/``item_id`` + index + ``features``)."""
        root = f"{self.summary.out_dir}/models/{name}"
        user_factors.join(self.user_map, USER_IDX).select(USER_ID, *user_factors.columns) \
            .write.mode("overwrite").parquet(f"{root}/user_factors")
        item_factors.join(self.item_map, ITEM_IDX).select(ITEM_ID, *item_factors.columns) \
            .write.mode("overwrite").parquet(f"{root}/item_factors")
        self.summary.outputs[f"{name}_factors"] = root

    def log_pyfunc(self, name: str, fit: FittedModel) -> None:
        """Log ``fit`` as the Spark-free pyfunc ``runs:/<id>/<name>_pyfunc``, unregistered (the nightly registers).

        Packaged as the nightly's candidate is: it excludes everything a user
        has, train and held-out items (the batch recommendations follow
        ``evaluation.exclude_train`` instead), ranks the items the model has
        factors for (ALS has none for items without training interactions) and
        serves unknown users the training popularity. The per-user table is
        written by the executors into this run's output, ``models/<name>/pyfunc_users``.
        """
        if self.popularity is None:
            raise RuntimeError("log_pyfunc needs the popularity counts: run_baselines first")
        present = fit.item_factors.select(ITEM_IDX).toPandas()[ITEM_IDX].to_numpy()  # O(items)
        catalogue = np.zeros(self.n_items, dtype=bool)
        catalogue[present] = True
        seen = self.train.select(USER_IDX, ITEM_IDX).unionByName(self.test.select(USER_IDX, ITEM_IDX))
        users = write_pyfunc_users(fit, self.user_map, catalogue, seen,
                                   f"{self.summary.out_dir}/models/{name}/pyfunc_users")
        registry.log_pyfunc(pyfunc_arrays(fit, self.item_map, catalogue, self.popularity), users,
                            name=f"{name}_pyfunc", k=self.conf.evaluation.recommend_k,
                            normalize_user_features=self.conf.features.users.normalize)

    def primary_metric(self) -> str:
        return f"precision_at_{self.conf.evaluation.ks[0]}"


def _fmt_metrics(metrics: dict[str, float], ks: list[int]) -> str:
    keys = [f"precision_at_{k}" for k in ks] + ["auc", "mrr"]
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def run_baselines(ctx: _Context) -> None:
    """Popularity and random, always on the same split as the models."""
    with ctx.timer.stage("baselines_fit"):
        popularity = PopularityScorer.fit(ctx.train, ctx.n_items)
    ctx.popularity = popularity.counts  # the pyfuncs' fallback for unknown users
    ctx.score("popularity", popularity)
    popularity.unpersist()
    ctx.score("random", RandomScorer(ctx.n_items, seed=ctx.conf.evaluation.random_seed))


def run_als(ctx: _Context) -> None:
    """Fit ALS (and its learning curve), evaluate, recommend, save factors, the Spark model and the pyfunc."""
    conf = ctx.conf.als
    curve: list[tuple[int, float]] = []
    primary = ctx.primary_metric()
    for iterations in sorted(set(conf.learning_curve)):
        if iterations == conf.max_iter:
            continue  # the final fit below gives this point
        with ctx.timer.stage("als_learning_curve"), fit_als(ctx.train, conf, ctx.n_items, max_iter=iterations) as fit:
            value = ctx.curve_point(fit.scorer)
        log_metrics({primary: value}, prefix="als_test_", step=iterations)
        curve.append((iterations, value))
        log.info("ALS learning curve: %d iterations -> %s=%.4f", iterations, primary, value)
    if curve:  # Spark's ALS cannot report on its own iterations: every point is a fit from scratch
        log.info("ALS learning curve: %d extra fit(s) took %.1fs (als.learning_curve: [] skips them)",
                 len(curve), ctx.timer.seconds.get("als_learning_curve", 0.0))
    with ctx.timer.stage("als_fit"):
        fit = fit_als(ctx.train, conf, ctx.n_items)
        log.info("ALS factors: %d users, %d items", fit.user_factors.count(), fit.item_factors.count())
    with fit:
        metrics = ctx.score("als", fit.scorer, step=conf.max_iter)
        if conf.learning_curve:
            curve.append((conf.max_iter, metrics[primary]))
        ctx.curves["als"] = sorted(curve)
        ctx.publish("als", fit.scorer)
        with ctx.timer.stage("als_save"):
            ctx.save_factors("als", fit.user_factors, fit.item_factors)
            fit.save(f"{ctx.summary.out_dir}/models/als/spark_model")
            log_spark_model(fit.model, "als")
            ctx.log_pyfunc("als", fit)


#: ``warp.train_metrics`` scores this share of the training users (hash-sampled; at most about
#: ``evaluation.curve_test_users`` of them), as LightFM users print train p@k to see
#: under-/over-fitting next to the test curve.
TRAIN_METRIC_USER_SHARE = 0.2


def _train_sample(ctx: _Context) -> DataFrame:
    """A fixed share of training users with all their training interactions (the same users every epoch)."""
    ev = ctx.conf.evaluation
    cap = UserSample.at_most(ev.curve_test_users, ctx.prepared.matrix.n_users, ev.random_seed)
    share = UserSample(min(TRAIN_METRIC_USER_SHARE, cap.fraction if cap else 1.0), ev.random_seed)
    return ctx.train.where(share.keeps(F.col(USER_IDX))).cache()


def run_warp(ctx: _Context) -> None:
    """Fit the sharded WARP/BPR model with a learning curve; evaluate, recommend, save like ALS."""
    conf = ctx.conf.warp
    name = conf.loss
    primary = ctx.primary_metric()
    ev = ctx.conf.evaluation
    curve: list[tuple[int, float]] = []
    train_curve: list[tuple[int, float]] = []
    train_sample = _train_sample(ctx) if conf.train_metrics else None

    def train_metric(scorer: Scorer, epoch: int) -> str:
        """Train p@k on the sample (training items ranked too: they are the targets); '' when disabled."""
        if train_sample is None:
            return ""
        nothing_known = train_sample.limit(0)  # the sample is the target: nothing to exclude
        value = evaluate(scorer, nothing_known, train_sample, ks=tuple(ev.ks), exclude_train=False)[primary]
        log_metrics({primary: value}, prefix=f"{name}_train_", step=epoch)
        train_curve.append((epoch, value))
        return f", train {primary} {value:.4f}"

    def on_epoch(epoch: int, stats: dict[str, float], state: WarpState | None) -> None:
        log_metrics({"epoch_seconds": stats["epoch_seconds"], "samples_per_s": stats["samples_per_s"],
                     "mean_loss": stats["mean_loss"]}, prefix=f"{name}_", step=epoch)
        line = (f"{name} epoch {epoch:>3}/{conf.epochs}: {stats['epoch_seconds']:.1f}s, "
                f"{stats['samples_per_s']:,.0f} samples/s, loss {stats['mean_loss']:.4f}")
        if state is not None and conf.eval_every and epoch % conf.eval_every == 0 and epoch != conf.epochs:
            scorer = state.scorer(state.user_factors(ctx.spark))
            value = ctx.curve_point(scorer)
            log_metrics({primary: value}, prefix=f"{name}_test_", step=epoch)
            curve.append((epoch, value))
            line += f", test {primary} {value:.4f}" + train_metric(scorer, epoch)
            scorer.unpersist()
        log.info("%s", line)

    with ctx.timer.stage("side_features"):
        features = side_feature_matrices(ctx.spark, ctx.conf.features, ctx.user_map, ctx.item_map,
                                         ctx.prepared.matrix.n_users, ctx.n_items, f"{ctx.summary.out_dir}/rejects")
    log_metrics(features.metrics())
    ctx.summary.outputs.update(features.reject_paths())
    with ctx.timer.stage(f"{name}_fit"):
        fit = fit_warp(ctx.train, conf, ctx.user_map, ctx.item_map, ctx.prepared.matrix.n_users, ctx.n_items,
                       features=features, on_epoch=on_epoch, state_every=conf.eval_every)
    with fit:
        log_params({f"{name}.n_shards_used": fit.model.getOrDefault("numShards")})
        metrics = ctx.score(name, fit.scorer, step=conf.epochs)
        if conf.eval_every:
            curve.append((conf.epochs, metrics[primary]))
        ctx.curves[name] = curve
        if train_sample is not None:
            line = train_metric(fit.scorer, conf.epochs)
            log.info("%s after %d epochs%s", name, conf.epochs, line)
            ctx.train_curves[name] = train_curve
            train_sample.unpersist()
        # With user features, cold users (features, no interactions) get recommendations too.
        ctx.publish(name, fit.scorer, users=ctx.user_map.select(USER_IDX) if features.users is not None else None)
        with ctx.timer.stage(f"{name}_save"):
            ctx.save_factors(name, fit.user_factors, fit.item_factors)
            fit.save(f"{ctx.summary.out_dir}/models/{name}/model")
            log_spark_model(fit.model, name)
            ctx.log_pyfunc(name, fit)


def run_training(spark: SparkSession, conf: TrainConfig) -> RunSummary:
    """Run the whole training job; returns what it produced (also printed by the job)."""
    timer = StageTimer()
    staged = StagedOutput(spark, conf.output.dir, protected=protected_paths(conf), job="train")
    staged.recover()
    ensure_input(spark, conf.data)
    models = "+".join(name for name, on in (("als", conf.als.enabled), (conf.warp.loss, conf.warp.enabled)) if on)
    with mlflow_run(conf.mlflow, spark_version=spark.version,
                    run_name=run_name("train", models, data_path=conf.data.path), timer=timer) as run:
        log_config(conf)
        # Everything is written under the staging directory and published at the end in one
        # rename, so a killed run never leaves old and new outputs mixed (runs/outputs.py).
        out_dir = staged.staging
        prepared = prepare_matrix(spark, conf.data, conf.split, out_dir, timer, published_dir=staged.final,
                                  features=conf.features)
        summary = RunSummary(run_id=run.info.run_id, experiment=conf.mlflow.experiment,
                             tracking_uri=resolve_tracking_uri(conf.mlflow), out_dir=out_dir,
                             counts=prepared.counts, outputs=dict(prepared.paths))
        ctx = _Context(spark, conf, prepared, timer, summary)
        ctx.train.cache()
        ctx.test.cache()
        run_baselines(ctx)
        if conf.als.enabled:
            run_als(ctx)
        if conf.warp.enabled:
            run_warp(ctx)
        plot_learning_curves(ctx.curves, ctx.primary_metric(), "iterations (ALS) / epochs (WARP, BPR)",
                             train=ctx.train_curves)
        log_model_comparison(summary.metrics, conf.evaluation.ks)
        ctx.train.unpersist()
        ctx.test.unpersist()
        staged.publish(summary, timer)
    return summary
