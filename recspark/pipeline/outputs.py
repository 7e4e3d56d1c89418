"""All-or-nothing job outputs: a run writes into a staging directory and commits it by rename.

A nightly job killed halfway and rerun must never leave readers a mix of
yesterday's and today's files (new ALS recommendations next to old WARP
ones). So a run writes everything under ``<out>.staging`` and, only when it
has succeeded, swaps directories:

1. ``<out>`` -> ``<out>.previous`` (if there is a previous output),
2. ``<out>.staging`` -> ``<out>``,
3. delete ``<out>.previous``.

Directory renames are atomic on local filesystems and HDFS, so ``<out>`` is
always either the complete old output or the complete new one. A run killed
at any point is repaired by the next run's :meth:`StagedOutput.recover`: a
leftover staging directory is deleted; a missing ``<out>`` with a
``<out>.previous`` (killed between steps 1 and 2) gets the previous output
back. A failed run's staging directory stays until the next run starts, so
its rejects and partial outputs can be inspected (error messages name it).
Object stores (S3, GCS) have no atomic rename: there, point ``output.dir``
at a path whose readers tolerate the swap, or use a committer.

Only one run may write a given output directory at a time.

Paths go through Hadoop's ``FileSystem`` API (:mod:`recspark.data.fs`), so
they work for any URI Spark can write (``file:``, ``hdfs:``).
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession

from recspark.data import fs
from recspark.pipeline.timing import StageTimer
from recspark.tracking.mlflow_log import log_dict_artifact, log_metrics

log = logging.getLogger(__name__)


class StagedOutput:
    """The staging directory of one run's output and the commit that publishes it."""

    def __init__(self, spark: SparkSession, final_dir: str) -> None:
        self.spark = spark
        self.final = final_dir.rstrip("/")
        self.staging = f"{self.final}.staging"
        self.previous = f"{self.final}.previous"

    def recover(self) -> None:
        """Repair what a killed run left behind; the output is then the last committed one."""
        if not fs.exists(self.spark, self.final) and fs.exists(self.spark, self.previous):
            log.warning("a previous run was killed while publishing; restoring %s", self.previous)
            fs.rename(self.spark, self.previous, self.final)
        for leftover in (self.previous, self.staging):
            if fs.exists(self.spark, leftover):
                log.warning("deleting %s left by a run that did not finish", leftover)
                fs.delete(self.spark, leftover)

    def commit(self) -> None:
        """Publish the staging directory as the output (the old output is replaced, never mixed in)."""
        if not fs.exists(self.spark, self.staging):
            raise OSError(f"nothing to publish: {self.staging} does not exist; the output is left as it was")
        if fs.exists(self.spark, self.final):
            fs.rename(self.spark, self.final, self.previous)
        fs.rename(self.spark, self.staging, self.final)
        if fs.exists(self.spark, self.previous):
            fs.delete(self.spark, self.previous)
        log.info("published %s", self.final)

    def publish(self, summary: Any, timer: StageTimer) -> None:
        """End a job: commit, point ``summary`` (``out_dir``, ``outputs``) at the published paths, log timings.

        ``summary`` is a job's summary dataclass; its stage timings and the
        final ``outputs.json`` go to the active MLflow run.
        """
        self.commit()
        summary.out_dir = self.final
        summary.outputs = self.published(summary.outputs)
        summary.timings = timer.seconds
        log_metrics(timer.metrics())
        log_dict_artifact(summary.outputs, "outputs.json")

    def published(self, value: Any) -> Any:
        """``value`` with staging paths rewritten to where they are after :meth:`commit` (str or dict)."""
        if isinstance(value, dict):
            return {key: self.published(v) for key, v in value.items()}
        if isinstance(value, str) and value.startswith(self.staging):
            return self.final + value[len(self.staging):]
        return value
