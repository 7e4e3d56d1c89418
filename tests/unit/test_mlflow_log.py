"""What a run shows in the MLflow UI: its name, and learning curves that keep train and test apart."""

from __future__ import annotations

import datetime

import mlflow

from recspark.tracking import mlflow_log
from recspark.tracking.mlflow_log import plot_learning_curves, run_name


def test_run_names_say_job_models_data_and_date():
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    assert run_name("train", "als+warp", data_path="data/demo/interactions") == f"train als+warp · demo · {today}"
    assert run_name("nightly", "warp", data_path="s3a://bucket/likes/", date="2026-11-22") == \
        "nightly warp · likes · 2026-11-22"
    assert run_name("tune", "warp", "tpe") == f"tune warp tpe · {today}"


def test_train_and_test_curves_get_their_own_axes(monkeypatch):
    """A train curve (train items ranked, several times higher) once shared the test axes, labelled test."""
    figures = []
    monkeypatch.setattr(mlflow_log, "_log_figure", lambda fig, name: figures.append((fig, name)))
    plot_learning_curves({"als": [(2, 0.10), (6, 0.12)], "warp": [(3, 0.11), (6, 0.13)]}, "precision_at_5",
                         "epochs", train={"warp": [(3, 0.40), (6, 0.55)]})
    (fig, name), = figures
    assert name == "learning_curve_precision_at_5.png"
    test_ax, train_ax = fig.axes
    assert test_ax.get_ylabel() == "test precision_at_5" and train_ax.get_ylabel() == "train precision_at_5"
    assert [line.get_label() for line in test_ax.get_lines()] == ["als", "warp"]
    assert [line.get_label() for line in train_ax.get_lines()] == ["warp"]
    assert max(test_ax.get_lines()[1].get_ydata()) == 0.13

    figures.clear()
    plot_learning_curves({"als": [(2, 0.1)]}, "precision_at_5", "iterations")  # no train curves: one panel
    assert len(figures[0][0].axes) == 1
    plot_learning_curves({"als": []}, "precision_at_5", "iterations")  # nothing measured: no plot
    assert len(figures) == 1


def test_spark_models_are_logged_with_their_requirements_pinned_not_inferred():
    """Inference would load each model in a new process with its own Spark application (minutes in CI)."""
    import pyspark

    from recspark.models.warp.estimator import RankingFMModel
    from recspark.tracking.mlflow_log import _spark_model_requirements

    plain = _spark_model_requirements(object())
    assert plain == [f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"]
    ours = _spark_model_requirements(RankingFMModel(state=None, user_map=None, item_map=None))
    assert ours[:2] == plain and {r.split("==")[0] for r in ours[2:]} == {"numpy", "scipy", "pandas", "pyarrow", "numba"}
