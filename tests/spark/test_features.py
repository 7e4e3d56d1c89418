"""Side-feature matrices from long-form Parquet: vocabulary, bins, normalisation, min frequency, rejects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recspark.config import FeatureSource, SideFeatures
from recspark.data.features import build_feature_matrix
from recspark.errors import DataValidationError

pytestmark = pytest.mark.spark


@pytest.fixture()
def item_map(spark):
    return spark.createDataFrame(pd.DataFrame({"item_id": ["a", "b", "c"], "item_idx": [0, 1, 2]}),
                                 "item_id string, item_idx int")


def parquet(tmp_path, name, rows, columns=("item_id", "feature", "value")) -> str:
    path = tmp_path / name
    pd.DataFrame(rows, columns=list(columns)).to_parquet(path, index=False)
    return str(path)


def build(spark, item_map, tmp_path, sources, **options):
    conf = SideFeatures(sources=sources, **options)
    return build_feature_matrix(spark, conf, item_map, "item_id", "item_idx", 3, str(tmp_path / "rejects"))


def test_tags_with_identity_and_normalisation(spark, item_map, tmp_path):
    tags = parquet(tmp_path, "tags.parquet", [("a", "rock", 1.0), ("a", "pop", 1.0), ("b", "rock", 1.0),
                                              ("c", "pop", 1.0), ("c", "jazz", 1.0)])
    fm = build(spark, item_map, tmp_path, [FeatureSource(path=tags, group="tag")], min_frequency=2)
    assert fm.names == ["tag_pop", "tag_rock"]  # jazz is on one item only: dropped
    assert fm.n_identity == 3 and fm.feature_index("tag_rock") == 4
    expected = np.array([[1 / 3, 0, 0, 1 / 3, 1 / 3],  # a: identity + pop + rock, each 1/3
                         [0, 1 / 2, 0, 0, 1 / 2],  # b: identity + rock
                         [0, 0, 1 / 2, 1 / 2, 0]])  # c: identity + pop (jazz dropped)
    np.testing.assert_allclose(fm.matrix.toarray(), expected, rtol=1e-6)
    (report,) = fm.reports
    assert (report.rows_read, report.features_kept, report.features_dropped) == (5, 2, 1)
    assert fm.feature_alpha() is None  # no group asked for extra L2


def test_group_alpha_becomes_a_per_column_array(spark, item_map, tmp_path):
    tags = parquet(tmp_path, "tags.parquet", [("a", "rock", 1.0), ("b", "rock", 1.0)])
    genres = parquet(tmp_path, "genres.parquet", [("a", "jazz", 1.0), ("c", "jazz", 1.0)])
    fm = build(spark, item_map, tmp_path, [FeatureSource(path=tags, group="tag", alpha=0.01),
                                           FeatureSource(path=genres, group="genre")])
    assert fm.names == ["genre_jazz", "tag_rock"]
    np.testing.assert_allclose(fm.feature_alpha(), [0, 0, 0, 0, 0.01])  # 3 identity, genre, tag


def test_without_identity_or_normalisation_weights_are_kept(spark, item_map, tmp_path):
    tags = parquet(tmp_path, "tags.parquet", [("a", "rock", 2.0), ("b", "rock", 0.5), ("c", "pop", 1.0),
                                              ("c", "pop", 3.0)])  # duplicate pair: the larger weight
    fm = build(spark, item_map, tmp_path, [FeatureSource(path=tags, group="tag")], identity=False, normalize=False,
               min_frequency=1)
    np.testing.assert_allclose(fm.matrix.toarray(), [[0, 2.0], [0, 0.5], [3.0, 0]])


def test_numeric_values_become_quantile_bins(spark, tmp_path):
    ids = [f"i{k}" for k in range(8)]
    item_map = spark.createDataFrame(pd.DataFrame({"item_id": ids, "item_idx": range(8)}), "item_id string, item_idx int")
    prices = parquet(tmp_path, "price.parquet", [(i, "price", float(p)) for i, p in zip(ids, [5, 1, 7, 3, 3, 8, 2, 6])])
    conf = SideFeatures(sources=[FeatureSource(path=prices, group="shop", numeric=True, bins=4)], identity=False,
                        min_frequency=1)
    fm = build_feature_matrix(spark, conf, item_map, "item_id", "item_idx", 8, str(tmp_path / "rejects"))
    assert fm.names == [f"shop_price_q{b}" for b in range(4)]
    bins = [fm.names[j] for j in fm.matrix.indices]  # one feature per item, in item order
    # Sorted prices 1,2,3,3,5,6,7,8 -> percent ranks 0,1/7,2/7,2/7,4/7,5/7,6/7,1 -> floor(4 * rank), capped at 3.
    assert bins == ["shop_price_q2", "shop_price_q0", "shop_price_q3", "shop_price_q1", "shop_price_q1",
                    "shop_price_q3", "shop_price_q0", "shop_price_q2"]


def test_bad_rows_are_counted_and_written_to_rejects_never_shifting_indices(spark, item_map, tmp_path):
    tags = parquet(tmp_path, "tags.parquet", [("a", "rock", 1.0), (None, "rock", 1.0), ("b", None, 1.0),
                                              ("b", "rock", -1.0), ("c", "pop", float("nan")), ("zz", "rock", 1.0),
                                              ("c", "rock", 1.0)])
    fm = build(spark, item_map, tmp_path, [FeatureSource(path=tags, group="tag")], normalize=False, min_frequency=1)
    (report,) = fm.reports
    assert report.rejects == {"missing_id": 1, "missing_feature": 1, "negative_value": 1, "missing_value": 1,
                              "unknown_id": 1}
    rejects = pd.read_parquet(report.rejects_path)
    assert sorted(rejects["reason"]) == sorted(report.rejects)
    assert fm.names == ["tag_rock"]
    # Identity columns 0..2 untouched; b (only bad rows) has no tag.
    np.testing.assert_allclose(fm.matrix.toarray(), [[1, 0, 0, 1.0], [0, 1, 0, 0.0], [0, 0, 1, 1.0]])


def test_rows_left_without_features_and_identity_off_are_an_error(spark, item_map, tmp_path):
    tags = parquet(tmp_path, "tags.parquet", [("a", "rock", 1.0)])
    with pytest.raises(DataValidationError, match="no feature left and identity features are off"):
        build(spark, item_map, tmp_path, [FeatureSource(path=tags, group="tag")], identity=False, min_frequency=1)


def test_missing_column_names_the_source_setting(spark, item_map, tmp_path):
    tags = parquet(tmp_path, "tags.parquet", [("a", "rock")], columns=("item_id", "tag"))
    with pytest.raises(DataValidationError, match="missing column.*feature_col"):
        build(spark, item_map, tmp_path, [FeatureSource(path=tags, group="tag")])
