"""Atomic publishing of a nightly run: a ``_CURRENT`` pointer file switched by rename.

Readers find the live recommendations through one small file::

    <root>/_CURRENT                       -> "runs/2026-11-22/<mlflow run id>"
    <root>/runs/2026-11-22/<run id>/recommendations/   user_id, rank, item_id, score

Every attempt writes into a folder of its own, so nothing a reader can see is
ever modified. Publishing is one rename: the new pointer is written to a
temporary file next to ``_CURRENT`` and renamed over it (Hadoop
``FileContext.rename`` with ``OVERWRITE``: atomic on local disks and HDFS), so
a reader sees the old pointer or the new one, never a half-written file. A
run that fails, is killed or is rejected before the switch leaves the old
pointer, and the folder it points to, untouched.
"""

from __future__ import annotations

import logging
import uuid

from pyspark.sql import SparkSession

from recspark.data import fs

log = logging.getLogger(__name__)

POINTER = "_CURRENT"


def read_pointer(spark: SparkSession, root: str) -> str | None:
    """The published run folder (absolute, under ``root``), or None before the first publish."""
    path = f"{root.rstrip('/')}/{POINTER}"
    if not fs.exists(spark, path):
        return None
    return f"{root.rstrip('/')}/{fs.read_text(spark, path).strip()}"


def switch_pointer(spark: SparkSession, root: str, run_dir: str) -> None:
    """Point ``<root>/_CURRENT`` at ``run_dir`` (a folder under ``root``) in one atomic rename."""
    root = root.rstrip("/")
    if not run_dir.startswith(f"{root}/"):
        raise ValueError(f"switch_pointer: {run_dir!r} is not under {root!r}")
    tmp = f"{root}/.{POINTER}.{uuid.uuid4().hex}.tmp"
    fs.write_text(spark, tmp, run_dir[len(root) + 1:] + "\n")
    jvm = spark.sparkContext._jvm
    hadoop = jvm.org.apache.hadoop.fs
    src, dst = hadoop.Path(tmp), hadoop.Path(f"{root}/{POINTER}")
    context = hadoop.FileContext.getFileContext(dst.toUri(), spark.sparkContext._jsc.hadoopConfiguration())
    options = spark.sparkContext._gateway.new_array(hadoop.Options.Rename, 1)
    options[0] = hadoop.Options.Rename.OVERWRITE
    try:
        context.rename(src, dst, options)
    finally:
        fs.delete(spark, tmp)  # only left when the rename failed
    for name in fs.list_dir(spark, root):  # those of runs killed before their rename (one publish at a time)
        if name.startswith(f".{POINTER}.") and name.endswith(".tmp"):
            fs.delete(spark, f"{root}/{name}")
    log.info("published %s (%s/%s)", run_dir, root, POINTER)


def run_dir(root: str, date: str, attempt: str) -> str:
    """The folder of one attempt at ``date`` (``attempt``: its MLflow run id)."""
    return f"{root.rstrip('/')}/runs/{date}/{attempt}"


def remove_stale_attempts(spark: SparkSession, root: str, date: str, keep: set[str | None]) -> None:
    """Delete the folders of earlier attempts at ``date`` except ``keep`` (the pointer's and the champion's)."""
    day = run_dir(root, date, "").rstrip("/")
    if not fs.exists(spark, day):
        return
    hadoop = spark.sparkContext._jvm.org.apache.hadoop.fs
    path = hadoop.Path(day)
    for status in path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).listStatus(path):
        attempt = run_dir(root, date, status.getPath().getName())
        if attempt not in keep:
            log.info("deleting %s (an earlier attempt at %s)", attempt, date)
            fs.delete(spark, attempt)
