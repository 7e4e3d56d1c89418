"""The only place a SparkSession is built, so every job and test gets the same settings."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping

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
_LAUNCH_DEFAULTS = {"spark.driver.memory": "1g"}  # what the JVM got when spark-submit was not told


def launch_only_mismatches(settings: Mapping[str, str],
                           running: Callable[[str], str | None]) -> list[tuple[str, str, str | None]]:
    """``(key, wanted, running value)`` for launch-time settings the started driver JVM does not have.

    ``spark.driver.memory: 4g`` in a config is what ``./run.sh demo`` also
    passes as ``--driver-memory 4g``: only a value that differs is worth a warning.
    Memory sizes compare by value (``4g`` is ``4096m``).
    """
    found = []
    for key in _LAUNCH_ONLY:
        if key in settings:
            wanted, actual = str(settings[key]), running(key) or _LAUNCH_DEFAULTS.get(key)
            same = _bytes(wanted) == _bytes(actual) if key == "spark.driver.memory" else wanted == actual
            if not same:
                found.append((key, wanted, actual))
    return found


def _bytes(size: str | None) -> int | None:
    """``4g`` -> 4 GiB, as Spark reads a JVM memory size (a bare number is MiB); None if unreadable."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)b?\s*", (size or "").lower())
    if not match:
        return None
    unit = {"k": 1 << 10, "": 1 << 20, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2)]
    return int(match.group(1)) * unit


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
    settings = {**_DEFAULTS, **(conf or {})}
    for key, value in settings.items():
        builder = builder.config(key, str(value))
    spark = builder.getOrCreate()
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        running = spark.sparkContext.getConf()
        for key, wanted, actual in launch_only_mismatches(settings, lambda k: running.get(k, None)):
            log.warning("spark.conf %s=%s has no effect under spark-submit (the driver JVM is already running "
                        "with %s); pass it to spark-submit instead (e.g. --driver-memory)", key,
                        redact(wanted, key), redact(actual or "its default", key))
    spark.sparkContext.setLogLevel("WARN")
    if checkpoint_dir:
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
        problem = checkpoint_dir_problem(spark.sparkContext.master, checkpoint_dir)
        if problem:
            log.warning("%s", problem)
    log.info("Spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark


@contextlib.contextmanager
def job_description(spark: SparkSession, text: str) -> Iterator[None]:
    """Spark jobs started inside are described as ``text`` in the Spark UI and the history server.

    So the UI reads as the pipeline (``ingest``, ``threshold pass 2``, ``warp
    epoch 3/10``) instead of ``count at NativeMethodAccessorImpl.java:0``. The
    outer description comes back on exit, so stages nest. Spark keeps it per
    thread (search trials in threads keep their own).
    """
    sc = spark.sparkContext
    outer = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(text)
    try:
        yield
    except BaseException:
        # The error in flight matters more than the label: after SIGTERM cut a JVM call short,
        # the gateway cannot be trusted to answer, and its error must not replace the real one.
        with contextlib.suppress(Exception):
            sc.setJobDescription(outer)  # type: ignore[arg-type]
        raise
    sc.setJobDescription(outer)  # type: ignore[arg-type]  (None clears it)
