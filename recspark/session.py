"""The only place a SparkSession is built, so every job and test gets the same settings."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from pyspark.sql import SparkSession

from recspark.redact import redact

log = logging.getLogger(__name__)

# Arrow makes toPandas/mapInPandas cheap; adaptive execution keeps small stages small.
_DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
}


#: Settings read when the driver JVM starts: from a config they only apply to plain ``python`` runs.
_LAUNCH_ONLY = ("spark.driver.memory", "spark.driver.extraJavaOptions", "spark.driver.extraClassPath")


def checkpoint_dir_problem(master: str, checkpoint_dir: str) -> str | None:
    """Why ``checkpoint_dir`` is unsafe for ``master``, or None.

    Checkpoints are written by the executors and read back by whichever
    executor recomputes a partition: a plain local path only works when all
    executors share one disk (``local`` modes). On a multi-host cluster each
    executor would write to its own disk and a retried task could not read them.

    >>> checkpoint_dir_problem("local[*]", "checkpoints") is None, checkpoint_dir_problem("yarn", "hdfs:///ck") is None
    (True, True)
    >>> "shared" in checkpoint_dir_problem("spark://10.0.0.1:7077", "checkpoints")
    True
    """
    if master.startswith("local") or "://" in checkpoint_dir:
        return None
    return (f"spark.checkpoint_dir {checkpoint_dir!r} is a local path but the master is {master}: on a multi-host "
            "cluster every executor would checkpoint to its own disk. Set spark.checkpoint_dir to a shared "
            "location (hdfs://..., s3a://..., or file:///a/shared/mount).")


def build_session(
    master: str | None = None,
    app_name: str = "recspark",
    conf: Mapping[str, str] | None = None,
    checkpoint_dir: str | None = None,
) -> SparkSession:
    """Build (or reuse) the SparkSession.

    ``master`` applies to plain ``python`` runs; under spark-submit its ``--master`` decides;
    ``checkpoint_dir`` is set so long ALS/WARP fits can truncate lineage.
    """
    # Executors must run the same interpreter as the driver (the project's venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    # Under spark-submit (which starts Python with a gateway port) its --master decides: the
    # config's master is for plain `python` runs, and conf/demo.yaml's local[*] must not pull a
    # cluster submission back to local mode.
    if master and "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master)
    elif master:
        log.info("spark-submit sets the master; spark.master=%s from the config is not used", master)
    for key, value in {**_DEFAULTS, **(conf or {})}.items():
        if key in _LAUNCH_ONLY and "PYSPARK_GATEWAY_PORT" in os.environ:
            log.warning("spark.conf %s=%s has no effect under spark-submit (the driver JVM is already "
                        "running); pass it to spark-submit instead (e.g. --driver-memory)", key, redact(value, key))
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if checkpoint_dir:
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
        problem = checkpoint_dir_problem(spark.sparkContext.master, checkpoint_dir)
        if problem:
            log.warning("%s", problem)
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark
