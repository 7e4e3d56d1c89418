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
    assert {"ingest", "filter", "deduplicate", "split"} <= set(job_descriptions())  # stable input: no pass runs


def _prepare_in_a_run(spark, tmp_path, data, split):
    outer = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        experiment = mlflow.create_experiment("prepare", artifact_location=str(tmp_path / "mlruns"))
        with mlflow.start_run(experiment_id=experiment):
            return prepare_matrix(spark, data, split, str(tmp_path / "out"), StageTimer())
    finally:
        mlflow.set_tracking_uri(outer)


def test_the_data_path_runs_a_pinned_number_of_spark_jobs(spark, tmp_path, job_descriptions):
    # Issue 18.5: every Spark job of the data path costs ~0.1-1 s whatever the data size, and on ml-100k they
    # added up to 3x the ALS fit. A change that adds jobs (a recount, an unpersisted reuse) fails here; lower
    # the pins when a change removes some. Two threshold passes: the lone user goes in pass 1, and pass 1's counts
    # show that pass 2 would keep every row, so it is recorded without running.
    rows = [(f"u{u}", f"i{i}", 1.0) for u in range(12) for i in range(8) if (u + i) % 4] + [("lone", "i0", 1.0)]
    path = str(tmp_path / "likes")
    spark.createDataFrame(rows, "user_id string, item_id string, weight double").write.parquet(path)
    data = DataConfig(path=path, timestamp_col=None, min_user_interactions=2, min_item_interactions=2)
    prepared = _prepare_in_a_run(spark, tmp_path, data, SplitConfig(test_user_fraction=0.5, holdout_k=1))
    assert prepared.counts["threshold_passes"] == 2 and prepared.counts["rows_after_threshold"] == len(rows) - 1
    jobs = job_descriptions()
    assert "threshold pass 2" not in jobs
    per_pass = {name: jobs[name] for name in ("deduplicate", "threshold pass 1")}
    assert all(n <= PINNED_JOBS_PER_PASS for n in per_pass.values()), (per_pass, jobs)
    assert sum(jobs.values()) <= PINNED_JOBS, jobs


#: Spark jobs (with AQE: one per shuffle stage) of the run above in tests/conftest.py's local[2] session, after
#: issue 18.5: 3 ingest, 7 + 5 filter (deduplicate, pass 1: a user window, an item aggregate broadcast back, one
#: counting action; the stable pass 2 is not run), 25 index, 16 split. Before it, on ml-100k
#: (benchmarks/bench_prepare.py): 73 jobs, 7-8 per threshold pass and every pass run.
PINNED_JOBS_PER_PASS = 7
PINNED_JOBS = 56
