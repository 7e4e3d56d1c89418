"""The search's model is the training job's: same config and data (both side-feature sections) -> same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recspark.config import TrainConfig, TuneConfig, load_config
from recspark.models.warp.estimator import RankingFMModel
from recspark.pipeline.train import run_training
from recspark.tuning.search import run_search

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.spark


def write_data(tmp: Path) -> None:
    """Two taste groups of 30 items; users and items declare their group, plus one feature-only (cold) each."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"{'xy'[u % 2]}{i}") for u in range(120) for i in rng.choice(30, 16, replace=False)]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_parquet(tmp / "likes.parquet")
    users = [(f"u{u}", f"likes{'xy'[u % 2]}", 1.0) for u in range(120)] + [("u_cold", "likesx", 1.0)]
    pd.DataFrame(users, columns=["user_id", "feature", "value"]).to_parquet(tmp / "interests.parquet")
    items = [(f"{g}{i}", g, 1.0) for g in "xy" for i in range(30)] + [("x_cold", "x", 1.0)]
    pd.DataFrame(items, columns=["item_id", "feature", "value"]).to_parquet(tmp / "tags.parquet")


def test_the_searchs_refit_is_the_model_its_best_config_trains(spark, tmp_path):
    write_data(tmp_path)
    conf = load_config(REPO / "conf" / "tune.yaml", TuneConfig, [
        f"data.path={tmp_path}/likes.parquet", "data.generate=null", "data.weight_col=null",
        "data.timestamp_col=null", f"output.dir={tmp_path}/out", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"mlflow.artifact_location={tmp_path}/mlruns", "mlflow.experiment=tune-vs-train", "als.enabled=false",
        "warp.no_components=8", "warp.epochs=2", "warp.n_shards=1", "tune.strategy=grid", "tune.concurrency=1",
        "tune.space=[{name: warp.learning_rate, type: categorical, values: [0.1]}]",
        f"features.items.sources=[{{path: {tmp_path}/tags.parquet, group: tag}}]",
        f"features.users.sources=[{{path: {tmp_path}/interests.parquet, group: interest}}]"])
    run_search(spark, conf)
    best = load_config(tmp_path / "out" / "best_config.yaml", TrainConfig)
    run_training(spark, best)

    tuned = RankingFMModel.load(f"{tmp_path}/out/best_model")
    trained = RankingFMModel.load(f"{tmp_path}/out-best/models/warp/model")
    assert trained.user_feature_names == ["interest_likesx", "interest_likesy"]
    assert tuned.user_feature_names == trained.user_feature_names
    assert tuned.item_feature_names == trained.item_feature_names == ["tag_x", "tag_y"]
    assert (tuned.state.n_users, tuned.state.n_items) == (trained.state.n_users, trained.state.n_items) == (121, 61)
    np.testing.assert_array_equal(tuned.state.item_representations()[0], trained.state.item_representations()[0])
    np.testing.assert_array_equal(tuned.state.user_shared.embeddings, trained.state.user_shared.embeddings)
