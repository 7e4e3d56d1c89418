"""Nights of ``jobs/nightly.py`` through ``./spark-submit.sh``, as the README tells users (and schedulers) run it.

Under spark-submit the package is a zip (``--py-files build/recspark.zip``), so anything that reads
a file from the package at run time (the pyfunc's code) must work from the zip: in-process runs
(tests/spark/test_nightly.py) cannot see that.
"""

from __future__ import annotations

import os
import signal
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


def night_command(tmp: Path, date: str, *extra: str) -> tuple[list[str], dict[str, str]]:
    args = [str(REPO / "spark-submit.sh"), "--master", "local[2]", str(REPO / "jobs" / "nightly.py"),
            "--conf", str(REPO / "conf" / "nightly.yaml"), "--date", date]
    for item in (f"data.path={tmp}/snapshots/{{date}}/interactions", f"root={tmp}/nightly",
                 f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/mlruns",
                 f"promotion.registered_model={NAME}", "warp.no_components=8", "warp.epochs=2",
                 "warp.n_shards=1", "split.holdout_k=3", "data.min_user_interactions=3",
                 "data.min_item_interactions=3", "spark.conf.spark.driver.memory=1g", *extra):
        args += ["--set", item]
    return args, {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": sys.executable}


def night(tmp: Path, date: str, *extra: str) -> subprocess.CompletedProcess:
    args, env = night_command(tmp, date, *extra)
    return subprocess.run(args, cwd=tmp, capture_output=True, text=True, timeout=900, env=env)


def python_driver(jvm: int) -> int:
    """The pid of the job's Python driver: spark-submit's JVM starts it as its child."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        if int(rest.rsplit(")", 1)[1].split()[1]) == jvm and b"nightly.py" in cmdline:
            return int(pid)
    raise AssertionError(f"no Python driver under spark-submit's JVM {jvm}")


def night_terminated_at(tmp: Path, date: str, line: str) -> tuple[int, str]:
    """Run a night and SIGTERM its Python driver once ``line`` is logged; (exit code, output)."""
    args, env = night_command(tmp, date)
    # spark-submit.sh execs spark-submit, which execs the JVM: the child's pid is the JVM's.
    with subprocess.Popen(args, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as job:
        seen = []
        for out in job.stdout:
            seen.append(out)
            if line in out:
                os.kill(python_driver(job.pid), signal.SIGTERM)
                break
        seen += job.stdout.readlines()
        return job.wait(timeout=300), "".join(seen)


def test_nights_through_spark_submit_promote_survive_sigterm_and_reject(spark, tmp_path):
    """Night 1 is promoted; night 2 is stopped by SIGTERM while registering (the scheduler's kill), which
    changes nothing a reader or the registry sees, and its retry is promoted; night 3 is rejected."""
    spec = SyntheticSpec(n_users=200, n_items=200, n_interactions=3000, n_clusters=3, min_user_interactions=12,
                         seed=5)
    rows = interactions_frame(spark, spec).cache()
    for date in ("2026-11-21", "2026-11-22", "2026-11-23"):
        rows.write.parquet(f"{tmp_path}/snapshots/{date}/interactions")
    rows.unpersist()

    first = night(tmp_path, "2026-11-21")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    pointer = (tmp_path / "nightly" / "_CURRENT").read_text().strip()
    assert pointer.startswith("runs/2026-11-21/")

    code, output = night_terminated_at(tmp_path, "2026-11-22", "stage register: started")
    assert code == 143, output[-3000:]  # README: 143 = stopped by SIGTERM
    assert "job stopped by SIGTERM (exit 143)" in output and "Traceback" not in output
    assert (tmp_path / "nightly" / "_CURRENT").read_text().strip() == pointer
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        client = MlflowClient()
        assert client.get_model_version_by_alias(NAME, "champion").tags["nightly.date"] == "2026-11-21"
        experiment = client.get_experiment_by_name("recspark-nightly").experiment_id
        (killed,) = client.search_runs([experiment], "attributes.run_name LIKE 'nightly warp%2026-11-22'")
        assert killed.info.status == "KILLED"
        assert killed.data.tags["recspark.outcome"] == "killed"
        assert killed.data.tags["recspark.failed_stage"] == "register"
        snapshot = pd.read_parquet(tmp_path / "snapshots" / "2026-11-22" / "interactions")
        assert killed.data.metrics["rows_read"] == len(snapshot) and "time_recommend_s" in killed.data.metrics

        # The scheduler retries the date: promoted (tolerance 1 promotes any candidate), the killed
        # attempt's folder is replaced.
        retry = night(tmp_path, "2026-11-22", "promotion.tolerance=1")
        assert retry.returncode == 0, (retry.stdout + retry.stderr)[-3000:]
        pointer = (tmp_path / "nightly" / "_CURRENT").read_text().strip()
        assert pointer.startswith("runs/2026-11-22/") and killed.info.run_id not in pointer
        assert not (tmp_path / "nightly" / "runs" / "2026-11-22" / killed.info.run_id).exists()

        # Tolerance -1: the candidate must beat the champion by a whole p@5 point, so it is rejected.
        third = night(tmp_path, "2026-11-23", "promotion.tolerance=-1")
        assert third.returncode == 5, (third.stdout + third.stderr)[-3000:]
        assert (tmp_path / "nightly" / "_CURRENT").read_text().strip() == pointer

        champion = client.get_model_version_by_alias(NAME, "champion")
        assert champion.tags["nightly.date"] == "2026-11-22"
        versions = [v.tags for v in client.search_model_versions(f"name = '{NAME}'")]
        assert any(tags.get("nightly.date") == "2026-11-23" and "rejected" in tags for tags in versions)
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
        user = snapshot["user_id"].iloc[0]
        recs = model.predict(pd.DataFrame({"user_id": [user]}), params={"k": 3})
        assert list(recs["rank"]) == [1, 2, 3] and set(recs["source"]) == {"model"}
    finally:
        mlflow.set_tracking_uri(None)
