"""The training job: matrix -> baselines and models -> evaluation -> outputs -> MLflow.

Every model is evaluated the same way (same split, same metrics, same
baselines, same recommendation output), so runs compare side by side in the
MLflow UI. Metric names carry model and split: ``als_test_precision_at_5``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recspark.config import TrainConfig, WarpConfig
from recspark.data.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, WEIGHT
from recspark.data.features import FeatureMatrix, build_feature_matrix
from recspark.data.indexing import load_id_map
from recspark.evaluation.ranking import evaluate, evaluate_cold_items
from recspark.models.als import factor_frames, fit_als
from recspark.models.baselines import PopularityScorer, RandomScorer
from recspark.models.weights import transformed_weight
from recspark.models.scoring import FactorScorer, Scorer
from recspark.models.topk import recommend, with_original_ids
from recspark.models.warp.estimator import RankingFM
from recspark.models.warp.trainer import WarpState
from recspark.pipeline.outputs import StagedOutput, protected_paths
from recspark.pipeline.prepare import PreparedData, ensure_input, prepare_matrix
from recspark.pipeline.timing import StageTimer
from recspark.tracking.mlflow_log import (
    log_config,
    log_dict_artifact,
    log_metrics,
    log_params,
    mlflow_run,
    plot_learning_curves,
    resolve_tracking_uri,
)

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run produced: for the console summary and for tests."""

    run_id: str
    experiment: str
    tracking_uri: str
    out_dir: str
    counts: dict[str, float]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metric -> value
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


class _Context:
    """Shared state of one run: the config, matrix, id maps, timer and summary being filled."""

    def __init__(self, spark: SparkSession, conf: TrainConfig, prepared: PreparedData, timer: StageTimer,
                 summary: RunSummary) -> None:
        self.spark, self.conf, self.prepared, self.timer, self.summary = spark, conf, prepared, timer, summary
        self.train = prepared.matrix.train
        self.test = prepared.matrix.test
        self.n_items = prepared.matrix.n_items
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self.user_map = load_id_map(spark, prepared.paths["id_maps/users"])
        self.item_map = load_id_map(spark, prepared.paths["id_maps/items"])
        # split.strategy cold_items: the held-out items (O(items) on the driver), ranked among themselves.
        self.cold_items = (np.array(sorted(r[0] for r in self.test.select(ITEM_IDX).distinct().collect()))
                           if conf.split.strategy == "cold_items" else None)

    def score(self, name: str, scorer: Scorer, step: int = 0) -> dict[str, float]:
        """Evaluate ``scorer`` on the test split; log (at ``step``: the model's last iteration) and keep them."""
        ev = self.conf.evaluation
        with self.timer.stage(f"{name}_evaluate"):
            metrics = evaluate(scorer, self.train, self.test, ks=tuple(ev.ks), exclude_train=ev.exclude_train)
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

    def primary_metric(self) -> str:
        return f"precision_at_{self.conf.evaluation.ks[0]}"


def _fmt_metrics(metrics: dict[str, float], ks: list[int]) -> str:
    keys = [f"precision_at_{k}" for k in ks] + ["auc", "mrr"]
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


def run_baselines(ctx: _Context) -> None:
    """Popularity and random, always on the same split as the models."""
    with ctx.timer.stage("baselines_fit"):
        popularity = PopularityScorer.fit(ctx.train, ctx.n_items)
    ctx.score("popularity", popularity)
    popularity.unpersist()
    ctx.score("random", RandomScorer(ctx.n_items, seed=ctx.conf.evaluation.random_seed))


def run_als(ctx: _Context) -> None:
    """Fit ALS (and its learning curve), evaluate, recommend, save factors and the Spark model."""
    conf = ctx.conf.als
    curve: list[tuple[int, float]] = []
    primary = ctx.primary_metric()
    ev = ctx.conf.evaluation
    for iterations in sorted(set(conf.learning_curve)):
        if iterations == conf.max_iter:
            continue  # the final fit below gives this point
        with ctx.timer.stage("als_learning_curve"):
            users, items = factor_frames(fit_als(ctx.train, conf, max_iter=iterations))
            scorer = FactorScorer.from_dataframes(users, items, ctx.n_items)
            value = evaluate(scorer, ctx.train, ctx.test, ks=tuple(ev.ks), exclude_train=ev.exclude_train)[primary]
            scorer.unpersist()
        log_metrics({primary: value}, prefix="als_test_", step=iterations)
        curve.append((iterations, value))
        log.info("ALS learning curve: %d iterations -> %s=%.4f", iterations, primary, value)
    with ctx.timer.stage("als_fit"):
        model = fit_als(ctx.train, conf)
        users, items = factor_frames(model)
        users, items = users.cache(), items.cache()
        log.info("ALS factors: %d users, %d items", users.count(), items.count())
    scorer = FactorScorer.from_dataframes(users, items, ctx.n_items)
    metrics = ctx.score("als", scorer, step=conf.max_iter)
    if conf.learning_curve:
        curve.append((conf.max_iter, metrics[primary]))
    ctx.curves["als"] = sorted(curve)
    ctx.publish("als", scorer)
    with ctx.timer.stage("als_save"):
        ctx.save_factors("als", users, items)
        model.write().overwrite().save(f"{ctx.summary.out_dir}/models/als/spark_model")
    scorer.unpersist()
    users.unpersist()
    items.unpersist()


def warp_estimator(conf: WarpConfig) -> RankingFM:
    """The ``RankingFM`` estimator for the ``warp`` config section (one place translates the names)."""
    return RankingFM(loss=conf.loss, noComponents=conf.no_components, learningRate=conf.learning_rate,
                     learningSchedule=conf.optimiser, rho=conf.rho, epsilon=conf.epsilon,
                     userAlpha=conf.user_alpha, itemAlpha=conf.item_alpha, maxSampled=conf.max_sampled,
                     k=conf.k, n=conf.n, numThreads=conf.num_threads, maxIter=conf.epochs, seed=conf.seed, numShards=conf.n_shards or 0,
                     localPasses=conf.local_passes, checkpointInterval=conf.checkpoint_interval,
                     strategy=conf.strategy, syncsPerEpoch=conf.syncs_per_epoch)


#: ``warp.train_metrics`` scores this share of the training users (hash-sampled), as LightFM users
#: print train p@k to see under-/over-fitting next to the test curve.
TRAIN_METRIC_USER_PERCENT = 20


def _train_sample(ctx: _Context) -> DataFrame:
    """A fixed ~20% of training users with all their training interactions (the same users every epoch)."""
    bucket = F.pmod(F.xxhash64(F.col(USER_IDX), F.lit(ctx.conf.evaluation.random_seed)), F.lit(100))
    return ctx.train.where(bucket < TRAIN_METRIC_USER_PERCENT).cache()


def side_feature_matrix(ctx: _Context, side: str) -> FeatureMatrix | None:
    """The ``item`` or ``user`` side-feature matrix from ``features.<side>s`` (None without sources).

    Item entries are collected (O(items)); user entries stay distributed.
    Logs the kept/dropped/rejected counts per group.
    """
    conf = ctx.conf.features.items if side == "item" else ctx.conf.features.users
    if not conf.sources:
        return None
    id_map, id_col, idx_col, n_rows = ((ctx.item_map, ITEM_ID, ITEM_IDX, ctx.n_items) if side == "item" else
                                       (ctx.user_map, USER_ID, USER_IDX, ctx.prepared.matrix.n_users))
    with ctx.timer.stage(f"{side}_features"):
        features = build_feature_matrix(ctx.spark, conf, id_map, id_col, idx_col, n_rows,
                                        f"{ctx.summary.out_dir}/rejects", side=side, collect=side == "item")
    for report in features.reports:
        log_metrics(report.as_metrics(side))
        ctx.summary.outputs[f"rejects_{side}_features_{report.group}"] = report.rejects_path
    log_metrics({f"features_{side}_total": features.n_features, f"features_{side}_side": len(features.names)})
    return features


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
            reps, biases = state.item_representations()
            scorer = FactorScorer(reps, state.user_factors(ctx.spark), item_bias=biases)
            value = evaluate(scorer, ctx.train, ctx.test, ks=tuple(ev.ks), exclude_train=ev.exclude_train)[primary]
            log_metrics({primary: value}, prefix=f"{name}_test_", step=epoch)
            curve.append((epoch, value))
            line += f", test {primary} {value:.4f}" + train_metric(scorer, epoch)
            scorer.unpersist()
        log.info("%s", line)

    item_features = side_feature_matrix(ctx, "item")
    user_features = side_feature_matrix(ctx, "user")
    estimator = warp_estimator(conf)
    weighted = ctx.train.select(USER_IDX, ITEM_IDX, transformed_weight(conf.sample_weight).alias(WEIGHT))
    with ctx.timer.stage(f"{name}_fit"):
        model = estimator.fit_indexed(weighted, ctx.user_map, ctx.item_map, n_users=ctx.prepared.matrix.n_users,
                                      n_items=ctx.n_items, item_features=item_features,
                                      user_features=user_features, on_epoch=on_epoch,
                                      state_every=conf.eval_every)
    log_params({f"{name}.n_shards_used": model.getOrDefault("numShards")})
    scorer = model.scorer()
    metrics = ctx.score(name, scorer, step=conf.epochs)
    if conf.eval_every:
        curve.append((conf.epochs, metrics[primary]))
    ctx.curves[name] = curve
    if train_sample is not None:
        line = train_metric(scorer, conf.epochs)
        log.info("%s after %d epochs%s", name, conf.epochs, line)
        ctx.curves[f"{name} (train)"] = train_curve
        train_sample.unpersist()
    # With user features, cold users (features, no interactions) get recommendations too.
    ctx.publish(name, scorer, users=ctx.user_map.select(USER_IDX) if user_features is not None else None)
    with ctx.timer.stage(f"{name}_save"):
        ctx.save_factors(name, model.user_factors_indexed(), model.item_factors_indexed())
        model.save(f"{ctx.summary.out_dir}/models/{name}/model")
    scorer.unpersist()
    model.state.unpersist()


def run_training(spark: SparkSession, conf: TrainConfig) -> RunSummary:
    """Run the whole training job; returns what it produced (also printed by the job)."""
    timer = StageTimer()
    staged = StagedOutput(spark, conf.output.dir, protected=protected_paths(conf), job="train")
    staged.recover()
    ensure_input(spark, conf.data)
    with mlflow_run(conf.mlflow, spark_version=spark.version) as run:
        log_config(conf)
        # Everything is written under the staging directory and published at the end in one
        # rename, so a killed run never leaves old and new outputs mixed (pipeline/outputs.py).
        out_dir = staged.staging
        prepared = prepare_matrix(spark, conf.data, conf.split, out_dir, timer, features=conf.features)
        log_metrics(prepared.counts)
        for step in prepared.threshold_passes:
            log_metrics({"threshold_rows": step.rows, "threshold_users": step.users, "threshold_items": step.items},
                        step=step.pass_number)
        log_dict_artifact(dataclasses.asdict(prepared.rejects), "data/rejects_summary.json")
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
        plot_learning_curves(ctx.curves, f"test_{ctx.primary_metric()}", "iterations (ALS) / epochs (WARP, BPR)")
        ctx.train.unpersist()
        ctx.test.unpersist()
        staged.publish(summary, timer)
    return summary
