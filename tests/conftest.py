"""Shared fixtures: one local[2] SparkSession for the whole run, and the shared data folder."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
    """``() -> Counter`` of the application's job descriptions, as the Spark UI and history server list them."""
    def descriptions() -> collections.Counter:
        jobs = spark.sparkContext._jsc.sc().statusStore().jobsList(None)
        options = [jobs.apply(i).description() for i in range(jobs.size())]
        return collections.Counter(o.get() for o in options if o.isDefined())
    return descriptions
