"""Two nights of ``jobs/nightly.py`` through ``./spark-submit.sh``, as the README tells users to run it.

Under spark-submit the package is a zip (``--py-files build/recspark.zip``), so anything that reads
a file from the package at run time (the pyfunc's code) must work from the zip: in-process runs
(tests/spark/test_nightly.py) cannot see that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from recspark.config import SyntheticSpec
from recspark.data.synthetic import interactions_frame

REPO = Path(__file__).resolve().parents[2]
NAME = "nightly-submit-test"

pytestmark = [pytest.mark.spark, pytest.mark.e2e]


def night(tmp: Path, date: str, *extra: str) -> subprocess.CompletedProcess:
    args = [str(REPO / "spark-submit.sh"), "--master", "local[2]", str(REPO / "jobs" / "nightly.py"),
            "--conf", str(REPO / "conf" / "nightly.yaml"), "--date", date]
    for item in (f"data.path={tmp}/snapshots/{{date}}/interactions", f"root={tmp}/nightly",
                 f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/mlruns",
                 f"promotion.registered_model={NAME}", "warp.no_components=8", "warp.epochs=2",
                 "warp.n_shards=1", "split.holdout_k=3", "data.min_user_interactions=3",
                 "data.min_item_interactions=3", "spark.conf.spark.driver.memory=1g", *extra):
        args += ["--set", item]
    env = {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": sys.executable}
    return subprocess.run(args, cwd=tmp, capture_output=True, text=True, timeout=900, env=env)


def test_two_nights_through_spark_submit_promote_then_reject(spark, tmp_path):
    spec = SyntheticSpec(n_users=200, n_items=200, n_interactions=3000, n_clusters=3, min_user_interactions=12,
                         seed=5)
    rows = interactions_frame(spark, spec).cache()
    for date in ("2026-11-21", "2026-11-22"):
        rows.write.parquet(f"{tmp_path}/snapshots/{date}/interactions")
    rows.unpersist()

    first = night(tmp_path, "2026-11-21")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    pointer = (tmp_path / "nightly" / "_CURRENT").read_text().strip()
    assert pointer.startswith("runs/2026-11-21/")

    # Tolerance -1: the candidate must beat the champion by a whole p@5 point, so it is rejected.
    second = night(tmp_path, "2026-11-22", "promotion.tolerance=-1")
    assert second.returncode == 5, (second.stdout + second.stderr)[-3000:]
    assert (tmp_path / "nightly" / "_CURRENT").read_text().strip() == pointer

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        client = MlflowClient()
        champion = client.get_model_version_by_alias(NAME, "champion")
        assert champion.tags["nightly.date"] == "2026-11-21"
        versions = {v.version: v.tags for v in client.search_model_versions(f"name = '{NAME}'")}
        assert len(versions) == 2 and any("rejected" in tags for tags in versions.values())
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
        user = pd.read_parquet(tmp_path / "snapshots" / "2026-11-21" / "interactions")["user_id"].iloc[0]
        recs = model.predict(pd.DataFrame({"user_id": [user]}), params={"k": 3})
        assert list(recs["rank"]) == [1, 2, 3] and set(recs["source"]) == {"model"}
    finally:
        mlflow.set_tracking_uri(None)
