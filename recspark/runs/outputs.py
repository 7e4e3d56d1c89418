"""All-or-nothing job outputs: a run writes into a staging directory and commits it by rename.

A nightly job killed halfway and rerun must never leave readers a mix of
yesterday's and today's files (new ALS recommendations next to old WARP
ones). So a run writes everything under ``<out>.staging`` and, only when it
has succeeded, swaps directories:

1. ``<out>`` -> ``<out>.previous`` (if there is a previous output),
2. ``<out>.staging`` -> ``<out>``,
3. delete ``<out>.previous`` (its marker last: :func:`delete_output`).

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

A job only ever replaces what it wrote itself. Every published output holds a
``_RECSPARK_OUTPUT`` marker (the MLflow run id and the list of files the run
wrote); :func:`guard_output` refuses, before any work starts, to use a folder
that exists without the marker, that holds a file no recspark run wrote, or
that contains something precious (the input, the MLflow store, the checkpoint
dir, the working directory, a home directory, ``/``).

Paths go through Hadoop's ``FileSystem`` API (:mod:`recspark.data.fs`), so
they work for any URI Spark can write (``file:``, ``hdfs:``).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import mlflow
from pyspark.sql import SparkSession

from recspark.data import fs
from recspark.errors import ConfigError
from recspark.runs.timing import StageTimer
from recspark.tracking.mlflow_log import log_dict_artifact, log_metrics, resolve_tracking_uri

log = logging.getLogger(__name__)


MARKER = "_RECSPARK_OUTPUT"


def _local_path(path: str) -> str | None:
    """The absolute local path of ``path`` (no scheme or ``file:``), None for other filesystems."""
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        return os.path.realpath(os.path.abspath(parsed.path if parsed.scheme else path))
    return None


def _contains(outer: str, inner: str) -> bool:
    """True when ``inner`` is ``outer`` or lies below it (paths as :func:`_key` returns them)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _key(path: str) -> str:
    local = _local_path(path)
    return local if local is not None else path.rstrip("/")


def store_path(tracking_uri: str | None) -> str | None:
    """The local file or folder an MLflow tracking URI stores runs in (sqlite file, file store), else None."""
    if not tracking_uri:
        return None
    if tracking_uri.startswith("sqlite:///"):
        return tracking_uri[len("sqlite:///"):] or None
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("", "file"):
        return tracking_uri
    return None


def _precious() -> dict[str, str]:
    """Folders no job may replace wherever they are: ``/``, the working directory, home directories."""
    found = {"/": "/", "the working directory": os.getcwd()}
    homes = {os.path.expanduser("~")}
    try:
        homes.update(entry.pw_dir for entry in pwd.getpwall()
                     if entry.pw_dir == "/root" or entry.pw_dir.startswith("/home/"))
    except OSError:  # no passwd database: the current user's home is still checked
        pass
    for home in sorted(homes):
        found[f"the home directory {home}"] = home
    return found


def protected_paths(conf: Any) -> dict[str, str | None]:
    """What a job's config reads or keeps elsewhere, by setting name: its output must contain none of it."""
    found: dict[str, str | None] = {}
    data = getattr(conf, "data", None)
    if data is not None:
        found["data.path"] = data.path.split("{date}", 1)[0] if "{date}" in data.path else data.path
    features = getattr(conf, "features", None)
    for side in ("items", "users"):
        for i, source in enumerate(getattr(getattr(features, side, None), "sources", None) or []):
            found[f"features.{side}.sources.{i}.path"] = source.path
    source = getattr(conf, "source", None)
    if source is not None:
        found["source.run_dir"] = source.run_dir
    tracking = getattr(conf, "mlflow", None)
    if tracking is not None:
        found["the MLflow store"] = store_path(resolve_tracking_uri(tracking))
        found["mlflow.artifact_location"] = tracking.artifact_location
    spark_conf = getattr(conf, "spark", None)
    if spark_conf is not None:
        found["spark.checkpoint_dir"] = spark_conf.checkpoint_dir
    return found


def _refuse_precious(path: str, setting: str, protected: Mapping[str, str | None]) -> None:
    out = _key(path)
    for name, other in {**_precious(), **{k: v for k, v in protected.items() if v}}.items():
        if _contains(out, _key(other)):
            raise ConfigError(f"{setting}={path} contains {name} ({other}); a job replaces or writes into its "
                              f"output folder, so choose a folder of its own, e.g. {path.rstrip('/')}/recspark")


def guard_output(spark: SparkSession, path: str, setting: str, protected: Mapping[str, str | None]) -> None:
    """Refuse (ConfigError, exit 2) to use ``path`` unless a recspark run may replace it.

    ``protected`` names paths the output must not contain (``{"data.path": ...}``); ``/``, the
    working directory and home directories are always protected. An existing non-empty ``path``
    must hold :data:`MARKER`, and every file in it must be one the marker lists.
    """
    _refuse_precious(path, setting, protected)
    if fs.is_empty_dir(spark, path):
        return
    marker = f"{path.rstrip('/')}/{MARKER}"
    if not fs.exists(spark, marker):
        raise ConfigError(f"{setting}={path} already exists and was not written by recspark (no {MARKER} in it); "
                          "refusing to replace it: choose a new or empty folder")
    listed = fs.list_files(spark, path)
    written: set[str] = set()
    for name in listed:  # the folder's own marker, and those of outputs published inside it (products/)
        if name == MARKER or name.endswith(f"/{MARKER}"):
            prefix = name[: -len(MARKER)]
            try:
                body = json.loads(fs.read_text(spark, f"{path.rstrip('/')}/{name}"))
                written.update(prefix + f for f in body["files"])
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"{setting}={path}: {name} is not a recspark marker ({err}); refusing to "
                                  "replace the folder") from err
    foreign = [name for name in listed if name not in written and not name.endswith(MARKER)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"{setting}={path} holds files no recspark run wrote ({shown}); refusing to replace "
                          "the folder: move them out first")


def write_marker(spark: SparkSession, path: str, job: str) -> None:
    """Mark ``path`` as a recspark output: the run id, the time and every file it holds now."""
    run = mlflow.active_run()
    files = [name for name in fs.list_files(spark, path) if name != MARKER]
    body = {"job": job, "run_id": run.info.run_id if run else None,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
    fs.write_text(spark, f"{path.rstrip('/')}/{MARKER}", json.dumps(body, indent=1))


def claim_root(spark: SparkSession, path: str, setting: str, protected: Mapping[str, str | None],
               job: str) -> None:
    """Check a folder a job keeps adding to (the nightly's root) is recspark's, marking it when new.

    The job never replaces the root itself, only folders it created inside it, so a root with
    the marker is enough; one that exists without it is refused like :func:`guard_output`.
    """
    _refuse_precious(path, setting, protected)
    if fs.exists(spark, f"{path.rstrip('/')}/{MARKER}"):
        return
    if not fs.is_empty_dir(spark, path):
        raise ConfigError(f"{setting}={path} already exists and was not written by recspark (no {MARKER} in it); "
                          "refusing to write into it: choose a new or empty folder")
    write_marker(spark, path, job)


def delete_output(spark: SparkSession, path: str) -> None:
    """Delete an output folder of ours, its marker last.

    A recursive delete removes entries in directory order, so a run killed
    while deleting would often leave a remainder without the marker, which
    every later run must refuse to touch (exit 2 until someone cleans up by
    hand). Cut short at any point here, the folder still holds its marker, or
    is empty, and the next :meth:`StagedOutput.recover` finishes the job.
    """
    for name in fs.list_dir(spark, path):
        if name != MARKER:
            fs.delete(spark, f"{path}/{name}")
    fs.delete(spark, f"{path}/{MARKER}")  # a file: Hadoop deletes its checksum first, then the marker
    fs.delete(spark, path)


class StagedOutput:
    """The staging directory of one run's output and the commit that publishes it.

    ``setting`` names the config key the folder came from (for error messages); ``protected``
    the paths it must not contain (see :func:`guard_output`).
    """

    def __init__(self, spark: SparkSession, final_dir: str, *, setting: str = "output.dir",
                 protected: Mapping[str, str | None] | None = None, job: str = "train") -> None:
        self.spark = spark
        self.final = final_dir.rstrip("/") or "/"
        self.staging = f"{self.final}.staging"
        self.previous = f"{self.final}.previous"
        self.setting, self.job = setting, job
        self.protected = dict(protected or {})

    def recover(self) -> None:
        """Check the output may be replaced, then repair what a killed run left behind.

        Raises ConfigError (before any work) when the folder, or a leftover staging/previous
        folder, is not one a recspark run wrote.
        """
        guard_output(self.spark, self.final, self.setting, self.protected)
        for leftover in (self.previous, self.staging):
            if not fs.is_empty_dir(self.spark, leftover) and not fs.exists(self.spark, f"{leftover}/{MARKER}"):
                raise ConfigError(f"{leftover} exists and was not written by recspark (no {MARKER}); it is where "
                                  f"{self.setting}={self.final} is staged: move it away first")
        if not fs.exists(self.spark, self.final) and fs.exists(self.spark, self.previous):
            log.warning("a previous run was killed while publishing; restoring %s", self.previous)
            fs.rename(self.spark, self.previous, self.final)
        for leftover in (self.previous, self.staging):
            if fs.exists(self.spark, leftover):
                log.warning("deleting %s left by a run that did not finish", leftover)
                delete_output(self.spark, leftover)
        write_marker(self.spark, self.staging, self.job)  # a staging folder killed mid-run is ours to delete

    def commit(self) -> None:
        """Publish the staging directory as the output (the old output is replaced, never mixed in)."""
        if not fs.exists(self.spark, self.staging):
            raise OSError(f"nothing to publish: {self.staging} does not exist; the output is left as it was")
        guard_output(self.spark, self.final, self.setting, self.protected)  # nothing placed there meanwhile
        write_marker(self.spark, self.staging, self.job)
        if fs.exists(self.spark, self.final):
            fs.rename(self.spark, self.final, self.previous)
        fs.rename(self.spark, self.staging, self.final)
        if fs.exists(self.spark, self.previous):
            delete_output(self.spark, self.previous)
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
