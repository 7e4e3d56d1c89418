"""The nightly job on two tiny generated snapshots: ids, warm start, the quality gate, publishing, the pyfunc.

One scenario shared by the tests below (module fixture), in order:

1. 2026-11-21: cold start, promoted (no champion yet);
2. 2026-11-22 (new users and items, more rows): crashes in the pointer switch, after its
   recommendations were written and its version registered;
3. 2026-11-22 again: WARP warm-started from day 1, promoted; replaces the crashed attempt;
4. 2026-11-22 again through ``jobs/nightly.py`` with ``tolerance=-1`` (must beat the champion by
   a whole p@5 point): rejected, exit code 5.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from recspark import cli
from recspark.config import NightlyConfig, SyntheticSpec, load_config
from recspark.data.synthetic import interactions_frame
from recspark.errors import ConfigError
from recspark.models.warp.estimator import RankingFMModel
from recspark.models.warp.warm_start import warm_start_model
from recspark.pipeline import nightly
from recspark.runs import publish
from recspark.tracking import registry

REPO = Path(__file__).resolve().parents[2]
DAY1, DAY2 = "2026-11-21", "2026-11-22"
NAME = "nightly-test"

pytestmark = pytest.mark.spark


def overrides(tmp: Path, *extra: str) -> list[str]:
    return [f"data.path={tmp}/snapshots/{{date}}/interactions", f"root={tmp}/nightly",
            f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/mlruns",
            "mlflow.experiment=nightly-test", f"promotion.registered_model={NAME}",
            "warp.no_components=16", "warp.epochs=3", "warp.n_shards=1", "split.holdout_k=3",
            "data.min_user_interactions=3", "data.min_item_interactions=3", *extra]


def conf_for(tmp: Path, date: str, *extra: str) -> NightlyConfig:
    return load_config(REPO / "conf" / "nightly.yaml", NightlyConfig, overrides(tmp, f"date={date}", *extra))


def write_snapshots(spark, tmp: Path) -> None:
    """Day 2 is day 1 plus ~25% more users and items (and their rows); ids are zero-padded, so they sort."""
    spec = SyntheticSpec(n_users=320, n_items=200, n_interactions=5000, n_clusters=4, min_user_interactions=12,
                         seed=3)
    rows = interactions_frame(spark, spec).cache()
    users = sorted(r[0] for r in rows.select("user_id").distinct().collect())
    items = sorted(r[0] for r in rows.select("item_id").distinct().collect())
    day1 = rows.where((F.col("user_id") < users[240]) & (F.col("item_id") < items[150]))
    day1.write.parquet(f"{tmp}/snapshots/{DAY1}/interactions")
    rows.write.parquet(f"{tmp}/snapshots/{DAY2}/interactions")
    rows.unpersist()


def run_job(spark, tmp: Path, date: str, *extra: str) -> int:
    """``jobs/nightly.py`` in this process, with the test session (the job would build and stop its own)."""
    job = importlib.util.spec_from_file_location("nightly_job", REPO / "jobs" / "nightly.py")
    module = importlib.util.module_from_spec(job)
    job.loader.exec_module(module)
    argv = ["--conf", str(REPO / "conf" / "nightly.yaml"), "--date", date]
    for item in overrides(tmp, *extra):
        argv += ["--set", item]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "build_session", lambda *args, **kwargs: spark)
        patch.setattr(spark, "stop", lambda: None)
        return module.main(argv)


@pytest.fixture(scope="module")
def scenario(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nightly")
    root = f"{tmp}/nightly"
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    write_snapshots(spark, tmp)
    day1 = nightly.run_nightly(spark, conf_for(tmp, DAY1))
    after = {"day1": (publish.read_pointer(spark, root), registry.champion(client, NAME).version)}

    def crash(*args, **kwargs):
        raise OSError("simulated crash before the pointer switch")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(OSError, match="simulated crash"):
        patch.setattr(publish, "switch_pointer", crash)
        nightly.run_nightly(spark, conf_for(tmp, DAY2, "promotion.tolerance=1.0"))
    after["crash"] = (publish.read_pointer(spark, root), registry.champion(client, NAME).version)
    crashed = {p.name for p in (tmp / "nightly" / "runs" / DAY2).iterdir()}
    day2 = nightly.run_nightly(spark, conf_for(tmp, DAY2, "promotion.tolerance=1.0"))
    after["day2"] = (publish.read_pointer(spark, root), registry.champion(client, NAME).version)
    versions_day2 = client.search_model_versions(f"name = '{NAME}'")
    exit_code = run_job(spark, tmp, DAY2, "promotion.tolerance=-1")
    after["rejected"] = (publish.read_pointer(spark, root), registry.champion(client, NAME).version)
    return {"tmp": tmp, "client": client, "day1": day1, "day2": day2, "after": after, "crashed": crashed,
            "versions_day2": versions_day2, "exit_code": exit_code}


def id_map(spark, run_dir: str, side: str) -> dict[str, int]:
    rows = spark.read.parquet(f"{run_dir}/id_maps/{side}s").collect()
    return {r[f"{side}_id"]: r[f"{side}_idx"] for r in rows}


def test_known_ids_keep_their_indices_and_new_ids_are_appended(scenario, spark):
    day1, day2 = scenario["day1"], scenario["day2"]
    for side in ("user", "item"):
        old, new = id_map(spark, day1.run_dir, side), id_map(spark, day2.run_dir, side)
        assert {k: new[k] for k in old} == old
        appended = sorted(v for k, v in new.items() if k not in old)
        assert appended == list(range(len(old), len(new))) and appended, side


def test_first_night_is_promoted_and_the_next_warm_starts_from_it(scenario, spark):
    day1, day2, after = scenario["day1"], scenario["day2"], scenario["after"]
    assert day1.promoted and not day1.warm_started and day1.champion is None
    assert day2.promoted and day2.warm_started and day2.champion_version == day1.model_version
    assert day2.champion is not None and set(day2.champion) == set(day2.candidate)
    assert mlflow.get_run(day2.run_id).data.params["nightly.warm_start_used"] == "True"
    assert RankingFMModel.load(f"{day2.run_dir}/model/warp").state.epochs_done == 6  # 3 on day 1, 3 more on day 2
    assert after["day1"] == (day1.run_dir, day1.model_version)
    assert after["day2"] == (day2.run_dir, day2.model_version)


def test_warm_start_keeps_the_champions_rows_and_initialises_new_ones(scenario, spark):
    tmp, day1, day2 = scenario["tmp"], scenario["day1"], scenario["day2"]
    conf = conf_for(tmp, DAY2)
    champion = RankingFMModel.load(f"{day1.run_dir}/model/warp")
    maps = [spark.read.parquet(f"{day2.run_dir}/id_maps/{side}") for side in ("users", "items")]
    n_users, n_items = (len(id_map(spark, day2.run_dir, side)) for side in ("user", "item"))
    init = warm_start_model(spark, f"{day1.run_dir}/model/warp", *maps, n_users, n_items, None,
                            no_components=conf.warp.no_components, optimiser=conf.warp.optimiser, seed=conf.warp.seed)
    old, grown = champion.state.item_side, init.state.item_side
    n_old = old.n_features
    assert grown.n_features == n_items > n_old
    np.testing.assert_array_equal(grown.embeddings[:n_old], old.embeddings)
    np.testing.assert_array_equal(grown.emb_accum[:n_old], old.emb_accum)
    np.testing.assert_array_equal(grown.emb_accum[n_old:], 1.0)  # fresh adagrad state
    assert np.abs(grown.embeddings[n_old:]).max() <= 0.5 / conf.warp.no_components
    users = init.state.user_state_frame(spark).toPandas().sort_values("user_idx")
    before = champion.state.user_state_frame(spark).toPandas().sort_values("user_idx")
    np.testing.assert_array_equal(np.stack(users["embeddings"]), np.stack(before["embeddings"]))


def test_a_crash_before_the_pointer_switch_leaves_the_old_pointer_and_champion(scenario, spark):
    day1 = scenario["day1"]
    assert scenario["after"]["crash"] == (day1.run_dir, day1.model_version)
    recs = spark.read.parquet(f"{scenario['after']['crash'][0]}/recommendations")
    assert recs.count() > 0 and recs.columns == ["user_id", "rank", "item_id", "score"]
    assert len(scenario["crashed"]) == 1  # the crashed attempt wrote its own folder, nothing else


def test_rerunning_a_date_replaces_its_crashed_attempt(scenario):
    tmp, day1, day2 = scenario["tmp"], scenario["day1"], scenario["day2"]
    by_date: dict[str, list[str]] = {}
    for version in scenario["versions_day2"]:
        by_date.setdefault(version.tags[registry.DATE_TAG], []).append(version.version)
    assert by_date == {DAY1: [day1.model_version], DAY2: [day2.model_version]}
    assert day2.run_id not in scenario["crashed"]
    assert {p.name for p in (tmp / "nightly" / "runs" / DAY2).iterdir()} >= {day2.run_id}
    assert not scenario["crashed"] & {p.name for p in (tmp / "nightly" / "runs" / DAY2).iterdir()}


def test_a_worse_candidate_is_rejected_with_exit_code_5_and_changes_nothing(scenario):
    client, day2 = scenario["client"], scenario["day2"]
    assert scenario["exit_code"] == cli.EXIT_REJECTED == 5
    assert scenario["after"]["rejected"] == (day2.run_dir, day2.model_version)
    rejected = max(client.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))
    assert int(rejected.version) > int(day2.model_version)
    assert rejected.tags["promoted"] == "false" and rejected.tags["rejected"].startswith("rejected: candidate")
    run = client.get_run(rejected.run_id)
    assert run.data.tags["promoted"] == "false" and run.info.status == "FINISHED"
    # The champion is never deleted, so its date now has it and the rejected candidate.
    assert sorted(v.version for v in client.search_model_versions(f"name = '{NAME}'")
                  if v.tags[registry.DATE_TAG] == DAY2) == sorted([day2.model_version, rejected.version])


def test_the_champion_pyfunc_recommends_without_spark(scenario, spark):
    tmp, day2 = scenario["tmp"], scenario["day2"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    published = spark.read.parquet(f"{day2.run_dir}/recommendations").toPandas()
    user = published["user_id"].iloc[0]
    out = model.predict(pd.DataFrame({"user_id": [user, "nobody"]}))
    assert list(out.columns) == ["user_id", "rank", "item_id", "score", "source"]
    mine = out[out["user_id"] == user]
    expected = published[published["user_id"] == user].sort_values("rank")
    assert (mine["source"] == "model").all()
    assert mine["item_id"].tolist() == expected["item_id"].tolist()
    np.testing.assert_allclose(mine["score"], expected["score"], rtol=1e-4, atol=1e-4)
    cold = out[out["user_id"] == "nobody"]
    assert len(cold) == 10 and (cold["source"] == "popularity").all()
    assert cold["score"].is_monotonic_decreasing
    assert len(model.predict(pd.DataFrame({"user_id": [user]}), params={"k": 3})) == 3
    # The per-user artifact is the folder Spark wrote in the run, one row per user with factors.
    written = spark.read.parquet(f"{day2.run_dir}/pyfunc/users")
    assert written.columns == ["user_id", "vector", "seen"]
    n_users = spark.read.parquet(f"{day2.run_dir}/model/user_factors").count()
    assert written.count() == n_users == len(model.unwrap_python_model().user_rows)


def test_config_names_a_bad_date_and_a_metric_evaluation_does_not_report():
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "conf" / "nightly.yaml", NightlyConfig,
                    ["date=22/11/2026", "promotion.primary_metric=precision_at_20"])
    assert "date: expected YYYY-MM-DD" in str(err.value) and "precision_at_20" in str(err.value)
    conf = load_config(REPO / "conf" / "nightly.yaml", NightlyConfig, ["date=2026-11-22"])
    assert conf.snapshot_path() == "data/nightly/2026-11-22/interactions"
