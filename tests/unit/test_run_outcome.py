"""Every MLflow run says how it ended: FAILED or KILLED (SIGTERM) with the stage, never RUNNING forever.

A real MLflow store (sqlite in a temp folder), no Spark: ``mlflow_run`` and the stage timer only.
"""

from __future__ import annotations

import logging
import os
import signal

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from recspark.config import MlflowConfig
from recspark.errors import DataValidationError, JobTerminated, stopped_by_signal
from recspark.runs.timing import StageTimer
from recspark.tracking.mlflow_log import ERROR_TAG, FAILED_STAGE_TAG, OUTCOME_TAG, mlflow_run


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")  # one store for the module: creating one takes seconds
    conf = MlflowConfig(tracking_uri=f"sqlite:///{tmp}/mlflow.db", experiment="outcomes",
                        artifact_location=str(tmp / "mlruns"))
    yield conf
    mlflow.set_tracking_uri(None)


def ended(conf: MlflowConfig, run_id: str):
    return MlflowClient(conf.tracking_uri).get_run(run_id)


def test_sigterm_ends_the_run_killed_with_its_stage_and_restores_the_handler(tracking):
    def previous(signum, frame):  # a handler the caller had installed
        raise AssertionError("not expected to run")

    original = signal.signal(signal.SIGTERM, previous)
    timer = StageTimer()
    try:
        with pytest.raises(JobTerminated) as raised:
            with mlflow_run(tracking, spark_version="test", run_name="test", timer=timer) as run:
                with timer.stage("prepare"):
                    pass
                with timer.stage("register"):
                    os.kill(os.getpid(), signal.SIGTERM)
                    signal.pause()  # the handler raises here, as it would inside a long call
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, original)
    assert raised.value.signum == signal.SIGTERM
    got = ended(tracking, run.info.run_id)
    assert got.info.status == "KILLED"
    assert got.data.tags[OUTCOME_TAG] == "killed"
    assert got.data.tags[FAILED_STAGE_TAG] == "register"
    assert {"time_prepare_s", "time_register_s"} <= set(got.data.metrics)


def test_a_failure_ends_the_run_failed_naming_the_stage_and_the_error(tracking):
    timer = StageTimer()
    with pytest.raises(DataValidationError):
        with mlflow_run(tracking, spark_version="test", run_name="test", timer=timer) as run:
            with timer.stage("ingest"):
                raise DataValidationError("interactions: 3 of 4 rows rejected")
    got = ended(tracking, run.info.run_id)
    assert got.info.status == "FAILED"
    assert got.data.tags[OUTCOME_TAG] == "failed"
    assert got.data.tags[FAILED_STAGE_TAG] == "ingest"
    assert got.data.tags[ERROR_TAG] == "DataValidationError: interactions: 3 of 4 rows rejected"
    assert "time_ingest_s" in got.data.metrics


def test_a_finished_run_is_tagged_succeeded(tracking):
    with mlflow_run(tracking, spark_version="test", run_name="test", timer=StageTimer()) as run:
        pass
    got = ended(tracking, run.info.run_id)
    assert got.info.status == "FINISHED" and got.data.tags[OUTCOME_TAG] == "succeeded"


def test_stage_of_names_the_innermost_stage_an_error_left_or_where_the_run_was():
    timer = StageTimer()
    assert timer.stage_of(ValueError()) == "setup"
    with timer.stage("ingest"):
        pass
    assert timer.stage_of(ValueError()) == "after ingest"
    try:
        with timer.stage("fit"), timer.stage("epoch"):
            raise ValueError("diverged")
    except ValueError as err:
        inner = err
    assert timer.stage_of(inner) == "epoch"
    try:
        raise RuntimeError("wrapped") from inner
    except RuntimeError as wrapper:
        assert timer.stage_of(wrapper) == "epoch"


def test_a_signal_handled_while_the_started_line_is_logged_is_in_that_stage():
    # The nightly kill test sends SIGTERM when it reads "stage register: started"; the handler can run
    # before the logging call returns, and the run must then be in "register", not "after recommend".
    class InterruptOnStart(logging.Handler):
        def emit(self, record):
            if record.getMessage() == "stage register: started":
                raise JobTerminated(signal.SIGTERM)

    timer, handler = StageTimer(), InterruptOnStart()
    logger = logging.getLogger("recspark.runs.timing")
    logger.addHandler(handler)
    old = logger.level, logger.disabled
    logger.setLevel(logging.INFO)
    logger.disabled = False
    try:
        with timer.stage("recommend"):
            pass
        with pytest.raises(JobTerminated) as raised:
            with timer.stage("register"):
                pass
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old[0])
        logger.disabled = old[1]
    assert timer.stage_of(raised.value) == "register"
    assert timer.current() == "after register"


def test_a_run_stopped_by_sigterm_ends_killed_without_asking_spark_for_the_registry(tracking, monkeypatch):
    """CI once saw SIGTERM cut a JVM call short: MLflow, making a client to end the run, asked the Spark
    session for the registry URI, got garbage from the gateway (KeyError) and the run stayed RUNNING."""
    from mlflow.tracking._model_registry import utils

    def broken_gateway():
        raise KeyError("c")

    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with pytest.raises(JobTerminated):
        with mlflow_run(tracking, spark_version="test", run_name="test", timer=StageTimer()) as run:
            monkeypatch.setattr(utils, "_get_registry_uri_from_spark_session", broken_gateway)
            raise JobTerminated(signal.SIGTERM)
    assert "MLFLOW_REGISTRY_URI" not in os.environ  # the run's pin is not left behind for what runs next
    monkeypatch.undo()
    assert ended(tracking, run.info.run_id).info.status == "KILLED"


def test_an_error_raised_while_sigterm_unwinds_ends_the_run_killed(tracking):
    """As PySpark 4.3's toPandas does when the signal lands inside it: its ``finally`` raises instead."""
    timer = StageTimer()
    with pytest.raises(UnboundLocalError):
        with mlflow_run(tracking, spark_version="test", run_name="test", timer=timer) as run:
            with timer.stage("register"):
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    signal.pause()
                finally:
                    raise UnboundLocalError("cannot access local variable 'sockfile'")
    got = ended(tracking, run.info.run_id)
    assert got.info.status == "KILLED" and got.data.tags[FAILED_STAGE_TAG] == "register"


def test_a_cleanup_error_while_sigterm_unwinds_the_job_still_exits_143():

    def cleanup_fails():
        try:
            raise JobTerminated(signal.SIGTERM)
        finally:
            raise KeyError("c")  # e.g. an unpersist through a gateway the signal left out of step

    with pytest.raises(KeyError) as raised:
        cleanup_fails()
    err = raised.value
    try:
        raise err from err  # as run_job re-raises a task's error
    except KeyError as again:
        assert stopped_by_signal(again)
    assert not stopped_by_signal(KeyError("c"))
