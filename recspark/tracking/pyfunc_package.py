"""What the pyfunc is packaged from: item-side arrays on the driver, the per-user table from Spark.

The layout both follow is :mod:`recspark.tracking.pyfunc`'s; :func:`recspark.tracking.registry.log_pyfunc`
logs them (the training job into its run, the nightly's ``register_candidate`` into the registry too).
Only O(items x factors) is built on the driver; nothing per user reaches it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recspark.data.columns import FEATURES, ITEM_ID, ITEM_IDX, USER_ID, USER_IDX
from recspark.models.fit import FittedModel


def pyfunc_arrays(fit: FittedModel, item_map: DataFrame, catalogue: npt.NDArray[np.bool_],
                  popularity: npt.NDArray[np.float32]) -> dict[str, Any]:
    """The pyfunc's item-side arrays (see :func:`recspark.tracking.registry.write_model_arrays`).

    Built on the driver: only O(items x factors) (the ``catalogue`` items, in
    column order, and the user feature embeddings). The per-user part is
    :func:`write_pyfunc_users`.
    """
    items = item_map.toPandas().sort_values(ITEM_IDX)
    columns = np.flatnonzero(catalogue)
    names, features = fit.user_feature_embeddings()
    if features is None:
        features = np.zeros((0, fit.item_vectors.shape[1]), np.float32)
    return {"item_ids": items[ITEM_ID].to_numpy()[columns], "item_vectors": fit.item_vectors[columns],
            "item_bias": fit.item_bias[columns], "popularity": popularity[columns],
            "user_feature_names": names, "user_feature_vectors": features}


def write_pyfunc_users(fit: FittedModel, user_map: DataFrame, catalogue: npt.NDArray[np.bool_], seen: DataFrame,
                       path: str) -> str:
    """Write the pyfunc's per-user table to ``path``; returns it.

    One row per user with factors: ``user_id``, ``vector`` and ``seen`` (the
    catalogue columns of the user's ``seen`` items, which the pyfunc excludes).
    It is O(users x factors + interactions), so Spark joins and writes it from
    the executors: only the O(items) item -> column map is broadcast. MLflow
    copies the folder into the model as files.
    """
    spark = fit.user_factors.sparkSession
    columns = np.flatnonzero(catalogue)
    column_of = spark.createDataFrame(
        pd.DataFrame({ITEM_IDX: columns.astype(np.int32), "column": np.arange(len(columns), dtype=np.int32)}),
        f"{ITEM_IDX} int, column int")
    seen_columns = (seen.join(F.broadcast(column_of), ITEM_IDX).groupBy(USER_IDX)
                    .agg(F.array_sort(F.collect_set("column")).alias("seen")))
    users = (fit.user_factors.select(USER_IDX, F.col(FEATURES).cast("array<float>").alias("vector"))
             .join(user_map, USER_IDX)
             .join(seen_columns, USER_IDX, "left")
             .select(USER_ID, "vector", F.coalesce("seen", F.array().cast("array<int>")).alias("seen")))
    users.write.parquet(path)
    return path
