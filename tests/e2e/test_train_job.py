"""The training job end to end on generated data: quality, outputs and the MLflow run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import mlflow.spark
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from recspark.config import TrainConfig, load_config
from recspark.runs.report import format_summary
from recspark.pipeline.prepare import ensure_input
from recspark.pipeline.train import run_training

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.spark]


def small_demo_overrides(tmp: Path) -> list[str]:
    """The demo config shrunk to a few seconds of work, writing everything under ``tmp``."""
    return [
        f"data.path={tmp}/data/interactions",
        "data.generate.n_users=3000",
        "data.generate.n_items=600",
        "data.generate.n_interactions=60000",
        f"output.dir={tmp}/out",
        f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
        f"mlflow.artifact_location={tmp}/mlruns",
        "mlflow.experiment=e2e",
        "als.max_iter=6",
        "als.learning_curve=[2, 6]",
        "warp.epochs=6",
        "warp.eval_every=3",
        "evaluation.curve_test_users=200",  # curve points on a sample of the ~600 test users
        "warp.train_metrics=true",
        f"features.items.sources=[{{path: {tmp}/data/item_tags, group: tag}}]",
        f"features.users.sources=[{{path: {tmp}/data/user_interests, group: interest}}]",
    ]


def add_signup_user(spark, conf: TrainConfig, tmp: Path) -> None:
    """The demo data plus a user who signed up (declared an interest) but has no interaction yet."""
    ensure_input(spark, conf.data)
    interests = spark.read.parquet(f"{tmp}/data/user_interests")
    signup = spark.createDataFrame([("u_signup", "c1", 1.0)], interests.schema)
    interests.unionByName(signup).write.parquet(f"{tmp}/data/user_interests_plus")


def user_with_holdout(out: Path) -> tuple[str, set[str]]:
    """A user with held-out items in a published run, and all their items (train and test), by original id."""
    users, items = (pd.read_parquet(out / "id_maps" / side) for side in ("users", "items"))
    user_idx = int(pd.read_parquet(out / "matrix" / "test")["user_idx"].min())
    rows = pd.concat([pd.read_parquet(out / "matrix" / split, filters=[("user_idx", "==", user_idx)])
                      for split in ("train", "test")])
    has = set(items.set_index("item_idx").loc[rows["item_idx"], "item_id"])
    return str(users.set_index("user_idx").loc[user_idx, "user_id"]), has


def test_als_beats_popularity_by_a_wide_margin(demo_run):
    _, summary = demo_run
    als, pop, rnd = (summary.metrics[m] for m in ("als", "popularity", "random"))
    assert als["precision_at_5"] > 1.5 * pop["precision_at_5"]
    assert pop["precision_at_5"] > rnd["precision_at_5"]


def test_warp_is_trained_and_evaluated_like_als(demo_run):
    _, summary = demo_run
    warp, pop = summary.metrics["warp"], summary.metrics["popularity"]
    assert set(warp) == set(summary.metrics["als"])
    assert warp["precision_at_5"] > pop["precision_at_5"]
    for metrics in summary.metrics.values():
        assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k != "n_users_evaluated")


def test_stage_counts_are_consistent(demo_run):
    _, summary = demo_run
    c = summary.counts
    assert c["rows_read"] >= 60000 * 0.9
    assert 0 < c["rows_rejected"] <= 0.01 * c["rows_read"]  # the demo injects 0.1% bad rows
    assert c["train_rows"] + c["test_rows"] == c["rows_after_threshold"]
    assert c["test_rows"] == 5 * c["test_users"]


def test_outputs_are_written_with_original_ids(demo_run, spark):
    conf, summary = demo_run
    out = Path(conf.output.dir)
    for sub in ("rejects", "id_maps/users", "id_maps/items", "matrix/train", "matrix/test",
                "models/als/user_factors", "models/als/item_factors", "recommendations/als",
                "models/warp/user_factors", "models/warp/item_factors", "recommendations/warp",
                "models/warp/model/user_state", "models/warp/model/item_feature_vocab",
                "rejects/item_features_tag", "rejects/user_features_interest", "models/warp/model/user_shared",
                "models/warp/model/user_feature_vocab"):
        assert (out / sub / "_SUCCESS").exists(), sub
    recs = spark.read.parquet(str(out / "recommendations/als"))
    assert {"user_id", "item_id", "rank", "score"} <= set(recs.columns)
    assert recs.filter("NOT user_id LIKE 'u%' OR NOT item_id LIKE 'i%'").count() == 0
    per_user = recs.groupBy("user_id").count()
    assert per_user.filter(f"count != {conf.evaluation.recommend_k}").count() == 0
    # The signed-up user has no interactions: recommended from the declared interest by WARP only.
    warp = spark.read.parquet(str(out / "recommendations/warp"))
    assert warp.where("user_id = 'u_signup'").count() == conf.evaluation.recommend_k
    assert recs.where("user_id = 'u_signup'").count() == 0


def test_mlflow_run_has_params_metrics_and_artifacts(demo_run):
    conf, summary = demo_run
    client = MlflowClient(tracking_uri=summary.tracking_uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["als.rank"] == str(conf.als.rank)
    assert run.data.params["split.holdout_k"] == "5"
    # Auto settings (null in the config) are logged as resolved: 60k rows -> 1 shard.
    assert run.data.params["warp.n_shards_used"] == "1"
    metrics = run.data.metrics
    for name in ("rows_read", "rows_rejected", "rows_after_threshold", "n_users", "n_items", "sparsity", "train_rows",
                 "test_rows", "als_test_precision_at_5", "als_test_ndcg_at_10", "als_test_auc",
                 "popularity_test_precision_at_5", "random_test_precision_at_5", "time_als_fit_s"):
        assert name in metrics, name
    curve = client.get_metric_history(summary.run_id, "als_test_precision_at_5")
    assert sorted(m.step for m in curve) == [2, 6]
    warp_curve = client.get_metric_history(summary.run_id, "warp_test_precision_at_5")
    assert sorted(m.step for m in warp_curve) == [3, 6]
    assert len(client.get_metric_history(summary.run_id, "warp_samples_per_s")) == 6
    assert metrics["features_item_tag_kept"] > 0 and metrics["features_item_tag_rows_rejected"] == 0
    assert metrics["features_item_total"] == metrics["n_items"] + metrics["features_item_side"]
    assert metrics["features_user_interest_kept"] > 0 and metrics["features_user_interest_rows_rejected"] == 0
    assert metrics["features_user_total"] == metrics["n_users"] + metrics["features_user_side"]
    assert metrics["cold_users"] == 1 and metrics["cold_items"] == 0  # u_signup: features only
    train_curve = client.get_metric_history(summary.run_id, "warp_train_precision_at_5")
    assert sorted(m.step for m in train_curve) == [3, 6]
    # Train p@5 ranks the training items themselves: it sits well above test p@5.
    final = {m.step: m.value for m in train_curve}[6]
    assert 0.0 <= final <= 1.0 and final > metrics["warp_test_precision_at_5"]
    assert "warp_test_auc" in metrics
    assert run.data.tags["recspark.version"]
    assert run.data.tags["spark.version"]
    artifacts = {a.path for a in client.list_artifacts(summary.run_id)}
    nested = {f"{d}/{a.path.split('/')[-1]}" for d in ("config", "data", "plots", "metrics")
              for a in client.list_artifacts(summary.run_id, d)}
    assert "outputs.json" in artifacts
    assert conf.mlflow.artifact_location in run.info.artifact_uri
    assert {"config/resolved.yaml", "data/rejects_summary.json", "plots/learning_curve_precision_at_5.png",
            "plots/models.png", "metrics/by_model.json"} <= nested
    mlflow.set_tracking_uri(summary.tracking_uri)
    table = mlflow.load_table("metrics/by_model.json", run_ids=[summary.run_id])
    assert set(table["model"]) == {"popularity", "random", "als", "warp"}
    assert table.set_index("model").loc["warp", "precision_at_5"] == pytest.approx(
        metrics["warp_test_precision_at_5"])
    assert run.info.run_name.startswith("train als+warp · data · ")  # job, models, data folder, date
    (snapshot,) = run.inputs.dataset_inputs  # MLflow's Datasets panel: the input, its rows and a digest
    assert snapshot.dataset.name == "data" and conf.data.path in snapshot.dataset.source
    assert len(snapshot.dataset.digest) == 16
    assert {t.key: t.value for t in snapshot.tags}["rows"] == str(int(metrics["rows_read"]))
    assert run.data.tags["recspark.outcome"] == "succeeded"
    # Each trained model is on the run, loadable with MLflow's spark flavor (RankingFM as ALS).
    for model in ("als", "warp"):
        loaded = mlflow.spark.load_model(f"runs:/{summary.run_id}/{model}")
        assert loaded.stages[0].recommendForAllUsers(3).limit(5).count() == 5, model
    # The rejects are named where they are after publishing, not in the staging folder that is gone.
    rejects = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/data/rejects_summary.json")
    assert rejects["rejects_path"] == f"{conf.output.dir}/rejects" == summary.outputs["rejects"]
    # ... and as the Spark-free pyfunc the nightly serves, logged to the run but not registered.
    user, has = user_with_holdout(Path(conf.output.dir))
    for model in ("als", "warp"):
        served = mlflow.pyfunc.load_model(f"runs:/{summary.run_id}/{model}_pyfunc")
        recs = served.predict(pd.DataFrame({"user_id": [user, "never-seen-user"]}), params={"k": 5})
        mine = recs[recs["user_id"] == user]
        assert set(recs["source"]) == {"model", "popularity"}, model
        assert list(mine["rank"]) == [1, 2, 3, 4, 5] and set(mine["source"]) == {"model"}, model
        assert not set(mine["item_id"]) & has, model  # the user's train and held-out items are excluded
        assert len(recs[recs["user_id"] == "never-seen-user"]) == 5, model
    assert not client.search_model_versions(f"run_id = '{summary.run_id}'")  # registering is the nightly's job


def test_summary_table_names_models_and_mlflow(demo_run):
    conf, summary = demo_run
    text = format_summary(summary, conf.evaluation.ks)
    for word in ("als", "popularity", "random", "p@5", summary.run_id, "mlflow ui",
                 f"Ranking metrics on all {int(summary.counts['test_users']):,} test users (exact)"):
        assert word in text


def test_cold_items_split_logs_cold_start_metrics(spark, tmp_path):
    """split.strategy=cold_items: whole items held out; WARP with tags ranks them, ALS (no features) cannot."""
    overrides = small_demo_overrides(tmp_path) + [
        "split.strategy=cold_items", "als.learning_curve=[]", "warp.eval_every=0", "warp.train_metrics=false",
        "features.users.sources=[]", "mlflow.experiment=e2e-cold", "evaluation.max_test_users=300"]
    conf = load_config(REPO / "conf" / "demo.yaml", TrainConfig, overrides)
    summary = run_training(spark, conf)
    warp, als = summary.metrics["warp_cold"], summary.metrics["als_cold"]
    assert warp["auc"] > 0.65 and warp["auc"] > als["auc"] + 0.1, (warp, als)
    assert abs(als["auc"] - 0.5) < 0.1  # no interactions, no features: chance
    metrics = MlflowClient(tracking_uri=summary.tracking_uri).get_run(summary.run_id).data.metrics
    assert {"warp_cold_precision_at_5", "warp_cold_auc", "als_cold_auc"} <= set(metrics)
    # More test users than evaluation.max_test_users: every model on one seeded sample, with standard errors.
    n_test = int(summary.counts["test_users"])
    assert n_test > 300, n_test
    assert summary.evaluated_on.startswith(f"a seeded sample of ~300 of {n_test:,} test users")
    for model in ("als", "warp", "popularity", "random"):
        assert 150 < summary.metrics[model]["n_users_evaluated"] < 450
        assert 0 <= metrics[f"{model}_test_precision_at_5_se"] < 0.05
    # ALS and popularity never rank a cold item in the top 5 (p@5 = 0 for everyone: no spread).
    assert metrics["warp_test_precision_at_5_se"] > 0 and metrics["random_test_precision_at_5_se"] > 0


def run_submit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "spark-submit.sh"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable,
                                            "PYSPARK_PYTHON": sys.executable})


def test_spark_submit_wrapper_exits_2_on_a_bad_config(tmp_path):
    result = run_submit(str(REPO / "jobs" / "train.py"), "--conf", str(REPO / "conf" / "demo.yaml"),
                        "--set", "als.rnk=3", cwd=tmp_path)
    assert result.returncode == 2
    # spark-submit's PythonRunner merges the driver's stderr into its stdout
    output = result.stdout + result.stderr
    assert "als.rnk: unknown key (did you mean 'als.rank'?)" in output
    assert "(from --set als.rnk=3)" in output
    # Refused by the wrapper's check before spark-submit: no JVM was started, no Spark log line printed.
    assert "log4j" not in output and "SparkContext" not in output


@pytest.mark.parametrize("job, conf", [("train", "demo"), ("nightly", "nightly"), ("tune", "tune"),
                                       ("products", "products"), ("generate_data", "generate")])
def test_every_job_accepts_the_wrappers_config_check(job, conf):
    """spark-submit.sh runs ``jobs/<job>.py ... --check-config`` first: a valid config passes, exit 0, no Spark."""
    result = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), "--conf", f"conf/{conf}.yaml",
                             "--check-config"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_nightly_help_lists_its_date_option_and_the_option_sets_the_date():
    nightly = [sys.executable, str(REPO / "jobs" / "nightly.py")]
    shown = subprocess.run(nightly + ["--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--date" in shown.stdout, shown.stdout + shown.stderr
    bad = subprocess.run(nightly + ["--conf", "conf/nightly.yaml", "--date", "2026-13-40", "--check-config"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "date: expected YYYY-MM-DD, got '2026-13-40'" in bad.stderr, bad.stderr
