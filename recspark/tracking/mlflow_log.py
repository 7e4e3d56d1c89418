"""Everything recspark writes to MLflow, in one place.

One MLflow run per pipeline execution. The run holds the resolved config as
flattened params (and as a YAML artifact), data counts per stage, ranking
metrics per model and baseline, learning curves as step metrics plus a PNG,
stage timings, and tags that say which code and Spark produced it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import yaml

import recspark
from recspark.config import MlflowConfig, flatten, to_dict
from recspark.redact import redact

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


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


@contextlib.contextmanager
def mlflow_run(conf: MlflowConfig, *, spark_version: str, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Open the run for one pipeline execution, tagged with code and Spark versions.

    A run whose body raises is ended with status FAILED (MLflow's context
    manager does that), so failed nightly runs are visible in the UI.
    """
    mlflow.set_tracking_uri(resolve_tracking_uri(conf))
    if conf.artifact_location and mlflow.get_experiment_by_name(conf.experiment) is None:
        mlflow.create_experiment(conf.experiment, artifact_location=conf.artifact_location)
    mlflow.set_experiment(conf.experiment)
    tags = {"recspark.version": recspark.__version__, "spark.version": spark_version}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    with mlflow.start_run(run_name=run_name or conf.run_name, tags=tags) as run:
        log.info("MLflow run %s in experiment %r at %s", run.info.run_id, conf.experiment,
                 redact(mlflow.get_tracking_uri()))
        yield run


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


def plot_learning_curves(curves: Mapping[str, list[tuple[int, float]]], metric: str, xlabel: str) -> None:
    """All models' learning curves in one PNG artifact (``plots/learning_curve_<metric>.png``).

    ``curves`` maps a model name to ``[(step, value), ...]``; empty curves are
    skipped. The points themselves are logged as step metrics when measured.
    """
    curves = {name: points for name, points in curves.items() if points}
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"Learning curve: {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"learning_curve_{metric}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        mlflow.log_artifact(str(path), "plots")
    plt.close(fig)
