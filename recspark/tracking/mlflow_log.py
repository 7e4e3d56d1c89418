"""Everything recspark writes to MLflow, in one place.

One MLflow run per pipeline execution. The run holds the resolved config as
flattened params (and as a YAML artifact), data counts per stage, ranking
metrics per model and baseline, learning curves as step metrics plus a PNG,
stage timings, and tags that say which code and Spark produced it.

Every run says how it ended, so none is left unexplained in the UI: tag
``recspark.outcome`` is ``succeeded``, ``failed`` (status FAILED) or
``killed`` (SIGTERM: status KILLED); an unfinished run also gets
``recspark.failed_stage`` (the stage it was in, from the job's
:class:`~recspark.runs.timing.StageTimer`), ``recspark.error`` (the error,
redacted) and the stage timings so far. Only SIGKILL leaves a run RUNNING:
nothing can run in a process the kernel removes.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import yaml
from pyspark.sql import SparkSession

import recspark
from recspark.config import MlflowConfig, flatten, to_dict
from recspark.data.fs import data_files
from recspark.errors import JobTerminated, stopped_by_signal
from recspark.redact import redact

if TYPE_CHECKING:
    from recspark.runs.timing import StageTimer

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
OUTCOME_TAG = "recspark.outcome"  # succeeded, failed or killed
FAILED_STAGE_TAG = "recspark.failed_stage"
ERROR_TAG = "recspark.error"
#: MLflow refuses tag values above 8000 characters; an error message is cut to this.
_MAX_ERROR_CHARS = 4000


def resolve_tracking_uri(conf: MlflowConfig) -> str:
    """Config first, then ``$MLFLOW_TRACKING_URI``, then the local ``sqlite:///mlflow.db``."""
    return conf.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _git_commit() -> str | None:
    repo = Path(recspark.__file__).resolve().parents[1]
    if not repo.is_dir():  # shipped as a zip (spark-submit --py-files): no checkout to ask
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_name(job: str, *what: str, data_path: str | None = None, date: str | None = None) -> str:
    """A run name that reads in the MLflow UI's run list: ``train als+warp · demo · 2026-12-03``.

    The job, what it trains or computes, the data (the input folder's last
    name, without a trailing ``interactions``) and the date (today in UTC
    unless given, e.g. a nightly snapshot's).
    """
    parts = [" ".join([job, *[w for w in what if w]])]
    label = _data_label(data_path) if data_path else None
    if label:
        parts.append(label)
    parts.append(date or datetime.datetime.now(datetime.timezone.utc).date().isoformat())
    return " · ".join(parts)


def _data_label(path: str) -> str | None:
    """The input folder's last name, without a trailing ``interactions``: ``data/demo/interactions`` -> ``demo``."""
    names = [n for n in re.split(r"[/\\\\]", path.rstrip("/")) if n and not n.endswith(":")]
    if names and names[-1] == "interactions":
        names = names[:-1]
    return names[-1] if names else None


@contextlib.contextmanager
def mlflow_run(conf: MlflowConfig, *, spark_version: str, run_name: str,
               timer: StageTimer | None = None) -> Iterator[mlflow.ActiveRun]:
    """Open the run for one pipeline execution, tagged with code and Spark versions.

    ``run_name`` is the job's (:func:`run_name`); ``mlflow.run_name`` replaces it.

    A body that raises ends the run FAILED, after tagging the stage it failed in
    (``timer``'s) and logging the stage timings, so a failed night shows where it
    stopped. While the run is open SIGTERM (what schedulers send to stop a job)
    raises :class:`~recspark.errors.JobTerminated` in the main thread: the run
    ends KILLED the same way instead of staying RUNNING forever, and the job
    exits 143 (:mod:`recspark.cli`). The previous SIGTERM handler is restored after.
    """
    mlflow.set_tracking_uri(resolve_tracking_uri(conf))
    if conf.artifact_location and mlflow.get_experiment_by_name(conf.experiment) is None:
        mlflow.create_experiment(conf.experiment, artifact_location=conf.artifact_location)
    mlflow.set_experiment(conf.experiment)
    tags = {"recspark.version": recspark.__version__, "spark.version": spark_version}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    with _sigterm_raises(), _registry_resolved(), mlflow.start_run(run_name=conf.run_name or run_name,
                                                                   tags=tags) as run:
        log.info("MLflow run %s in experiment %r at %s", run.info.run_id, conf.experiment,
                 redact(mlflow.get_tracking_uri()))
        try:
            yield run
        except BaseException as err:
            _end_unfinished(run.info.run_id, err, timer)
            raise
        mlflow.set_tag(OUTCOME_TAG, "succeeded")


@contextlib.contextmanager
def _registry_resolved() -> Iterator[None]:
    """The model registry's URI, resolved once while Spark answers, for the run's lifetime.

    MLflow otherwise asks the active Spark session for it each time it makes a
    client, also to end a run after SIGTERM, when the signal may have cut a JVM
    call short and the gateway answers the next call with garbage: the run
    would stay RUNNING and the job exit 1 instead of 143. Restored after.
    """
    before = os.environ.get(_REGISTRY_ENV)
    mlflow.set_registry_uri(mlflow.get_registry_uri())
    try:
        yield
    finally:
        mlflow.set_registry_uri(before)  # type: ignore[arg-type]  (None: resolved from context again)
        if before is None:
            os.environ.pop(_REGISTRY_ENV, None)


#: Where ``mlflow.set_registry_uri`` also records the registry (for subprocesses).
_REGISTRY_ENV = "MLFLOW_REGISTRY_URI"


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Make SIGTERM raise JobTerminated in the main thread (signals reach only that thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, _frame: object) -> None:
        signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not interrupt ending the run
        raise JobTerminated(signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _end_unfinished(run_id: str, err: BaseException, timer: StageTimer | None) -> None:
    """End the active run KILLED (SIGTERM) or FAILED, saying in which stage and why."""
    status = "KILLED" if stopped_by_signal(err) else "FAILED"
    stage = timer.stage_of(err) if timer is not None else "unknown"
    try:
        mlflow.set_tags({OUTCOME_TAG: status.lower(), FAILED_STAGE_TAG: stage,
                         ERROR_TAG: redact(f"{type(err).__name__}: {err}")[:_MAX_ERROR_CHARS]})
        if timer is not None:
            log_metrics(timer.metrics())
        mlflow.end_run(status)
    except Exception as store_err:  # noqa: BLE001 - the job's own error is what must reach the caller
        log.warning("could not record the end of MLflow run %s: %s", run_id, redact(str(store_err)))
    log.error("MLflow run %s ended %s in stage %s", run_id, status, stage)


def log_config(conf: Any) -> None:
    """Log the resolved config: flattened params, and the YAML as an artifact, credentials redacted."""
    mlflow.log_params(redact(flatten(conf)))
    mlflow.log_text(yaml.safe_dump(redact(to_dict(conf)), sort_keys=False), "config/resolved.yaml")


def log_params(params: Mapping[str, Any]) -> None:
    """Log settings resolved at run time (e.g. an automatic shard count), next to the config's params."""
    mlflow.log_params(redact(dict(params)))


def log_metrics(metrics: Mapping[str, float], prefix: str = "", step: int | None = None) -> None:
    """Log numeric metrics, prefixing each name (e.g. ``als_test_`` + ``precision_at_5``)."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, step=step)


def log_dict_artifact(data: Mapping[str, Any], artifact_file: str) -> None:
    """Log a small JSON/YAML document (e.g. the rejects summary)."""
    mlflow.log_dict(redact(dict(data)), artifact_file)


def log_input_snapshot(spark: SparkSession, path: str, rows: int, context: str = "training") -> None:
    """Log the input as the run's dataset (MLflow's Datasets panel): its path, row count and a digest.

    The digest hashes the input files' names and sizes (a listing, no Spark
    job): two runs on the same snapshot show the same digest, a rewritten
    snapshot a new one. Nothing is read from the files.
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    files = data_files(spark, path)
    digest = hashlib.sha256("\n".join(f"{name}\t{size}" for name, size in files).encode()).hexdigest()[:16]
    dataset = MetaDataset(SparkDatasetSource(path=redact(path)), name=_data_label(path) or "interactions",
                          digest=digest)
    mlflow.log_input(dataset, context=context, tags={"rows": str(rows), "files": str(len(files))})


def log_spark_model(model: Any, name: str) -> str:
    """Log a fitted Spark ML model (ALS, RankingFM) to the active run; returns its ``runs:/<id>/<name>`` URI.

    The spark flavor: ``mlflow.spark.load_model(uri)`` gives it back as a
    ``PipelineModel`` in any SparkSession, and the run page lists it.

    The model's pip requirements are given, not inferred: MLflow infers them
    by loading the model in a new Python process, which for the spark flavor
    starts a second Spark application (measured: 114 s against 8 s per model
    on a loaded 2-core machine). They are the pinned versions of what loading
    needs: pyspark and mlflow, plus recspark's runtime libraries for RankingFM
    (recspark itself must be importable where a RankingFM model is loaded).
    """
    import mlflow.spark

    return mlflow.spark.log_model(model, name, pip_requirements=_spark_model_requirements(model)).model_uri


def _spark_model_requirements(model: Any) -> list[str]:
    import numba
    import numpy
    import pandas
    import pyarrow
    import pyspark
    import scipy

    stages = [model, *getattr(model, "stages", [])]
    libraries = [pyspark, mlflow]
    if any(type(stage).__module__.startswith("recspark.") for stage in stages):
        libraries += [numpy, scipy, pandas, pyarrow, numba]
    return [f"{library.__name__}=={library.__version__}" for library in libraries]


def plot_learning_curves(test: Mapping[str, list[tuple[int, float]]], metric: str, xlabel: str,
                         train: Mapping[str, list[tuple[int, float]]] | None = None) -> None:
    """Every model's learning curve in one PNG artifact (``plots/learning_curve_<metric>.png``).

    ``test``/``train`` map a model name to ``[(step, value), ...]``; empty
    curves are skipped. Train curves (ranking train items) sit on their own
    axes: they are several times higher and would squash the test curves.
    The points themselves are logged as step metrics when measured.
    """
    panels = {split: {name: points for name, points in curves.items() if points}
              for split, curves in (("test", test), ("train", train or {}))}
    panels = {split: curves for split, curves in panels.items() if curves}
    if not panels:
        return
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (split, curves) in zip(axes[0], panels.items()):
        for name, points in curves.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{split} {metric}")
        ax.set_title(f"{split} {metric} (train items {'ranked' if split == 'train' else 'excluded'})")
        ax.grid(True, alpha=0.3)
        ax.legend()
    _log_figure(fig, f"learning_curve_{metric}.png")


def log_model_comparison(metrics: Mapping[str, Mapping[str, float]], ks: list[int]) -> None:
    """The numbers a user compares models by, in one place: a table artifact and a bar chart.

    ``metrics/by_model.json`` (one row per model and baseline: p@k, recall@k,
    NDCG@k, MAP@k, MRR, AUC; MLflow's artifact view shows it as a table) and
    ``plots/models.png`` (p@k, NDCG@k and AUC side by side per model).
    """
    if not metrics:
        return
    import pandas as pd

    columns = [f"{m}_at_{k}" for k in ks for m in ("precision", "recall", "ndcg", "map")] + ["mrr", "auc"]
    table = pd.DataFrame([{"model": model, **{c: values.get(c) for c in columns}}
                          for model, values in metrics.items()])
    mlflow.log_table(table, "metrics/by_model.json")
    shown = [f"precision_at_{ks[0]}", f"ndcg_at_{ks[0]}", "auc"]
    fig, axes = _pyplot().subplots(1, len(shown), figsize=(4 * len(shown), 3.5), squeeze=False)
    for ax, column in zip(axes[0], shown):
        ax.bar(table["model"], table[column].astype(float), color="tab:blue")
        ax.set_title(f"test {column}")
        ax.tick_params(axis="x", rotation=30)
        ax.grid(True, axis="y", alpha=0.3)
    _log_figure(fig, "models.png")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_figure(fig: Any, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        fig.savefig(path, dpi=100, bbox_inches="tight")
        mlflow.log_artifact(str(path), "plots")
    _pyplot().close(fig)
