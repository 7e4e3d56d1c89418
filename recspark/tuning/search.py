"""The search job: prepare the matrix once, run trials concurrently, refit the best, log it all to MLflow.

Trials run from driver threads, at most ``tune.concurrency`` at a time. Each
thread submits its trial's Spark jobs in its own FAIR scheduler pool
(``tune-0``, ``tune-1``, ...; the tune job's config sets
``spark.scheduler.mode: FAIR``), so two trials share the executors instead of
the second waiting behind the first. The driver thread alone asks the optuna
study for trials and tells it their results; worker threads only report
intermediate scores (optuna's in-memory storage is locked). Budget: no trial
starts after ``tune.n_trials`` trials or ``tune.timeout_minutes``; when the
time is spent, running WARP/BPR trials stop after their current epoch
(recorded as pruned, with that reason) and running ALS trials finish.

The search's outputs, beside the training job's matrix and id maps:
``best_config.yaml`` (a training-job config with the best values, for
``jobs/train.py --conf``) and ``best_model/`` (the refit model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import mlflow
import optuna
import yaml
from mlflow.entities import RunInfo
from optuna.trial import TrialState
from pyspark import inheritable_thread_target
from pyspark.sql import SparkSession

from recspark.config import SearchConfig, TuneConfig, to_dict, with_values
from recspark.data import fs
from recspark.data.matrix import InteractionMatrix
from recspark.errors import JobTerminated, ModelFitError
from recspark.runs.outputs import StagedOutput, protected_paths
from recspark.pipeline.prepare import ensure_input, prepare_matrix
from recspark.runs.timing import StageTimer
from recspark.redact import REDACTED, redact
from recspark.tracking.mlflow_log import (log_config, log_dict_artifact, log_metrics, mlflow_run, resolve_tracking_uri,
                                          run_name)
from recspark.tuning.objective import Objective, SearchData, TrialRecord
from recspark.tuning.space import distributions
from recspark.tuning.strategies import Plan, make_plan
from recspark.tuning.tracking import log_best, log_trial_progress, plot_trials

log = logging.getLogger(__name__)

_OPTUNA_STATE = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAILED": TrialState.FAIL}


@dataclass
class SearchResult:
    """What a search produced: every trial, the best one, and its refit's test metrics."""

    run_id: str
    experiment: str
    tracking_uri: str
    out_dir: str
    metric: str  # the primary validation metric trials are ranked by, e.g. precision_at_5
    trials: list[TrialRecord]
    best: TrialRecord
    test_metrics: dict[str, float]
    outputs: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def run_trials(spark: SparkSession, plan: Plan, objective: Objective, conf: SearchConfig) -> list[TrialRecord]:
    """Ask, run (``conf.concurrency`` at once, one FAIR pool each) and tell trials until the budget is spent.

    Returns the trials in number order; failed trials are records too. No
    trial starts after ``objective.deadline``.
    """
    deadline = objective.deadline
    space = distributions(conf.space)
    free_pools = [f"tune-{slot}" for slot in range(conf.concurrency)]
    running: dict[Future[TrialRecord], tuple[optuna.Trial, str]] = {}
    records: list[TrialRecord] = []
    best: float | None = None
    asked = 0
    # The pool's exit waits for running trials; on SIGTERM their Spark jobs are cancelled first.
    with ThreadPoolExecutor(max_workers=conf.concurrency, thread_name_prefix="tune-trial") as pool, \
            _spark_jobs_cancelled_on_sigterm(spark):
        while True:
            while (free_pools and (plan.n_trials is None or asked < plan.n_trials)
                   and (deadline is None or time.monotonic() < deadline)):
                trial = plan.study.ask(space)
                slot = free_pools.pop(0)
                # Wrapped per trial: the thread starts from the driver thread's local properties.
                target = inheritable_thread_target(spark)(objective)
                running[pool.submit(target, trial, slot)] = (trial, slot)
                asked += 1
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                trial, slot = running.pop(future)
                free_pools.append(slot)
                record = future.result()
                plan.study.tell(trial, record.value if record.state == "COMPLETE" else None,
                                state=_OPTUNA_STATE[record.state])
                if record.value is not None:
                    best = record.value if best is None else max(best, record.value)
                log_trial_progress(record, best, objective.primary)
                records.append(record)
                value = "" if record.value is None else f" val {objective.primary}={record.value:.4f}"
                log.info("trial %d %s in %.0fs%s %s %s", record.number, record.state, record.seconds, value,
                         record.params, record.reason)
    return sorted(records, key=lambda r: r.number)


@contextlib.contextmanager
def _spark_jobs_cancelled_on_sigterm(spark: SparkSession) -> Iterator[None]:
    """Cancel every Spark job when SIGTERM ends the search, so running trials fail now (each recorded
    as failed) instead of finishing after the scheduler's grace period has run out."""
    try:
        yield
    except JobTerminated:
        spark.sparkContext.cancelAllJobs()
        raise


def best_config_yaml(conf: TuneConfig, best: TrialRecord) -> str:
    """The training job's config with the best trial's values, as YAML (``jobs/train.py --conf`` trains it).

    Its ``output.dir`` is the search's plus ``-best``, so training the winner
    never replaces the search's own outputs (this file among them). Credentials
    (``spark.conf`` secrets, a tracking URI's password) are redacted like in
    every logged copy of a config: set them again (e.g. ``--set``) to run it.
    """
    values = {**best.params, "output.dir": f"{conf.output.dir.rstrip('/')}-best"}
    header = (f"# Best of a {conf.tune.strategy} search: trial {best.number}, val score {best.value:.6f}\n"
              f"# Searched values: {best.params}\n")
    body = yaml.safe_dump(redact(to_dict(with_values(conf.train_config(), values))), sort_keys=False)
    if REDACTED in body:
        header += f"# Credentials are replaced by {REDACTED}: set them again (e.g. --set) before running it\n"
    return header + body


def run_search(spark: SparkSession, conf: TuneConfig) -> SearchResult:
    """Run the whole search job: build the matrix as the training job does, then :func:`search_matrix`.

    Outputs (id maps, matrix) are published to ``output.dir`` all or nothing, like the training job's.

    Raises
    ------
    ModelFitError
        No trial completed (all failed or were pruned): there is nothing to refit.
    """
    search, timer = conf.tune, StageTimer()
    staged = StagedOutput(spark, conf.output.dir, protected=protected_paths(conf), job="tune")
    staged.recover()
    ensure_input(spark, conf.data)
    title = run_name("tune", search.model, search.strategy, data_path=conf.data.path)
    with mlflow_run(conf.mlflow, spark_version=spark.version, run_name=title, timer=timer) as run:
        log_config(conf)
        prepared = prepare_matrix(spark, conf.data, conf.split, staged.staging, timer, published_dir=staged.final,
                                  features=conf.features)
        result = search_matrix(spark, conf, prepared.matrix, f"{staged.staging}/id_maps", staged.staging, run.info,
                               timer)
        result.outputs = {**prepared.paths, "best_config": f"{staged.staging}/best_config.yaml",
                          "best_model": f"{staged.staging}/best_model"}
        staged.publish(result, timer)
    return result


def search_matrix(spark: SparkSession, conf: TuneConfig, matrix: InteractionMatrix, id_maps: str, out_dir: str,
                  parent: RunInfo, timer: StageTimer) -> SearchResult:
    """Search on an existing train/test matrix, logging into the active MLflow run ``parent``.

    Carves the validation split from ``matrix.train``, runs the trials, then
    refits the best configuration on ``matrix.train``, saves it to
    ``<out_dir>/best_model`` with its config in ``<out_dir>/best_config.yaml``,
    and scores it on ``matrix.test`` (the only use of test). ``id_maps``: the
    matrix's id-map folder.
    """
    search = conf.tune
    with timer.stage("validation_split"):
        data = SearchData.carve(spark, matrix, id_maps, search.validation, out_dir)
    try:
        log_metrics(data.counts)
        deadline = time.monotonic() + 60 * search.timeout_minutes if search.timeout_minutes else None
        objective = Objective(conf.train_config(), search, data, parent, deadline)
        with timer.stage("search"):
            trials = run_trials(spark, make_plan(search), objective, search)
        complete = [t for t in trials if t.state == "COMPLETE"]
        if not complete:
            first = next((t.reason for t in trials if t.state == "FAILED"), "all were pruned")
            raise ModelFitError(f"no trial of {len(trials)} completed, nothing to refit (first failure: {first}); "
                                "check tune.space (e.g. lower the learning rate range)")
        best = max(complete, key=lambda t: (t.value, -t.number))
        log_best(best, trials, objective.primary)
        plot_trials(trials, objective.primary)
        log_dict_artifact({"trials": [dataclasses.asdict(t) for t in trials]}, "trials.json")
        log.info("best trial %d: val %s=%.4f %s; refitting on the whole training split",
                 best.number, objective.primary, best.value, best.params)
        best_config = best_config_yaml(conf, best)
        fs.write_text(spark, f"{out_dir}/best_config.yaml", best_config)  # before the refit, which may fail
        mlflow.log_text(best_config, "best_config.yaml")
        with timer.stage("refit"):
            test_metrics = objective.refit(best.params, f"{out_dir}/best_model")
        log_metrics(test_metrics, prefix="test_")
        log.info("best configuration on test: %s=%.4f", objective.primary, test_metrics[objective.primary])
    finally:
        data.unpersist()
    return SearchResult(run_id=parent.run_id, experiment=conf.mlflow.experiment,
                        tracking_uri=resolve_tracking_uri(conf.mlflow), out_dir=out_dir, metric=objective.primary,
                        trials=trials, best=best, test_metrics=test_metrics)
