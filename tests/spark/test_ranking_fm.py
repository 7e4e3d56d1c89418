"""The RankingFM estimator: Spark ML surface with original ids, param validation, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from recspark.data.columns import ITEM_ID, USER_ID, WEIGHT
from recspark.data.indexing import apply_id_maps
from recspark.errors import ConfigError
from recspark.models.warp.estimator import RankingFM, RankingFMModel

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def likes(spark):
    """Two taste groups: users 'a*' like items 'x*', users 'b*' like items 'y*' (string ids)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        group = "x" if u % 2 == 0 else "y"
        for i in rng.choice(20, 8, replace=False):
            rows.append((f"{'a' if group == 'x' else 'b'}{u}", f"{group}{i}", 1.0))
    return spark.createDataFrame(pd.DataFrame(rows, columns=["user", "item", "plays"]))


@pytest.fixture(scope="module")
def model(likes):
    return RankingFM(userCol="user", itemCol="item", weightCol="plays", noComponents=8, maxIter=15,
                     learningRate=0.1, numShards=2).fit(likes)


def test_factors_carry_original_ids(model, likes):
    users = model.userFactors.toPandas()
    items = model.itemFactors.toPandas()
    assert set(users["id"]) == {r.user for r in likes.select("user").distinct().collect()}
    assert set(items["id"]) == {r.item for r in likes.select("item").distinct().collect()}
    assert len(users["features"].iloc[0]) == 8 and "bias" in items.columns


@pytest.mark.parametrize("loss", ["warp-kos", "bpr", "logistic"])
def test_every_lightfm_loss_trains_through_the_estimator(likes, loss):
    """k-OS, BPR and logistic (labels from the weight's sign: the other group's items get weight -1)."""
    data = likes
    if loss == "logistic":
        users, items = likes.select("user").distinct(), likes.select("item").distinct()
        other_group = (F.substring("user", 1, 1) == "a") != (F.substring("item", 1, 1) == "x")
        dislikes = users.crossJoin(items).where(other_group).withColumn("plays", F.lit(-1.0))
        data = likes.unionByName(dislikes)
    fitted = RankingFM(userCol="user", itemCol="item", weightCol="plays", loss=loss, k=2, n=4, noComponents=8,
                       maxIter=15 if loss != "warp-kos" else 60, learningRate=0.1).fit(data)
    assert fitted.getOrDefault("loss") == loss
    recs = fitted.recommendForAllUsers(3).toPandas().set_index("user")["recommendations"]
    in_group = [all(r["item"][0] == ("x" if u.startswith("a") else "y") for r in recs[u]) for u in recs.index]
    assert np.mean(in_group) > 0.9, loss


def test_recommendations_follow_the_taste_groups(model):
    recs = model.recommendForAllUsers(5).toPandas()
    assert len(recs) == 60
    first = recs.set_index("user")["recommendations"]
    in_group = [all(r["item"][0] == ("x" if user.startswith("a") else "y") for r in first[user]) for user in first.index]
    assert np.mean(in_group) > 0.9
    assert all(len(r) == 5 for r in first)


def test_recommend_for_user_subset_skips_unknown_users(model, spark):
    subset = spark.createDataFrame(pd.DataFrame({"user": ["a0", "b1", "nobody"]}))
    recs = model.recommendForUserSubset(subset, 3).toPandas()
    assert sorted(recs["user"]) == ["a0", "b1"]


def test_transform_scores_pairs_and_leaves_unknown_ids_null(model, spark):
    pairs = spark.createDataFrame(pd.DataFrame({"user": ["a0", "a0", "zz"], "item": ["x1", "y1", "x1"]}))
    out = model.transform(pairs).toPandas().set_index(["user", "item"])
    assert out.loc[("a0", "x1"), "prediction"] > out.loc[("a0", "y1"), "prediction"]
    assert pd.isna(out.loc[("zz", "x1"), "prediction"])
    users = model.userFactors.toPandas().set_index("id")
    items = model.itemFactors.toPandas().set_index("id")
    expected = np.dot(users.loc["a0", "features"], items.loc["x1", "features"]) + items.loc["x1", "bias"]
    assert out.loc[("a0", "x1"), "prediction"] == pytest.approx(expected, rel=1e-5)


def test_save_load_round_trip_gives_the_same_scores(model, spark, tmp_path):
    model.save(str(tmp_path / "m"))
    loaded = RankingFMModel.load(str(tmp_path / "m"))
    assert loaded.getOrDefault("noComponents") == 8 and loaded.getOrDefault("userCol") == "user"
    pairs = spark.createDataFrame(pd.DataFrame({"user": ["a0", "b1"], "item": ["x1", "y2"]}))
    a = model.transform(pairs).toPandas().sort_values("user")["prediction"].to_numpy()
    b = loaded.transform(pairs).toPandas().sort_values("user")["prediction"].to_numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert loaded.state.epochs_done == 15


def test_a_loaded_model_warm_starts_a_new_fit(model, likes, spark, tmp_path):
    model.save(str(tmp_path / "m"))
    loaded = RankingFMModel.load(str(tmp_path / "m"))
    df = likes.select(F.col("user").alias(USER_ID), F.col("item").alias(ITEM_ID), F.col("plays").alias(WEIGHT))
    train = apply_id_maps(df, loaded.user_map, loaded.item_map)
    estimator = RankingFM(noComponents=8, maxIter=2, learningRate=0.1, numShards=3)
    warm = estimator.fit_indexed(train, loaded.user_map, loaded.item_map, init=loaded)
    assert warm.state.epochs_done == 17
    recs = warm.recommendForAllUsers(5).toPandas().set_index("user_id")["recommendations"]
    in_group = [all(r["item_id"][0] == ("x" if u.startswith("a") else "y") for r in recs[u]) for u in recs.index]
    assert np.mean(in_group) > 0.9  # the warm model kept what the loaded one learned


def test_auto_shards_are_resolved_and_recorded_on_the_model(likes):
    """numShards=0 (the default): a few hundred rows train as one shard."""
    fitted = RankingFM(userCol="user", itemCol="item", noComponents=4, maxIter=1).fit(likes)
    assert fitted.getOrDefault("numShards") == 1 and fitted.state.n_shards == 1


@pytest.mark.parametrize("kwargs,name", [({"learningRate": -1.0}, "learningRate"), ({"maxSampled": 0}, "maxSampled"),
                                         ({"k": 0}, "k"), ({"numThreads": 0}, "numThreads"),
                                         ({"loss": "hinge"}, "loss"), ({"maxIter": 0}, "maxIter"),
                                         ({"learningSchedule": "sgd"}, "learningSchedule")])
def test_bad_params_raise_errors_naming_the_param(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        RankingFM(**kwargs)


def test_fit_names_a_missing_column(likes):
    with pytest.raises(ConfigError, match="userCol"):
        RankingFM(userCol="customer").fit(likes)
