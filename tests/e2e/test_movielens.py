"""The training job on MovieLens 100K (ratings >= 4 as likes), with the seed protocol.

Skipped when ../shared/data (or $RECSPARK_DATA_DIR) has no ml-100k folder.
Quality floors sit a little below measured values (noise noted inline).
"""

from __future__ import annotations


import pandas as pd
import pytest

from recspark.config import TrainConfig, load_config
from recspark.pipeline.train import run_training

pytestmark = [pytest.mark.e2e, pytest.mark.spark]


@pytest.fixture(scope="module")
def ml100k_run(spark, data_dir, tmp_path_factory):
    source = data_dir / "ml-100k" / "u.data"
    if not source.exists():
        pytest.skip(f"{source} not found")
    tmp = tmp_path_factory.mktemp("ml100k")
    ratings = pd.read_csv(source, sep="\t", names=["user", "movie", "rating", "ts"])
    likes = ratings[ratings.rating >= 4]
    likes.to_parquet(tmp / "likes.parquet", index=False)  # integer ids and epoch-second timestamps, as delivered
    conf = load_config(None, TrainConfig, [
        f"data.path={tmp}/likes.parquet", "data.user_col=user", "data.item_col=movie", "data.weight_col=null",
        "data.timestamp_col=ts", f"output.dir={tmp}/out", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/mlruns",
        "als.rank=32", "als.max_iter=10", "als.alpha=10", "als.reg_param=0.05", "als.confidence=binary",
        "warp.epochs=10", "warp.no_components=32", "spark.master=null",
    ])
    return likes, run_training(spark, conf)


def test_seed_protocol_counts(ml100k_run):
    likes, summary = ml100k_run
    c = summary.counts
    assert c["rows_read"] == len(likes) == 55375
    assert c["rows_rejected"] == 0
    assert c["test_rows"] == 5 * c["test_users"]
    # ~20% of the users with >= 10 likes hold out 5 each (chosen by hash: approximate)
    assert 0.15 * c["n_users"] < c["test_users"] < 0.25 * c["n_users"]
    assert c["train_rows"] + c["test_rows"] == c["rows_after_threshold"]


def test_models_beat_popularity_on_movielens(ml100k_run):
    _, summary = ml100k_run
    m = summary.metrics
    # measured (train items excluded, 175 test users, so about +-0.02 of noise):
    # p@5 ALS 0.147, WARP 0.155, popularity 0.079, random 0.008; AUC ALS 0.889, WARP 0.901
    assert m["als"]["precision_at_5"] > 1.5 * m["popularity"]["precision_at_5"]
    assert m["warp"]["precision_at_5"] > 1.5 * m["popularity"]["precision_at_5"]
    assert m["random"]["precision_at_5"] < 0.03
    assert m["als"]["auc"] > 0.85 and m["warp"]["auc"] > 0.85
