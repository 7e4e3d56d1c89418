"""RankingMetricEvaluator: each user's transform rows ranked by prediction, values checked by hand."""

from __future__ import annotations

import pytest

from recspark.errors import ConfigError, DataValidationError
from recspark.evaluation.evaluator import RankingMetricEvaluator

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def scored(spark):
    """User a: x (0.9, relevant), y (0.5), z (0.1, relevant); b: x (0.2), w (0.8, relevant); c: nothing relevant."""
    rows = [("a", "x", 0.9, 1.0), ("a", "y", 0.5, 0.0), ("a", "z", 0.1, 2.0),
            ("b", "x", 0.2, 0.0), ("b", "w", 0.8, 1.0), ("c", "x", 0.3, 0.0)]
    return spark.createDataFrame(rows, "user string, item string, prediction float, label double")


def _evaluator(**kwargs) -> RankingMetricEvaluator:
    return RankingMetricEvaluator(userCol="user", itemCol="item", **kwargs)


# a's relevant rows rank 0 and 2 of 3, b's ranks 0 of 2; c has none and is not evaluated.
@pytest.mark.parametrize("metric,k,expected", [
    ("precision_at_k", 1, (1 + 1) / 2),
    ("recall_at_k", 1, (1 / 2 + 1) / 2),
    ("ndcg_at_k", 2, (1 / (1 + 1 / 1.5849625007211562) + 1) / 2),  # IDCG@2 of a: 1 + 1/log2(3)
    ("mrr", 10, 1.0),
    ("auc", 10, ((1 - 1 / 2) + 1) / 2),  # a: one of its two (relevant, other) pairs is misordered
])
def test_each_users_rows_are_ranked_by_prediction(scored, metric, k, expected):
    assert _evaluator(metricName=metric, k=k).evaluate(scored) == pytest.approx(expected, abs=1e-9)


def test_train_pairs_are_no_candidates(scored, spark):
    """(a, x) was seen in training: a's z now ranks 1 of 2 behind y."""
    train = spark.createDataFrame([("a", "x")], "user string, item string")
    assert _evaluator(metricName="mrr", train=train).evaluate(scored) == pytest.approx((1 / 2 + 1) / 2)
    assert _evaluator(metricName="auc", train=train).evaluate(scored) == pytest.approx((0 + 1) / 2)


def test_nan_predictions_ask_for_the_drop_cold_start_strategy(scored):
    with pytest.raises(DataValidationError, match="coldStartStrategy='drop'"):
        _evaluator(metricName="auc").evaluate(scored.selectExpr("user", "item", "label",
                                                                "if(user = 'b', float('nan'), prediction) prediction"))


def test_an_unknown_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="metricName"):
        RankingMetricEvaluator(metricName="rmse")
