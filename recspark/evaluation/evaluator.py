"""The project's ranking metrics as a Spark ML ``Evaluator``, so TrainValidationSplit and CrossValidator can tune.

Spark's tuners give an evaluator ``model.transform(validation)``: one
prediction per validation (user, item) row and nothing about the rest of the
catalogue. So :class:`RankingMetricEvaluator` ranks **each user's validation
rows among themselves**, by prediction (ties: item id ascending), counts the
rows with ``labelCol > 0`` as relevant, and computes the metric of
:mod:`recspark.evaluation.metrics` on those ranks (precision, recall, NDCG,
MAP at ``k``, MRR or AUC), averaged over the users with a relevant row.

That only measures something when the validation rows include non-relevant
ones: rows with weight 0 (sampled non-interactions, or dislikes) beside the
positives. RankingFM does not train on rows of weight <= 0 (WARP, BPR) and
ALS reads them as zero preferences, so one DataFrame with a ``weight`` column
serves as both the training data and the label. To rank against the whole
catalogue instead, use :func:`recspark.evaluation.ranking.evaluate` on a
fitted model.

Rows with a NaN or null prediction (users or items the fit did not see) are an
error: fit with ``coldStartStrategy="drop"`` so the transform drops them, as
with ALS.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import keyword_only
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasLabelCol, HasPredictionCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recspark.errors import ConfigError, DataValidationError
from recspark.evaluation.metrics import DEFAULT_MAX_ELEMENTS, ranking_metrics
from recspark.evaluation.ranking import _FIXED_POINT_SCALE
from recspark.models.selection import item_ranks

#: metricName values: the evaluation report's names with ``k`` for the cut-off.
METRICS = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "mrr", "auc")


class RankingMetricEvaluator(Evaluator, HasLabelCol, HasPredictionCol, DefaultParamsReadable["RankingMetricEvaluator"],
                             DefaultParamsWritable):
    """Ranking metric of ``model.transform(validation)``, each user's rows ranked by prediction (module docstring).

    ``train`` (optional; a DataFrame, so not a Param and not saved) holds
    (userCol, itemCol) pairs that are no candidates: validation rows with
    such a pair are dropped before ranking. TrainValidationSplit and
    CrossValidator split the rows, so their validation rows never repeat a
    training row; leave it None there.

    Examples
    --------
    >>> evaluator = RankingMetricEvaluator(metricName="ndcg_at_k", k=5, labelCol="plays")  # doctest: +SKIP
    >>> TrainValidationSplit(estimator=RankingFM(weightCol="plays", coldStartStrategy="drop"),
    ...                      estimatorParamMaps=grid, evaluator=evaluator).fit(df)  # doctest: +SKIP
    """

    userCol = Param(Params._dummy(), "userCol", "user id column", TypeConverters.toString)
    itemCol = Param(Params._dummy(), "itemCol", "item id column (breaks ties between equal predictions)",
                    TypeConverters.toString)
    metricName = Param(Params._dummy(), "metricName", f"one of {list(METRICS)}", TypeConverters.toString)
    k = Param(Params._dummy(), "k", "cut-off of the *_at_k metrics, >= 1", TypeConverters.toInt)

    @keyword_only
    def __init__(self, *, userCol: str = "user_id", itemCol: str = "item_id", labelCol: str = "label",
                 predictionCol: str = "prediction", metricName: str = "ndcg_at_k", k: int = 10,
                 train: DataFrame | None = None) -> None:
        super().__init__()
        self._setDefault(userCol="user_id", itemCol="item_id", labelCol="label", predictionCol="prediction",
                         metricName="ndcg_at_k", k=10)
        kwargs = self._input_kwargs
        self.train = kwargs.pop("train", None)
        self._set(**kwargs)
        self._check()

    def _check(self) -> None:
        if self.getOrDefault("metricName") not in METRICS:
            raise ConfigError(f"RankingMetricEvaluator: metricName {self.getOrDefault('metricName')!r} is not one "
                              f"of {list(METRICS)}")
        if self.getOrDefault("k") < 1:
            raise ConfigError(f"RankingMetricEvaluator: k must be >= 1, got {self.getOrDefault('k')}")

    def isLargerBetter(self) -> bool:
        """Every metric here grows with ranking quality."""
        return True

    def _evaluate(self, dataset: DataFrame) -> float:
        self._check()
        user, item, label, prediction = (self.getOrDefault(p) for p in ("userCol", "itemCol", "labelCol",
                                                                          "predictionCol"))
        missing = [c for c in (user, item, label, prediction) if c not in dataset.columns]
        if missing:
            raise DataValidationError(f"RankingMetricEvaluator: column(s) {missing} not in the DataFrame (has "
                                      f"{dataset.columns}); set userCol/itemCol/labelCol/predictionCol")
        rows = dataset.select(F.col(user).cast("string").alias("_u"), F.col(item).cast("string").alias("_i"),
                              F.col(prediction).cast("float").alias("_p"), (F.col(label) > 0).alias("_r"))
        if self.train is not None:
            seen = self.train.select(F.col(user).cast("string").alias("_u"), F.col(item).cast("string").alias("_i"))
            rows = rows.join(seen, ["_u", "_i"], "left_anti")
        per_user = rows.groupBy("_u").agg(F.sort_array(F.collect_list(F.struct("_i", "_p", "_r"))).alias("_rows"))
        name = self.getOrDefault("metricName").replace("_at_k", f"_at_{self.getOrDefault('k')}")
        k = self.getOrDefault("k")

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            return _metric_sums(batches, name, k)

        sums = per_user.select("_rows").mapInArrow(run, "n_users long, total long, n_nonfinite long") \
            .agg(*(F.sum(c).alias(c) for c in ("n_users", "total", "n_nonfinite"))).first()
        if sums["n_nonfinite"]:
            raise DataValidationError(f"RankingMetricEvaluator: {sums['n_nonfinite']} row(s) have a NaN or null "
                                      f"{prediction!r} (ids the model was not fitted on); set "
                                      "coldStartStrategy='drop' on the estimator or model")
        if not sums["n_users"]:
            raise DataValidationError(f"RankingMetricEvaluator: no user has a relevant row ({label!r} > 0) "
                                      "to rank")
        return float(sums["total"] / _FIXED_POINT_SCALE / sums["n_users"])


def _metric_sums(batches: Iterator[pa.RecordBatch], name: str, k: int) -> Iterator[pa.RecordBatch]:
    """Per batch of users: users evaluated, their metric's fixed-point sum, non-finite predictions."""
    for batch in batches:
        lists = batch.column("_rows")
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        values = lists.flatten()
        predictions = values.field("_p").to_numpy(zero_copy_only=False).astype(np.float32)
        relevant = values.field("_r").to_numpy(zero_copy_only=False).astype(bool)
        n_nonfinite = int(np.count_nonzero(~np.isfinite(predictions)))
        if n_nonfinite:  # reported as an error after the aggregation
            yield pa.RecordBatch.from_pydict({"n_users": [0], "total": [0], "n_nonfinite": [n_nonfinite]})
            continue
        starts = np.concatenate([[0], np.cumsum(lengths)])
        n_users = total = 0
        width = max(int(lengths.max(initial=0)), 1)
        block = max(1, DEFAULT_MAX_ELEMENTS // width)
        for first in range(0, len(lengths), block):
            last = min(first + block, len(lengths))
            lo, hi = starts[first], starts[last]
            row = np.repeat(np.arange(last - first), lengths[first:last])
            col = np.arange(lo, hi) - np.repeat(starts[first:last], lengths[first:last])
            scores = np.full((last - first, width), -np.inf, dtype=np.float32)  # padding ranks below every row
            scores[row, col] = predictions[lo:hi]
            hit = relevant[lo:hi]
            n_relevant = np.bincount(row[hit], minlength=last - first)
            evaluated = n_relevant > 0
            if not evaluated.any():
                continue
            ranks = item_ranks(scores, row[hit], col[hit])
            indptr = np.concatenate([[0], np.cumsum(n_relevant[evaluated])])
            metric = ranking_metrics(ranks, indptr, lengths[first:last][evaluated], ks=(k,))[name]
            total += int(np.rint(metric * _FIXED_POINT_SCALE).astype(np.int64).sum())
            n_users += int(evaluated.sum())
        yield pa.RecordBatch.from_pydict({"n_users": [n_users], "total": [total], "n_nonfinite": [0]})

