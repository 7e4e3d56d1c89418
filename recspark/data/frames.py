"""Driver-side pandas frames to Spark, the same way whatever the session's Arrow setting.

``spark.createDataFrame(pandas_df, schema)`` only goes through Arrow when
``spark.sql.execution.arrow.pyspark.enabled`` is on (recspark's sessions turn
it on; Spark's default is off). Off, Spark checks every value against the
schema in Python and refuses NumPy scalars (``FloatType() can not accept
object np.float32``), so library code that a user calls from their own session
must not depend on it. A ``pyarrow.Table`` always takes the Arrow path, with
the schema's exact types, and is the fast path either way.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession


def frame_from_pandas(spark: SparkSession, pdf: pd.DataFrame, schema: str) -> DataFrame:
    """``pdf`` as a DataFrame of ``schema`` (DDL, e.g. ``"item_idx int, features array<float>"``).

    Columns are cast to the schema's types (int64 -> int, float64 -> float, an
    object column of float32 arrays -> ``array<float>``), in either Arrow mode.
    """
    return spark.createDataFrame(pa.Table.from_pandas(pdf, preserve_index=False), schema)
