"""Hyperparameter search on a tiny planted dataset: strategies, pruning, failures, nested MLflow runs, refit."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from recspark.config import TrainConfig, TuneConfig, load_config
from recspark.data.matrix import read_matrix
from recspark.errors import JobTerminated, ModelFitError
from recspark.evaluation.ranking import evaluate
from recspark.models.warp.estimator import RankingFMModel
from recspark.runs.timing import StageTimer
from recspark.tracking.mlflow_log import mlflow_run
from recspark.tuning.objective import TrialRecord
from recspark.tuning.search import run_search, run_trials, search_matrix
from recspark.tuning.strategies import make_plan

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.spark


def write_likes(path: Path) -> None:
    """Two taste groups of 30 items; each of 120 users likes 16 items of its group (known best answer)."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"{'xy'[u % 2]}{i}") for u in range(120) for i in rng.choice(30, 16, replace=False)]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_parquet(path)


def overrides(tmp: Path, *extra: str) -> list[str]:
    """conf/tune.yaml on the tiny set: 2-epoch WARP trials scored every epoch, MLflow under ``tmp``."""
    return [f"data.path={tmp}/likes.parquet", "data.generate=null", "data.weight_col=null",
            "data.timestamp_col=null", f"output.dir={tmp}/out", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"mlflow.artifact_location={tmp}/mlruns", "mlflow.experiment=tune-test", "warp.no_components=8",
            "warp.epochs=2", "warp.n_shards=1", "als.max_iter=2", "tune.pruning.every=1", *extra]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tune")
    write_likes(path / "likes.parquet")
    return path


@pytest.fixture(scope="module")
def grid_search(spark, tmp):
    """The whole job, one trial at a time: a good rate, a hopeless one (pruned) and a diverging one (fails)."""
    conf = load_config(REPO / "conf" / "tune.yaml", TuneConfig, overrides(
        tmp, "tune.strategy=grid", "tune.concurrency=1", "tune.pruning.startup_trials=1",
        "tune.space=[{name: warp.learning_rate, type: categorical, values: [0.1, 0.00001, 10000.0]}]"))
    return run_search(spark, conf)


def child_runs(result=None, *, tracking_uri: str = "", run_id: str = "") -> list:
    client = MlflowClient(tracking_uri or result.tracking_uri)
    run_id = run_id or result.run_id
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    return sorted(children, key=lambda r: int(r.data.tags["trial.number"]))


def test_grid_runs_every_point_and_records_pruned_and_failed_trials(grid_search):
    states = [(t.params["warp.learning_rate"], t.state) for t in grid_search.trials]
    assert states == [(0.1, "COMPLETE"), (0.00001, "PRUNED"), (10000.0, "FAILED")]
    pruned, failed = grid_search.trials[1:]
    assert pruned.reason.startswith("pruned at epoch 1") and len(pruned.curve) == 1
    assert "ModelFitError" in failed.reason and "diverged" in failed.reason
    assert grid_search.best.number == 0
    assert [step for step, _ in grid_search.best.curve] == [1, 2]


def test_best_params_are_refit_and_scored_once_on_test(grid_search, spark, tmp):
    client = MlflowClient(grid_search.tracking_uri)
    parent = client.get_run(grid_search.run_id)
    assert parent.data.params["best.warp.learning_rate"] == "0.1"
    assert parent.data.params["tune.strategy"] == "grid"
    assert parent.data.metrics["best_val_precision_at_5"] == pytest.approx(grid_search.best.value)
    assert parent.data.metrics["test_precision_at_5"] == pytest.approx(grid_search.test_metrics["precision_at_5"])
    assert grid_search.test_metrics["precision_at_5"] > 0.2  # random ranking gets ~0.11 on this data
    assert grid_search.test_metrics["n_users_evaluated"] == read_matrix(spark, f"{tmp}/out/matrix").test \
        .select("user_idx").distinct().count()
    artifacts = {a.path for a in client.list_artifacts(grid_search.run_id)}
    assert {"best_params.json", "best_config.yaml", "trials.json", "plots"} <= artifacts
    assert [a.path for a in client.list_artifacts(grid_search.run_id, "plots")] == ["plots/score_vs_trial.png"]


def test_search_outputs_the_winner_as_a_training_config_and_a_saved_model(grid_search, spark, tmp):
    """best_config.yaml trains the winner with jobs/train.py; best_model is the refit model that was scored."""
    assert grid_search.outputs["best_config"].endswith("out/best_config.yaml")
    assert grid_search.outputs["best_model"].endswith("out/best_model")
    best = load_config(tmp / "out" / "best_config.yaml", TrainConfig)
    assert best.warp.learning_rate == 0.1 and best.warp.epochs == 2 and best.data.path.endswith("likes.parquet")
    assert best.output.dir == f"{tmp}/out-best"  # training the winner leaves the search's outputs alone
    model = RankingFMModel.load(f"{tmp}/out/best_model")
    matrix = read_matrix(spark, f"{tmp}/out/matrix")
    scorer = model.scorer()
    try:
        metrics = evaluate(scorer, matrix.train, matrix.test, ks=tuple(best.evaluation.ks),
                           exclude_train=best.evaluation.exclude_train)
    finally:
        scorer.unpersist()
    assert metrics["precision_at_5"] == pytest.approx(grid_search.test_metrics["precision_at_5"], abs=1e-9)


def test_each_trial_is_a_nested_run_with_status_reason_and_curve(grid_search):
    children = child_runs(grid_search)
    assert [(r.data.tags["trial.state"], r.info.status) for r in children] == [
        ("COMPLETE", "FINISHED"), ("PRUNED", "KILLED"), ("FAILED", "FAILED")]
    assert children[2].data.tags["trial.reason"] == grid_search.trials[2].reason
    assert children[0].data.params == {"warp.learning_rate": "0.1"}
    history = MlflowClient(grid_search.tracking_uri).get_metric_history(children[0].info.run_id,
                                                                        "val_precision_at_5")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]


@pytest.mark.parametrize("strategy, model, space", [
    ("random", "als", ("[{name: als.rank, type: int, low: 2, high: 8}, "
                       "{name: als.reg_param, type: loguniform, low: 0.001, high: 1.0}]")),
    ("tpe", "warp", ("[{name: warp.learning_rate, type: loguniform, low: 0.02, high: 0.3}, "
                     "{name: warp.loss, type: categorical, values: [warp, bpr]}]")),
])
def test_random_and_tpe_run_trials_concurrently(grid_search, spark, tmp, strategy, model, space):
    """Two trials at a time on the grid search's matrix, each in its own scheduler pool and child run."""
    conf = load_config(REPO / "conf" / "tune.yaml", TuneConfig, overrides(
        tmp, f"tune.strategy={strategy}", f"tune.model={model}", "tune.n_trials=2", "tune.concurrency=2",
        "tune.tpe_startup_trials=1", "tune.pruning.every=2", f"tune.space={space}"))
    matrix = read_matrix(spark, f"{tmp}/out/matrix")
    with mlflow_run(conf.mlflow, spark_version=spark.version, run_name="test") as run:
        result = search_matrix(spark, conf, matrix, f"{tmp}/out/id_maps", str(tmp / f"scratch-{strategy}"),
                               run.info, StageTimer())
    assert [t.state for t in result.trials] == ["COMPLETE"] * 2
    assert len({tuple(t.params.values()) for t in result.trials}) == 2
    children = child_runs(result)
    assert [r.info.run_id for r in children] == [t.run_id for t in result.trials]
    assert {r.data.tags["trial.pool"] for r in children} <= {"tune-0", "tune-1"}
    assert result.test_metrics["precision_at_5"] > 0.0


def test_time_budget_stops_a_running_trial_after_its_current_epoch(grid_search, spark, tmp):
    """A 50-epoch trial started just inside a 0.6 s budget stops after an epoch, recorded as pruned with why."""
    conf = load_config(REPO / "conf" / "tune.yaml", TuneConfig, overrides(
        tmp, "tune.strategy=random", "tune.n_trials=4", "tune.concurrency=1", "tune.timeout_minutes=0.01",
        "warp.epochs=50", "tune.pruning.enabled=false",
        "tune.space=[{name: warp.learning_rate, type: loguniform, low: 0.05, high: 0.1}]"))
    matrix = read_matrix(spark, f"{tmp}/out/matrix")
    with mlflow_run(conf.mlflow, spark_version=spark.version, run_name="test") as run:
        parent = run.info.run_id
        with pytest.raises(ModelFitError, match="no trial of 1 completed"):
            search_matrix(spark, conf, matrix, f"{tmp}/out/id_maps", str(tmp / "scratch-timeout"), run.info,
                          StageTimer())
    [child] = child_runs(tracking_uri=f"sqlite:///{tmp}/mlflow.db", run_id=parent)
    assert child.data.tags["trial.state"] == "PRUNED" and child.info.status == "KILLED"
    assert re.fullmatch(r"stopped after epoch \d+: the search's time budget \(tune.timeout_minutes\) is spent",
                        child.data.tags["trial.reason"])


def test_sigterm_cancels_the_running_trials_instead_of_waiting_for_them(spark, tmp):
    """Leaving the trial pool waits for its threads: without cancelling their Spark jobs a stopped
    search would outlive the scheduler's grace period (and be SIGKILLed, its run left RUNNING)."""
    conf = load_config(REPO / "conf" / "tune.yaml", TuneConfig, overrides(
        tmp, "tune.strategy=random", "tune.n_trials=1", "tune.concurrency=1", "mlflow.experiment=tune-sigterm"))
    outcome = []

    class SlowTrial:  # stands in for Objective: one Spark job of ~30 s
        deadline, primary = None, "precision_at_5"

        def __call__(self, trial, slot):
            try:
                spark.sparkContext.parallelize(range(2), 2).map(lambda x: time.sleep(30) or x).collect()
                outcome.append("finished")
            except Exception:  # noqa: BLE001 - what a cancelled job raises
                outcome.append("cancelled")
            return TrialRecord(trial.number, {}, TrialState.FAIL)

    def terminate_once_running():
        while not spark.sparkContext.statusTracker().getActiveJobsIds():
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_running, daemon=True).start()
    with pytest.raises(JobTerminated), mlflow_run(conf.mlflow, spark_version=spark.version, run_name="test"):
        run_trials(spark, make_plan(conf.tune), SlowTrial(), conf.tune)
    assert outcome == ["cancelled"]
