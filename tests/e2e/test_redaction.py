"""Issue 13: a credential in the job config reaches Spark but no MLflow store, output, log or console line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SECRET = "SECRETVALUE123"
PASSWORD = "PASSWORD456"

pytestmark = [pytest.mark.e2e, pytest.mark.spark]


def test_train_job_logs_no_credential_anywhere(tmp_path_factory):
    """The training job through ./spark-submit.sh with an S3 secret key and a URI password in spark.conf.

    Also the wrapper's plain success path, as a user runs it: the zipped package, exit 0, the
    summary printed, every output published.

    The URI rides in a harmless spark.conf key (the tracking URI itself must stay a working sqlite
    store); tests/unit/test_redact.py covers the tracking URI's own redaction.
    """
    run = tmp_path_factory.mktemp("run")
    conf_dir = tmp_path_factory.mktemp("conf")  # the user's own file holds the secret: not searched
    conf = yaml.safe_load((REPO / "conf" / "demo.yaml").read_text())
    conf["spark"]["conf"].update({"spark.hadoop.fs.s3a.secret.key": SECRET,
                                  "spark.recspark.test.endpoint": f"https://bob:{PASSWORD}@example.com/api"})
    conf_path = conf_dir / "secret.yaml"
    conf_path.write_text(yaml.safe_dump(conf))
    overrides = [
        f"data.path={run}/data/interactions", "data.generate.n_users=1500", "data.generate.n_items=300",
        "data.generate.n_interactions=15000", f"output.dir={run}/out", f"mlflow.tracking_uri=sqlite:///{run}/mlflow.db",
        f"mlflow.artifact_location={run}/mlruns", "mlflow.experiment=e2e-redaction", "als.max_iter=2",
        "als.learning_curve=[]", "warp.epochs=2", "warp.eval_every=0", "features.users.sources=[]",
        f"features.items.sources=[{{path: {run}/data/item_tags, group: tag}}]"]
    result = subprocess.run(
        [str(REPO / "spark-submit.sh"), "--master", "local[2]", str(REPO / "jobs" / "train.py"),
         "--conf", str(conf_path), *(x for o in overrides for x in ("--set", o))],
        cwd=run, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recspark run summary" in result.stdout
    assert all((run / "out" / "recommendations" / m / "_SUCCESS").exists() for m in ("als", "warp"))
    stores = [run / "mlflow.db", run / "mlruns" / "", run / "out" / ""]
    assert all(p.exists() for p in stores), stores
    resolved = list((run / "mlruns").rglob("resolved.yaml"))
    assert resolved and "spark.hadoop.fs.s3a.secret.key: '***redacted***'" in resolved[0].read_text()
    for secret in (SECRET.encode(), PASSWORD.encode()):
        assert secret not in (result.stdout + result.stderr).encode()
        hits = [p for p in run.rglob("*") if p.is_file() and secret in p.read_bytes()]
        assert not hits, (secret, hits)  # the sqlite db, the artifacts, the outputs, checkpoints, Spark dirs
