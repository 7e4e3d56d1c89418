"""Spark ALS wrapper: how weights become preferences, and seeded reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recspark.config import AlsConfig
from recspark.data.columns import FEATURES, ITEM_IDX, USER_IDX, WEIGHT
from recspark.models.als import RATING, build_als, factor_frames, fit_spark_als, with_preference

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def train(spark):
    rng = np.random.default_rng(0)
    rows = [(u, int(i), float(rng.integers(1, 20))) for u in range(60) for i in rng.choice(30, 6, replace=False)]
    return spark.createDataFrame(pd.DataFrame(rows, columns=[USER_IDX, ITEM_IDX, WEIGHT]))


@pytest.mark.parametrize("how,expected", [("binary", lambda w: 1.0), ("count", lambda w: w),
                                          ("log1p", lambda w: math.log1p(w))])
def test_preference_from_weights(train, how, expected):
    out = with_preference(train, how).join(train, [USER_IDX, ITEM_IDX]).toPandas()
    np.testing.assert_allclose(out[RATING], [expected(w) for w in out[WEIGHT]], rtol=1e-12)


def test_unknown_confidence_is_rejected(train):
    with pytest.raises(ValueError, match="binary"):
        with_preference(train, "sqrt")


def test_same_seed_same_factors(train):
    conf = AlsConfig(rank=4, max_iter=3, seed=11)
    a = factor_frames(fit_spark_als(train, conf))[1].toPandas().sort_values(ITEM_IDX)
    b = factor_frames(fit_spark_als(train, conf))[1].toPandas().sort_values(ITEM_IDX)
    np.testing.assert_allclose(np.stack(a[FEATURES]), np.stack(b[FEATURES]), rtol=1e-6)
    assert list(a.columns) == [ITEM_IDX, FEATURES]


def test_blocks_default_to_task_slots_unless_pinned(spark):
    als = build_als(AlsConfig(), default_blocks=3)
    assert (als.getNumUserBlocks(), als.getNumItemBlocks()) == (3, 3)
    pinned = build_als(AlsConfig(num_user_blocks=10, num_item_blocks=4), default_blocks=3)
    assert (pinned.getNumUserBlocks(), pinned.getNumItemBlocks()) == (10, 4)
