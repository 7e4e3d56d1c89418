"""One trial: fit a configuration on the search's training part and score it on validation.

The objective never sees the test split: trials fit on ``fit_train`` and are
scored on ``val``, a per-user holdout carved from the training split with
:func:`recspark.data.split.holdout_split` (the same protocol as the test split,
another seed). Only the best configuration is refit on the whole training
split and scored on test, once (:meth:`Objective.refit`).

WARP/BPR trials are scored every ``tune.pruning.every`` epochs from the
trainer's ``on_epoch`` callback and reported to optuna; a pruned trial raises
:class:`optuna.TrialPruned` from inside the callback, which unwinds the fit
(its cached shards and broadcasts are freed on the way out). ALS has no
per-iteration hook, so its trials are scored once, at the end.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import mlflow
import optuna
from mlflow.entities import RunInfo
from pyspark.sql import DataFrame, SparkSession

from recspark.config import SearchConfig, TrainConfig, ValidationSplitConfig, with_values
from recspark.data.indexing import load_id_map
from recspark.data.matrix import InteractionMatrix
from recspark.data.split import holdout_split
from recspark.errors import DataValidationError
from recspark.evaluation.ranking import evaluate
from recspark.models.fit import FittedModel, fit_als, fit_warp, side_feature_matrices
from recspark.models.scoring import Scorer
from recspark.models.warp.trainer import WarpState
from recspark.tracking.mlflow_log import log_metrics, log_params

log = logging.getLogger(__name__)

TrialState = Literal["COMPLETE", "PRUNED", "FAILED"]
#: MLflow has no "pruned" run status: a pruned trial's run ends KILLED, tagged ``trial.state=PRUNED``.
_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAILED": "FAILED"}


@dataclass
class TrialRecord:
    """What one trial did: its values, outcome, validation learning curve and MLflow run."""

    number: int
    params: dict[str, Any]
    state: TrialState
    value: float | None = None  # the primary validation metric (COMPLETE trials)
    reason: str = ""  # why a trial was pruned or failed
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch/iteration, validation metric)
    run_id: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class SearchData:
    """The cached splits of one search and what every fit needs besides the config.

    Trials fit on ``fit_train`` and are scored on ``val`` (carved from
    ``train``); the best configuration is refit on ``train`` and scored on ``test``.
    """

    fit_train: DataFrame
    val: DataFrame
    train: DataFrame
    test: DataFrame
    n_users: int
    n_items: int
    user_map: DataFrame
    item_map: DataFrame
    out_dir: str
    counts: dict[str, float]

    @classmethod
    def carve(cls, spark: SparkSession, matrix: InteractionMatrix, id_maps: str, conf: ValidationSplitConfig,
              out_dir: str) -> SearchData:
        """Split a validation holdout off ``matrix.train`` (``tune.validation``); cache all four parts.

        ``id_maps`` is the folder with the matrix's ``users`` and ``items`` id maps.

        Raises
        ------
        DataValidationError
            No training user has enough interactions for a validation holdout.
        """
        train, test = matrix.train.cache(), matrix.test.cache()
        split = holdout_split(train, test_user_fraction=conf.test_user_fraction, k=conf.holdout_k, seed=conf.seed)
        counts = {f"validation_{name}": value for name, value in split.counts().as_metrics().items()}
        if not counts["validation_test_users"]:
            raise DataValidationError(
                f"tune.validation: no training user has >= {2 * conf.holdout_k} interactions, so the validation "
                "split is empty; lower tune.validation.holdout_k or use more data")
        return cls(split.train.cache(), split.test.cache(), train, test, matrix.n_users, matrix.n_items,
                   load_id_map(spark, f"{id_maps}/users"), load_id_map(spark, f"{id_maps}/items"), out_dir, counts)

    def unpersist(self) -> None:
        """Drop the four cached splits (after the refit, or when the search fails)."""
        for frame in (self.fit_train, self.val, self.train, self.test):
            frame.unpersist()


#: ``checkpoint(epoch, scorer)``: called every ``every`` epochs during a WARP fit; raising aborts the fit.
Checkpoint = Callable[[int, Scorer], None]
#: ``interrupt(epoch)``: called after every WARP epoch whose model is at hand (with one shard, the last of each
#: run of epochs trained in one task), before any checkpoint; raising aborts the fit.
Interrupt = Callable[[int], None]


def fitted(conf: TrainConfig, model: str, train: DataFrame, data: SearchData, rejects_dir: str, *,
           checkpoint: Checkpoint | None = None, every: int = 0,
           interrupt: Interrupt | None = None) -> FittedModel:
    """Fit ``model`` ('als' or 'warp') as ``conf`` says on ``train``, as the training job does.

    The same fit for trials and the refit (:mod:`recspark.models.fit`), side
    features (``features.items`` and ``features.users``) included; their bad
    rows go to ``rejects_dir``. Use the result as a context manager to free it.
    ALS has no per-iteration hook: ``checkpoint`` and ``interrupt`` apply to WARP/BPR only.
    """
    if model == "als":
        return fit_als(train, conf.als, data.n_items)
    spark = train.sparkSession
    features = side_feature_matrices(spark, conf.features, data.user_map, data.item_map, data.n_users,
                                     data.n_items, rejects_dir)

    def on_epoch(epoch: int, stats: dict[str, float], state: WarpState | None) -> None:
        # state is None inside a one-shard run of epochs (the model arrives at its end); at the last
        # epoch the fit is done and the caller scores the final model.
        if state is None or epoch >= conf.warp.epochs:
            return
        if interrupt is not None:
            interrupt(epoch)
        if checkpoint is not None and every and epoch % every == 0:
            partial = state.scorer(state.user_factors(spark))
            try:
                checkpoint(epoch, partial)
            finally:
                partial.unpersist()

    return fit_warp(train, conf.warp, data.user_map, data.item_map, data.n_users, data.n_items,
                    features=features, on_epoch=on_epoch, state_every=every)


def failure_reason(err: BaseException) -> str:
    """One line for the trial's ``trial.reason`` tag: the error's type and message.

    An error raised on an executor (e.g. the kernel's ``ModelFitError`` when
    training diverges) reaches the driver wrapped with a Python traceback; its
    last ``SomeError: message`` line is the reason.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[\w.]*(Error|Exception): ", line)]
    reason = raised[-1] if raised else f"{type(err).__name__}: {lines[0] if lines else ''}"
    return reason[:500]


class Objective:
    """Runs trials (from any thread) and the final refit, all with the same fit and evaluation."""

    def __init__(self, base: TrainConfig, search: SearchConfig, data: SearchData, parent: RunInfo,
                 deadline: float | None = None) -> None:
        self.base, self.search, self.data, self.parent = base, search, data, parent
        self.deadline = deadline  # time.monotonic() after which running WARP trials stop at their next epoch
        self.ks = tuple(base.evaluation.ks)
        self.primary = f"precision_at_{self.ks[0]}"

    def score(self, scorer: Scorer, train: DataFrame, held_out: DataFrame) -> dict[str, float]:
        """Ranking metrics of ``held_out`` as the training job computes them (``evaluation`` section)."""
        return evaluate(scorer, train, held_out, ks=self.ks, exclude_train=self.base.evaluation.exclude_train)

    def __call__(self, trial: optuna.Trial, pool: str) -> TrialRecord:
        """Run ``trial`` in FAIR scheduler pool ``pool``, logged as a child run of the search's run.

        Never raises for a failed trial: the error is the record's ``reason``
        (and the child run ends FAILED), so the search goes on.
        """
        spark = self.data.train.sparkSession
        # Pinned thread mode (PySpark's default): a local property holds for jobs from this thread only.
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", pool)
        record = TrialRecord(trial.number, dict(trial.params), "FAILED")
        run = mlflow.start_run(run_name=f"trial-{trial.number:03d}", experiment_id=self.parent.experiment_id,
                               nested=True, parent_run_id=self.parent.run_id)  # this thread's active run
        start = time.perf_counter()
        try:
            record.run_id = run.info.run_id
            mlflow.set_tags({"trial.number": trial.number, "trial.pool": pool})
            log_params(record.params)
            record.value = self._fit_and_score(trial, record)
            record.state = "COMPLETE"
        except optuna.TrialPruned as pruned:
            record.state, record.reason = "PRUNED", str(pruned)
        except Exception as err:  # any failure ends this trial only; the reason is recorded
            record.reason = failure_reason(err)
            log.warning("trial %d failed: %s", trial.number, record.reason)
            log.debug("trial %d traceback", trial.number, exc_info=True)  # executor errors carry a JVM trace
        finally:
            record.seconds = time.perf_counter() - start
            mlflow.set_tags({"trial.state": record.state, "trial.reason": record.reason})
            log_metrics({"trial_seconds": record.seconds})
            mlflow.end_run(_RUN_STATUS[record.state])
            spark.sparkContext.setLocalProperty("spark.scheduler.pool", None)
        return record

    def _fit_and_score(self, trial: optuna.Trial, record: TrialRecord) -> float:
        conf = with_values(self.base, record.params)
        data, model = self.data, self.search.model

        def checkpoint(epoch: int, scorer: Scorer) -> None:
            value = self.score(scorer, data.fit_train, data.val)[self.primary]
            log_metrics({self.primary: value}, prefix="val_", step=epoch)
            record.curve.append((epoch, value))
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}: val {self.primary} {value:.4f} is below "
                                         "the median of earlier trials at that epoch")

        def interrupt(epoch: int) -> None:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise optuna.TrialPruned(f"stopped after epoch {epoch}: the search's time budget "
                                         "(tune.timeout_minutes) is spent")

        final_step = conf.als.max_iter if model == "als" else conf.warp.epochs
        rejects = f"{data.out_dir}/trials/{trial.number}/rejects"
        every = self.search.pruning.every
        with fitted(conf, model, data.fit_train, data, rejects, checkpoint=checkpoint, every=every,
                    interrupt=interrupt) as fit:
            metrics = self.score(fit.scorer, data.fit_train, data.val)
        log_metrics(metrics, prefix="val_", step=final_step)
        record.curve.append((final_step, metrics[self.primary]))
        trial.report(metrics[self.primary], final_step)
        return metrics[self.primary]

    def refit(self, params: dict[str, Any], model_dir: str) -> dict[str, float]:
        """Fit ``params`` on the whole training split, save it to ``model_dir`` and score it on test.

        Scoring is the search's only look at test. The saved model is the
        training job's (``RankingFMModel`` or Spark's ``ALSModel``), so the
        search's winner can be served or warm-started without another fit.
        """
        conf = with_values(self.base, params)
        with fitted(conf, self.search.model, self.data.train, self.data, f"{self.data.out_dir}/rejects") as fit:
            fit.save(model_dir)
            return self.score(fit.scorer, self.data.train, self.data.test)
