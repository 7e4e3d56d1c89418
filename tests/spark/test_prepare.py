"""The data path as the jobs run it (prepare_matrix): ratings turned into likes by data.min_weight."""

from __future__ import annotations

import mlflow
import pytest

from recspark.config import DataConfig, SplitConfig
from recspark.pipeline.prepare import prepare_matrix
from recspark.runs.timing import StageTimer

pytestmark = pytest.mark.spark


def test_min_weight_turns_ratings_into_likes_and_counts_what_it_drops(spark, tmp_path, job_descriptions):
    # 12 users rate 8 items 1-5 stars; (u, i) rated twice keeps its best rating (dedupe: max).
    rows = [(f"u{u}", f"i{i}", float(1 + (u + i) % 5)) for u in range(12) for i in range(8)]
    rows += [("u0", "i0", 5.0)]  # u0 rated i0 1 star, then 5: a like after dedupe max
    path = str(tmp_path / "ratings")
    spark.createDataFrame(rows, "user_id string, item_id string, weight double").write.parquet(path)
    data = DataConfig(path=path, timestamp_col=None, dedupe="max", min_weight=4.0, min_user_interactions=1,
                      min_item_interactions=1)
    outer = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")  # prepare_matrix logs into the job's run
    try:  # an explicit experiment: an earlier test's active experiment id does not exist in this store
        experiment = mlflow.create_experiment("prepare", artifact_location=str(tmp_path / "mlruns"))
        with mlflow.start_run(experiment_id=experiment) as run:
            prepared = prepare_matrix(spark, data, SplitConfig(test_user_fraction=0.5, holdout_k=1),
                                      str(tmp_path / "out"), StageTimer())
        logged = mlflow.get_run(run.info.run_id).data.metrics
    finally:
        mlflow.set_tracking_uri(outer)
    likes = {(u, i) for u in range(12) for i in range(8) if 1 + (u + i) % 5 >= 4} | {(0, 0)}
    kept = prepared.matrix.train.unionByName(prepared.matrix.test)
    assert kept.count() == len(likes)
    assert kept.agg({"weight": "min"}).first()[0] >= 4.0
    assert prepared.counts["rows_after_dedupe"] == 12 * 8
    assert prepared.counts["rows_below_min_weight"] == logged["rows_below_min_weight"] == 12 * 8 - len(likes)
    assert prepared.counts["rows_after_threshold"] == len(likes)
    # The Spark UI names the jobs by the pipeline stage that ran them (the stage timer) or a finer step.
    assert {"ingest", "filter", "threshold pass 1", "split"} <= set(job_descriptions())
