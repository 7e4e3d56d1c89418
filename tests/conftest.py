"""Shared fixtures: one local[2] SparkSession for the whole run, and the shared data folder."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The tests that call mlflow.spark.log_model as a user would (README snippet, flavor, autolog) would
# let MLflow infer pip requirements by loading each model in a new process with its own Spark
# application (~1-2 min each on 2 cores); at 1 s MLflow gives up and logs its default requirements.
# The training job passes its requirements (tracking/mlflow_log.py: log_spark_model), so it never waits.
os.environ.setdefault("MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT", "1")


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """A session-scoped ``local[2]`` SparkSession (2 partitions so partition-boundary bugs show)."""
    from recspark.session import build_session

    tmp = tmp_path_factory.mktemp("spark")
    session = build_session(
        master="local[2]",
        app_name="recspark-tests",
        conf={
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.ui.enabled": "false",
            "spark.local.dir": str(tmp / "local"),
            "spark.sql.warehouse.dir": str(tmp / "warehouse"),
            "spark.driver.memory": "2g",
        },
        checkpoint_dir=str(tmp / "checkpoints"),
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The public datasets folder: ``$RECSPARK_DATA_DIR`` or ``../shared/data``; skips when absent."""
    path = Path(os.environ.get("RECSPARK_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"public datasets not found at {path} (set RECSPARK_DATA_DIR)")
    return path


@pytest.fixture
def job_descriptions(spark):
    """``() -> Counter`` of the descriptions of the jobs started since the test began (Spark UI, history server).

    By job id, not by subtracting counts: the status store keeps only the last
    ``spark.ui.retainedJobs`` (1000) jobs, so older ones drop out during a long session.
    """
    def jobs() -> dict[int, str | None]:
        listed = spark.sparkContext._jsc.sc().statusStore().jobsList(None)
        found = {}
        for i in range(listed.size()):
            job = listed.apply(i)
            found[job.jobId()] = job.description().get() if job.description().isDefined() else None
        return found

    first = max(jobs(), default=-1)

    def descriptions() -> collections.Counter:
        return collections.Counter(d for job, d in jobs().items() if job > first and d)
    return descriptions
