"""User side features: shared across shards, merged like the item side; cold users ranked from their features."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from recspark.config import FeatureSource, NightlyConfig, SideFeatures, SyntheticSpec, TrainerParams, load_config
from recspark.data.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, WEIGHT
from recspark.data.features import build_feature_matrix
from recspark.data.indexing import apply_id_maps, build_id_map, map_size
from recspark.data.synthetic import interactions_frame, user_interests_frame
from recspark.errors import ConfigError
from recspark.evaluation.ranking import evaluate
from recspark.models.baselines import PopularityScorer
from recspark.models.warp.estimator import RankingFM, RankingFMModel
from recspark.models.warp.trainer import WarpTrainer
from recspark.models.warp.warm_start import warm_start_model

pytestmark = pytest.mark.spark

REPO = Path(__file__).resolve().parents[2]

SPEC = SyntheticSpec(n_users=1500, n_items=400, n_interactions=40_000, n_clusters=8, clusters_per_user=(1, 1),
                     seed=5)


@pytest.fixture(scope="module")
def cold_users(spark, tmp_path_factory):
    """Every 5th user held out whole (all interactions in test); everyone declares an interest (user feature)."""
    tmp = tmp_path_factory.mktemp("user_features")
    raw = interactions_frame(spark, SPEC).select(USER_ID, ITEM_ID, WEIGHT).dropDuplicates([USER_ID, ITEM_ID])
    user_interests_frame(raw, SPEC).write.parquet(str(tmp / "interests"))
    user_map, item_map = build_id_map(raw, USER_ID, USER_IDX), build_id_map(raw, ITEM_ID, ITEM_IDX)
    indexed = apply_id_maps(raw, user_map, item_map)
    cold = F.pmod(F.col(USER_IDX), F.lit(5)) == 0
    train, test = indexed.where(~cold).cache(), indexed.where(cold).cache()
    features = build_feature_matrix(
        spark, SideFeatures(sources=[FeatureSource(path=str(tmp / "interests"), group="interest")]), user_map,
        USER_ID, USER_IDX, map_size(user_map), str(tmp / "rejects"), side="user", collect=False)
    return train, test, user_map, item_map, features, tmp


def fit(cold_users, features, **params):
    train, _, user_map, item_map, *_ = cold_users
    estimator = RankingFM(noComponents=16, maxIter=8, learningRate=0.05, seed=1, **params)
    return estimator.fit_indexed(train, user_map, item_map, user_features=features)


@pytest.fixture(scope="module")
def with_features(cold_users):
    return fit(cold_users, cold_users[4], numShards=2)


def test_user_feature_entries_stay_distributed_with_names(cold_users):
    features = cold_users[4]
    assert features.matrix is None and features.entries is not None
    assert features.names == [f"interest_c{c}" for c in range(8)]
    assert features.n_identity == map_size(cold_users[2]) and features.n_features == features.n_identity + 8


def test_cold_users_are_ranked_from_their_features_where_pure_cf_cannot(spark, cold_users, with_features):
    train, test, *_ = cold_users
    pure_cf = fit(cold_users, None, numShards=2)
    popularity = evaluate(PopularityScorer.fit(train, SPEC.n_items), train, test, ks=(5,))["precision_at_5"]
    cf = evaluate(pure_cf.scorer(), train, test, ks=(5,))["precision_at_5"]
    tagged = evaluate(with_features.scorer(), train, test, ks=(5,))["precision_at_5"]
    # Cold users are in the model (their features give them a row) and are scored.
    assert with_features.user_factors_indexed().where(F.pmod(USER_IDX, F.lit(5)) == 0).count() > 200
    assert tagged > 1.5 * popularity and tagged > cf + 0.05, (tagged, cf, popularity)


def test_a_cold_users_vector_is_the_weighted_sum_of_its_feature_rows(spark, cold_users, with_features):
    state = with_features.state
    rows = state.user_state_frame(spark).where(F.pmod(USER_IDX, F.lit(5)) == 0).limit(20).toPandas()
    factors = with_features.user_factors_indexed().toPandas().set_index(USER_IDX)
    shared = state.user_shared.embeddings
    for _, row in rows.iterrows():
        expected = row["own_weight"] * np.asarray(row["embeddings"]) + sum(
            w * shared[c] for c, w in zip(row["feature_cols"], row["feature_weights"]))
        # Normalised rows: the own row and the one interest share the weight.
        assert row["own_weight"] == pytest.approx(0.5) and list(row["feature_weights"]) == [0.5]
        np.testing.assert_allclose(factors.loc[row[USER_IDX], "features"], expected, rtol=1e-5, atol=1e-6)


def test_model_with_user_features_saves_loads_and_warm_starts(spark, cold_users, with_features):
    train, _, user_map, item_map, features, tmp = cold_users
    path = str(tmp / "model")
    with_features.save(path)
    loaded = RankingFMModel.load(path)
    assert loaded.user_feature_names == features.names
    np.testing.assert_array_equal(loaded.state.user_shared.embeddings, with_features.state.user_shared.embeddings)
    a = with_features.user_factors_indexed().toPandas().sort_values(USER_IDX)
    b = loaded.user_factors_indexed().toPandas().sort_values(USER_IDX)
    np.testing.assert_allclose(np.stack(a["features"]), np.stack(b["features"]), rtol=1e-6)
    warm = RankingFM(noComponents=16, maxIter=1, seed=1, numShards=3).fit_indexed(
        train, user_map, item_map, user_features=features, init=loaded)
    assert warm.state.epochs_done == 9
    with pytest.raises(ConfigError, match="user side features"):
        RankingFM(noComponents=16, maxIter=1, seed=1).fit_indexed(train, user_map, item_map, init=loaded)


def test_nightly_warm_start_carries_user_feature_rows_by_name(spark, cold_users, with_features):
    """Tonight's vocabulary lost interest c0 and gained a new one: known rows keep state, the new one is fresh."""
    train, _, user_map, item_map, features, tmp = cold_users
    path = str(tmp / "champion")
    with_features.save(path)
    tonight = dataclasses.replace(features, names=[*features.names[1:], "interest_new"])
    conf = load_config(REPO / "conf" / "nightly.yaml", NightlyConfig, ["warp.no_components=16", "date=2026-11-22"])
    init = warm_start_model(spark, path, user_map, item_map, map_size(user_map), map_size(item_map), None, tonight,
                            no_components=conf.warp.no_components, optimiser=conf.warp.optimiser, seed=conf.warp.seed)
    old, new = with_features.state.user_shared, init.state.user_shared
    assert init.user_feature_names == tonight.names and new.n_features == 8
    for name in ("embeddings", "emb_accum", "biases", "bias_accum"):
        np.testing.assert_array_equal(getattr(new, name)[:7], getattr(old, name)[1:])
    np.testing.assert_array_equal(new.emb_accum[7], 1.0)  # fresh adagrad state
    warm = RankingFM(noComponents=16, maxIter=1, seed=1, numShards=2).fit_indexed(
        train, user_map, item_map, user_features=tonight, init=init)
    assert warm.state.epochs_done == 9 and warm.user_feature_names == tonight.names


def test_stratified_strategy_refuses_user_features(spark, cold_users):
    train, _, user_map, item_map, features, _ = cold_users
    trainer = WarpTrainer(spark, RankingFM().kernel_params(), TrainerParams(no_components=4, epochs=1,
                                                                               strategy="stratified"))
    with pytest.raises(ConfigError, match="no user features"):
        trainer.fit(train, map_size(user_map), map_size(item_map), user_features=features)
