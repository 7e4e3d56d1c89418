"""Session settings that are only checked, not started (no Spark needed)."""

from __future__ import annotations

import doctest

import recspark.session
from recspark.session import checkpoint_dir_problem


def test_a_local_checkpoint_dir_is_flagged_only_for_multi_host_masters():
    assert checkpoint_dir_problem("local[2]", "checkpoints") is None
    assert checkpoint_dir_problem("local-cluster[1,2,1024]", "/tmp/ck") is None
    assert checkpoint_dir_problem("yarn", "hdfs:///user/me/checkpoints") is None
    problem = checkpoint_dir_problem("yarn", "checkpoints")
    assert "spark.checkpoint_dir 'checkpoints'" in problem and "yarn" in problem


def test_docstring_examples():
    assert doctest.testmod(recspark.session).failed == 0


def test_a_launch_setting_warns_only_when_the_running_driver_differs():
    """The demo's spark.driver.memory: 4g is what run.sh passes as --driver-memory 4g: no warning for it."""
    from recspark.session import launch_only_mismatches

    running = {"spark.driver.memory": "4g"}.get
    assert launch_only_mismatches({"spark.driver.memory": "4g"}, running) == []
    assert launch_only_mismatches({"spark.driver.memory": "4096m"}, running) == []
    assert launch_only_mismatches({"spark.driver.memory": "8g"}, running) == [("spark.driver.memory", "8g", "4g")]
    assert launch_only_mismatches({"spark.driver.memory": "1g"}, {}.get) == []  # spark-submit's default
    assert launch_only_mismatches({"spark.driver.extraJavaOptions": "-Dx=1"}, {}.get) == [
        ("spark.driver.extraJavaOptions", "-Dx=1", None)]
    assert launch_only_mismatches({"spark.sql.shuffle.partitions": "8"}, {}.get) == []


def test_spark_submit_sh_binds_local_masters_to_loopback(tmp_path):
    """As run.sh does: SPARK_LOCAL_IP=127.0.0.1 for local masters (and spark-submit's default), not for clusters."""
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    fake = tmp_path / "spark" / "bin"
    fake.mkdir(parents=True)
    (fake / "spark-submit").write_text('#!/bin/sh\necho "SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-unset}"\n')
    (fake / "spark-submit").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SPARK_LOCAL_IP"}
    env.update(SPARK_HOME=str(tmp_path / "spark"), RECSPARK_SKIP_CONFIG_CHECK="1")

    def submit(*opts: str) -> str:
        out = subprocess.run([str(repo / "spark-submit.sh"), *opts, "jobs/train.py"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip().splitlines()[-1]

    assert submit("--master", "local[2]") == "SPARK_LOCAL_IP=127.0.0.1"
    assert submit() == "SPARK_LOCAL_IP=127.0.0.1"
    assert submit("--master=local[*]") == "SPARK_LOCAL_IP=127.0.0.1"
    assert submit("--master", "spark://10.0.0.5:7077") == "SPARK_LOCAL_IP=unset"
    assert submit("--master", "yarn", "--deploy-mode", "client") == "SPARK_LOCAL_IP=unset"
