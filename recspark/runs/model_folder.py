"""The model in a nightly run folder: written for tonight's candidate, read back when it is the champion.

``<run_dir>/model/`` holds ``user_factors`` and ``item_factors`` (original ids
next to indices) and, for WARP, the ``warp`` model the next night warm-starts
from. The champion is scored from the factors alone, so any saved model
(ALS or WARP) can be tonight's yardstick.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from recspark.data.columns import FEATURES, ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.models.fit import FittedModel
from recspark.models.scoring import FactorScorer

#: Item bias of items a model must not recommend (not in today's catalogue, or unknown to the
#: champion): finite, as the Scorer contract requires, and far below any real score.
EXCLUDED_SCORE = np.float32(-1e30)


def write_model(fit: FittedModel, user_map: DataFrame, item_map: DataFrame, run_dir: str) -> None:
    """Write ``fit``'s factors with their ids (and the WARP model) under ``<run_dir>/model``."""
    spark = fit.user_factors.sparkSession
    users = fit.user_factors.select(USER_IDX, FEATURES)
    users.join(user_map, USER_IDX).select(USER_ID, USER_IDX, FEATURES).write.parquet(f"{run_dir}/model/user_factors")
    items = spark.createDataFrame(
        pd.DataFrame({ITEM_IDX: np.arange(len(fit.item_bias), dtype=np.int32),
                      FEATURES: list(fit.item_vectors), "bias": fit.item_bias}),
        f"{ITEM_IDX} int, {FEATURES} array<float>, bias float")
    items.join(item_map, ITEM_IDX).select(ITEM_ID, ITEM_IDX, FEATURES, "bias") \
        .write.parquet(f"{run_dir}/model/item_factors")
    if fit.warp is not None:
        fit.save(f"{run_dir}/model/warp")


def load_champion_scorer(spark: SparkSession, run_dir: str, catalogue: npt.NDArray[np.bool_]) -> FactorScorer:
    """The factors saved by :func:`write_model` in ``run_dir`` as a scorer over tonight's items.

    Ids are stable, so the champion's indices are tonight's; items it never
    saw, and items outside today's ``catalogue``, score :data:`EXCLUDED_SCORE`.
    """
    items = spark.read.parquet(f"{run_dir}/model/item_factors").select(ITEM_IDX, FEATURES, "bias").toPandas()
    idx = items[ITEM_IDX].to_numpy()
    vectors = np.zeros((len(catalogue), len(items[FEATURES].iloc[0])), dtype=np.float32)
    vectors[idx] = np.stack(items[FEATURES].to_numpy())
    bias = np.full(len(catalogue), EXCLUDED_SCORE, dtype=np.float32)
    bias[idx] = items["bias"].to_numpy(np.float32)
    users = spark.read.parquet(f"{run_dir}/model/user_factors").select(USER_IDX, FEATURES)
    return FactorScorer(vectors, users, item_bias=np.where(catalogue, bias, EXCLUDED_SCORE))
