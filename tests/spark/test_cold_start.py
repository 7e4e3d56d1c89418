"""Cold start: items held out whole are ranked from their tags; pure CF cannot rank them."""

from __future__ import annotations

import numpy as np
import pytest

from recspark.config import FeatureSource, SideFeatures, SyntheticSpec
from recspark.data.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, WEIGHT
from recspark.data.features import build_feature_matrix
from recspark.data.indexing import apply_id_maps, build_id_map, map_size
from recspark.data.split import item_holdout_split
from recspark.data.synthetic import interactions_frame, item_tags_frame
from recspark.evaluation.ranking import evaluate_cold_items
from recspark.models.warp.estimator import RankingFM

pytestmark = pytest.mark.spark

SPEC = SyntheticSpec(n_users=1500, n_items=400, n_interactions=40_000, n_clusters=8, seed=11)


@pytest.fixture(scope="module")
def cold(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cold")
    item_tags_frame(spark, SPEC).write.parquet(str(tmp / "tags"))
    raw = interactions_frame(spark, SPEC).select(USER_ID, ITEM_ID, WEIGHT).dropDuplicates([USER_ID, ITEM_ID])
    user_map, item_map = build_id_map(raw, USER_ID, USER_IDX), build_id_map(raw, ITEM_ID, ITEM_IDX)
    train, test = item_holdout_split(apply_id_maps(raw, user_map, item_map), test_item_fraction=0.2, seed=3)
    train, test = train.cache(), test.cache()
    n_items = map_size(item_map)
    features = build_feature_matrix(spark, SideFeatures(sources=[FeatureSource(path=str(tmp / "tags"), group="tag")]),
                                    item_map, ITEM_ID, ITEM_IDX, n_items, str(tmp / "rejects"))
    cold_items = np.array(sorted(r[ITEM_IDX] for r in test.select(ITEM_IDX).distinct().collect()))
    return train, test, user_map, item_map, features, cold_items


def fit(cold, with_features: bool):
    train, _, user_map, item_map, features, _ = cold
    estimator = RankingFM(noComponents=16, maxIter=10, learningRate=0.05, seed=1)
    return estimator.fit_indexed(train, user_map, item_map, item_features=features if with_features else None)


def cold_metrics(cold, model):
    _, test, *_, cold_items = cold
    reps, biases = model.state.item_representations()
    return evaluate_cold_items(reps, biases, model.user_factors_indexed(), test, cold_items, ks=(5,))


def test_the_split_holds_out_whole_items(cold):
    train, test, *_ = cold
    assert not set(r[0] for r in test.select(ITEM_IDX).distinct().collect()) & set(
        r[0] for r in train.select(ITEM_IDX).distinct().collect())


def test_features_rank_cold_items_where_pure_cf_cannot(cold):
    cf, tagged = cold_metrics(cold, fit(cold, False)), cold_metrics(cold, fit(cold, True))
    assert abs(cf["auc"] - 0.5) < 0.1  # untrained identity vectors: chance
    assert tagged["auc"] > 0.7 and tagged["auc"] > cf["auc"] + 0.15
    assert tagged["precision_at_5"] > 1.5 * cf["precision_at_5"]


def test_a_cold_item_is_the_sum_of_its_feature_embeddings(cold):
    *_, features, cold_items = cold
    model = fit(cold, True)
    reps, _ = model.state.item_representations()
    row = features.matrix[cold_items[0]]
    expected = row @ model.state.item_side.embeddings
    np.testing.assert_allclose(reps[cold_items[0]], np.asarray(expected).ravel(), rtol=1e-5, atol=1e-7)
    names, vectors = model.item_feature_vectors()
    assert names == features.names and vectors.shape == (len(names), 16)
