"""Jobs map failures to documented exit codes (a scheduler alerts on them), through spark-submit.sh."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.spark, pytest.mark.e2e]


def submit(tmp: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [str(REPO / "spark-submit.sh"), "--master", "local[1]", str(REPO / "jobs" / "train.py"),
            "--conf", str(REPO / "conf" / "demo.yaml"), "--set", f"output.dir={tmp}/out",
            "--set", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
            "--set", f"mlflow.artifact_location={tmp}/mlruns", "--set", "spark.conf.spark.driver.memory=1g"]
    for item in sets:
        args += ["--set", item]
    env = {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": sys.executable}
    return subprocess.run(args, cwd=tmp, capture_output=True, text=True, timeout=600, env=env)


def test_missing_input_exits_3_naming_the_path(tmp_path):
    result = submit(tmp_path, "data.generate=null", f"data.path={tmp_path}/nowhere")
    assert result.returncode == 3
    assert f"{tmp_path}/nowhere" in result.stdout + result.stderr


def test_too_many_rejects_exit_3_and_rejects_are_kept(tmp_path):
    rows = pd.DataFrame({"user_id": ["u1", None, None, "u2"], "item_id": ["i1", "i2", "i3", "i4"],
                         "weight": [1.0, 1.0, 1.0, -2.0], "timestamp": pd.to_datetime(["2024-01-01"] * 4)})
    rows.to_parquet(tmp_path / "bad.parquet", index=False, coerce_timestamps="us")  # Spark reads us, not ns
    result = submit(tmp_path, "data.generate=null", f"data.path={tmp_path}/bad.parquet")
    output = result.stdout + result.stderr
    assert result.returncode == 3
    assert "data.max_reject_fraction" in output
    # A failed run publishes nothing; its rejects stay in the staging directory the message names.
    assert not (tmp_path / "out").exists()
    assert f"{tmp_path}/out.staging/rejects" in output
    assert "this run failed, so its output is not published" in output
    rejects = pd.read_parquet(tmp_path / "out.staging" / "rejects")
    assert sorted(rejects["reason"]) == ["missing_user_id", "missing_user_id", "negative_weight"]
    # The MLflow run says what happened: FAILED in ingest, with the counts and reasons it got to.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("recspark-demo").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["recspark.outcome"] == "failed" and run.data.tags["recspark.failed_stage"] == "ingest"
    assert "max_reject_fraction" in run.data.tags["recspark.error"]
    metrics = run.data.metrics
    assert (metrics["rows_read"], metrics["rows_rejected"]) == (4, 3)
    assert (metrics["rejects_missing_user_id"], metrics["rejects_negative_weight"]) == (2, 1)
    summary = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/data/rejects_summary.json")
    assert summary["counts"]["missing_user_id"] == 2 and summary["rows_read"] == 4


def test_generate_job_writes_interactions_and_tags(tmp_path):
    env = {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": sys.executable}
    result = subprocess.run(
        [str(REPO / "spark-submit.sh"), "--master", "local[1]", str(REPO / "jobs" / "generate_data.py"),
         "--conf", str(REPO / "conf" / "generate.yaml"), "--set", f"output={tmp_path}/gen",
         "--set", "synthetic.n_users=500", "--set", "synthetic.n_items=1000", "--set", "synthetic.n_interactions=10000"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    interactions = pd.read_parquet(tmp_path / "gen" / "interactions")
    tags = pd.read_parquet(tmp_path / "gen" / "item_tags")
    assert 9000 <= len(interactions) <= 10000
    assert set(tags["item_id"]) <= set(interactions["item_id"]) | set(tags["item_id"])
    assert {"user_id", "item_id", "weight", "timestamp"} <= set(interactions.columns)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_refuses_a_users_folder_and_keeps_it_byte_identical(tmp_path):
    """conf/demo.yaml has data.generate: pointed at a user's pandas-written Parquet it must not replace it."""
    mine = tmp_path / "mine" / "interactions"
    mine.mkdir(parents=True)
    pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "weight": [1.0, 2.0]}).to_parquet(
        mine / "part.parquet", index=False)
    before = tree_bytes(tmp_path / "mine")
    result = submit(tmp_path, f"data.path={mine}")
    assert result.returncode == 2, (result.stdout + result.stderr)[-2000:]
    output = result.stdout + result.stderr
    assert "data.generate" in output and str(mine) in output
    assert tree_bytes(tmp_path / "mine") == before


def test_output_dir_holding_the_input_and_notes_is_refused_and_kept(tmp_path):
    folder = tmp_path / "project"
    (folder / "interactions").mkdir(parents=True)
    pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "weight": [1.0]}).to_parquet(
        folder / "interactions" / "part.parquet", index=False)
    (folder / "notes.txt").write_text("my notes")
    before = tree_bytes(folder)
    result = submit(tmp_path, "data.generate=null", f"data.path={folder}/interactions", f"output.dir={folder}")
    assert result.returncode == 2, (result.stdout + result.stderr)[-2000:]
    output = result.stdout + result.stderr
    assert f"output.dir={folder} contains data.path" in output
    assert "Traceback" not in output
    assert tree_bytes(folder) == before


def test_a_readme_in_the_input_folder_exits_3_naming_it(tmp_path):
    (tmp_path / "in").mkdir()
    pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "weight": [1.0], "timestamp": pd.to_datetime(["2024-01-01"])}) \
        .to_parquet(tmp_path / "in" / "part-0.parquet", index=False, coerce_timestamps="us")
    (tmp_path / "in" / "README.md").write_text("exported nightly by the warehouse\n")
    result = submit(tmp_path, "data.generate=null", f"data.path={tmp_path}/in")
    output = result.stdout + result.stderr
    assert result.returncode == 3, output[-3000:]
    assert "README.md" in output and "not Parquet" in output
    assert "Traceback" not in output
    # conf/log4j2.properties: the failed task's Java trace and start-up noise stay off the console, in the
    # Spark log that spark-submit.sh names.
    assert "\tat org.apache.spark" not in output and "Lost task" not in output, output[-3000:]
    assert "NativeCodeLoader" not in output
    spark_log = Path(re.search(r"Spark's log: (\S+)", output).group(1))
    assert "Lost task" in spark_log.read_text() or "Exception in task" in spark_log.read_text()


def test_a_diverging_warp_fit_exits_4_naming_the_learning_rate(tmp_path):
    """The kernel raises ModelFitError inside a Spark task; the job still exits 4, not 1."""
    result = submit(tmp_path, "data.generate.n_users=2000", "data.generate.n_items=400",
                    "data.generate.n_interactions=40000", "als.enabled=false",
                    "warp.learning_rate=1e30", "warp.epochs=2", "warp.eval_every=0", "warp.train_metrics=false",
                    "features.items.sources=[]", "features.users.sources=[]")
    output = result.stdout + result.stderr
    assert result.returncode == 4, output[-3000:]
    assert "model fit failed" in output and "learning_rate" in output


def test_an_unexpected_error_exits_1_with_one_paragraph_and_the_traceback_in_a_file(tmp_path):
    result = submit(tmp_path, "mlflow.tracking_uri=nosuchscheme://host/db")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    line = next(x for x in output.splitlines() if "job failed (unexpected error, exit 1)" in x)
    kept = Path(line.split("The traceback is in ")[1].split(" (or run with")[0])
    assert "Traceback (most recent call last)" in kept.read_text()
    assert "Traceback (most recent call last)" not in output
