"""How interaction weights (summed plays, clicks, ...) become what a trainer sees.

ALS turns the result into confidence ``1 + alpha * r``; WARP/BPR use it as the
per-interaction sample weight. Counts are heavy-tailed, so ``log1p`` is often
the better choice; ``binary`` treats every interaction alike (LightFM's default).
"""

from __future__ import annotations

from typing import Literal

from pyspark.sql import Column
from pyspark.sql import functions as F

from recspark.data.columns import WEIGHT

WeightTransform = Literal["binary", "count", "log1p"]
WEIGHT_TRANSFORMS = ("binary", "count", "log1p")


def transformed_weight(how: str) -> Column:
    """The ``weight`` column mapped by ``how`` (``binary``: 1, ``count``: as is, ``log1p``: log(1 + w))."""
    if how == "binary":
        return F.lit(1.0)
    if how == "count":
        return F.col(WEIGHT).cast("double")
    if how == "log1p":
        return F.log1p(F.col(WEIGHT).cast("double"))
    raise ValueError(f"weight transform must be one of {WEIGHT_TRANSFORMS}, got {how!r}")
