"""RankingFM as a Spark ML citizen beside ALS: any session, Arrow on or off (a plain session's Arrow off
unless a test says otherwise); Spark ML persistence (Pipeline, MLflow's spark flavor and autolog); ALS's
API, checked idiom by idiom against ALS itself and Param by Param; tuning with Spark's
TrainValidationSplit and CrossValidator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.errors import IllegalArgumentException
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import StringIndexer
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recspark.errors import DataValidationError
from recspark.evaluation.evaluator import RankingMetricEvaluator
from recspark.models.warp.estimator import RankingFM, RankingFMModel

pytestmark = pytest.mark.spark

ARROW = "spark.sql.execution.arrow.pyspark.enabled"
ARROW_FALLBACK = "spark.sql.execution.arrow.pyspark.fallback.enabled"


@pytest.fixture(scope="module")
def user_spark(spark):
    """The session a user builds themselves, with Spark's default of Arrow off (restored after the module).

    One SparkContext per process, so it is the shared session, whose ``build_session`` turns Arrow on:
    here every test runs Arrow off but the one that runs both, and the other modules cover Arrow on.
    No fallback either, so the Arrow-on case cannot quietly run without Arrow.
    """
    session = SparkSession.builder.master("local[2]").appName("a user's job").getOrCreate()
    before = {key: session.conf.get(key) for key in (ARROW, ARROW_FALLBACK)}
    session.conf.set(ARROW, "false")
    session.conf.set(ARROW_FALLBACK, "false")
    yield session
    for key, value in before.items():
        session.conf.set(key, value)


@pytest.fixture
def arrow(user_spark, request):
    """Set the session's Arrow mode for one test and restore it afterwards."""
    before = user_spark.conf.get(ARROW)
    user_spark.conf.set(ARROW, request.param)
    yield request.param
    user_spark.conf.set(ARROW, before)


@pytest.fixture(scope="module")
def plays(user_spark):
    """Two taste groups with integer ids (as ALS needs): even users play items 0-7, odd users items 8-15."""
    rng = np.random.default_rng(1)
    rows = [(u, int(i) + (0 if u % 2 == 0 else 8), float(rng.integers(1, 5)))
            for u in range(40) for i in rng.choice(8, 5, replace=False)]
    pdf = pd.DataFrame(rows, columns=["user", "item", "plays"])
    pdf["user_name"], pdf["item_name"] = "u" + pdf["user"].astype(str), "i" + pdf["item"].astype(str)
    return user_spark.createDataFrame(pdf, "user int, item int, plays double, user_name string, item_name string")


def _small_fm(**kwargs) -> RankingFM:
    return RankingFM(noComponents=4, maxIter=3, learningRate=0.1, seed=3, **kwargs)


def _predictions(model, pairs) -> np.ndarray:
    return model.transform(pairs).orderBy("user", "item").toPandas()["prediction"].to_numpy()


@pytest.mark.parametrize("arrow", ["false", "true"], indirect=True)
def test_every_model_operation_works_with_arrow_on_and_off(user_spark, arrow, plays, tmp_path):
    """Spark's default (Arrow off) refused the driver-side arrays: FloatType() can not accept np.float32."""
    assert user_spark.conf.get(ARROW) == arrow
    model = _small_fm(userCol="user", itemCol="item", weightCol="plays").fit(plays)
    pairs = plays.select("user", "item").limit(6)
    predicted = _predictions(model, pairs)
    assert np.isfinite(predicted).all()
    assert model.userFactors.count() == 40 and model.itemFactors.count() == 16
    assert model.recommendForAllUsers(2).count() == 40 and model.recommendForAllItems(2).count() == 16
    assert model.recommendForUserSubset(pairs, 2).count() == pairs.select("user").distinct().count()
    assert model.recommendForItemSubset(pairs, 2).count() == pairs.select("item").distinct().count()
    model.save(str(tmp_path / "m"))
    np.testing.assert_allclose(_predictions(RankingFMModel.load(str(tmp_path / "m")), pairs), predicted, rtol=1e-6)


@pytest.fixture(scope="module")
def pipeline_model(plays):
    """String ids through StringIndexer into RankingFM, the way a user composes stages."""
    return Pipeline(stages=[StringIndexer(inputCol="user_name", outputCol="user_ix"),
                            StringIndexer(inputCol="item_name", outputCol="item_ix"),
                            _small_fm(userCol="user_ix", itemCol="item_ix", weightCol="plays")]).fit(plays)


def _pipeline_predictions(model, plays) -> np.ndarray:
    return model.transform(plays).orderBy("user", "item").toPandas()["prediction"].to_numpy()


def test_a_fitted_pipeline_saves_and_loads_with_spark_ml(pipeline_model, plays, tmp_path):
    pipeline_model.write().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert isinstance(loaded.stages[-1], RankingFMModel) and loaded.stages[-1].uid == pipeline_model.stages[-1].uid
    np.testing.assert_allclose(_pipeline_predictions(loaded, plays), _pipeline_predictions(pipeline_model, plays),
                               rtol=1e-6)


def test_mlflow_spark_flavor_logs_and_loads_the_pipeline(pipeline_model, plays, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        mlflow.set_experiment("rankingfm")
        with mlflow.start_run():
            info = mlflow.spark.log_model(pipeline_model, "model")
        loaded = mlflow.spark.load_model(info.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(_pipeline_predictions(loaded, plays), _pipeline_predictions(pipeline_model, plays),
                               rtol=1e-6)


#: What ``mlflow.pyspark.ml.autolog`` needs to log RankingFM: its allowlist replaces MLflow's (Spark's own
#: models), so it names those too; a PipelineModel is logged only if every stage is listed.
AUTOLOG_ALLOWLIST = ["pyspark.ml.*", "recspark.models.warp.estimator.RankingFMModel"]


def test_mlflow_autolog_logs_a_pipeline_with_rankingfm(plays, tmp_path):
    """Autolog logs the fitted pipeline with its params and a signature, and it loads back and predicts.

    The signature is found by transforming with one input column dropped at a time: RankingFMModel
    must then raise ALS's IllegalArgumentException ("... does not exist"), or no signature is logged.
    """
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.pyspark.ml.autolog(log_model_allowlist=AUTOLOG_ALLOWLIST, log_datasets=False)
    try:
        mlflow.set_experiment("rankingfm-autolog")
        pipeline = Pipeline(stages=[StringIndexer(inputCol="user_name", outputCol="user_ix"),
                                    _small_fm(userCol="user_ix", itemCol="item", weightCol="plays")])
        with mlflow.start_run() as run:
            model = pipeline.fit(plays)
        params = mlflow.get_run(run.info.run_id).data.params
        uri = f"runs:/{run.info.run_id}/model"
        signature = mlflow.models.get_model_info(uri).signature
        loaded = mlflow.spark.load_model(uri)
    finally:
        mlflow.pyspark.ml.autolog(disable=True)
        mlflow.set_tracking_uri(None)
    assert params["RankingFM.noComponents"] == "4" and params["RankingFM.userCol"] == "user_ix"
    assert signature is not None and sorted(signature.inputs.input_names()) == ["item", "user_name"]
    assert isinstance(loaded.stages[-1], RankingFMModel)
    np.testing.assert_allclose(_pipeline_predictions(loaded, plays), _pipeline_predictions(model, plays), rtol=1e-6)
    with pytest.raises(IllegalArgumentException, match="does not exist"):
        model.stages[-1].transform(plays)  # no user_ix: the pipeline's indexer makes it


def test_a_model_saved_in_the_earlier_metadata_json_layout_still_loads(pipeline_model, plays, tmp_path, user_spark):
    """Models saved before RankingFMModel was MLWritable had a metadata.json, no metadata/ (same Parquet)."""
    model = pipeline_model.stages[-1]
    path = tmp_path / "old"
    model.save(str(path))
    new = json.loads(user_spark.read.text(str(path / "metadata")).first()[0])
    shutil.rmtree(path / "metadata")
    legacy = {key: new["recspark"][key] for key in ("recspark_version", "n_users", "n_items", "epochs_done",
                                                    "history", "item_features_shape")}
    (path / "metadata.json").write_text(json.dumps({**legacy, "params": {**new["defaultParamMap"],
                                                                         **new["paramMap"], "batchSize": 256}}))
    loaded = RankingFMModel.load(str(path))
    assert loaded.getOrDefault("noComponents") == 4 and loaded.getUserCol() == "user_ix"
    indexed = PipelineModel(pipeline_model.stages[:2]).transform(plays)
    np.testing.assert_allclose(loaded.transform(indexed).orderBy("user", "item").toPandas()["prediction"],
                               _pipeline_predictions(pipeline_model, plays), rtol=1e-6)


def test_save_refuses_an_existing_path_unless_overwrite(pipeline_model, tmp_path):
    model = pipeline_model.stages[-1]
    model.save(str(tmp_path / "m"))
    with pytest.raises(DataValidationError, match="overwrite"):
        model.save(str(tmp_path / "m"))
    model.write().overwrite().save(str(tmp_path / "m"))
    assert RankingFMModel.load(str(tmp_path / "m")).uid == model.uid


# ALS's usage idioms, run against ALS and RankingFM alike: a difference in the API is a failure here.
ESTIMATORS = {
    "ALS": lambda: ALS(rank=4, maxIter=2, implicitPrefs=True, ratingCol="plays", seed=3),
    "RankingFM": lambda: RankingFM(noComponents=4, maxIter=2, learningRate=0.1, weightCol="plays", seed=3),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_als_usage_idioms_work_the_same_on_als_and_rankingfm(name, plays, user_spark, tmp_path):
    estimator = ESTIMATORS[name]()
    assert estimator.setMaxIter(3) is estimator and estimator.getMaxIter() == 3
    assert estimator.setUserCol("user").getUserCol() == "user"
    assert estimator.setItemCol("item").getItemCol() == "item"
    assert estimator.setSeed(5).getSeed() == 5 and estimator.setCheckpointInterval(4).getCheckpointInterval() == 4
    assert estimator.setPredictionCol("score").getPredictionCol() == "score"
    assert estimator.setColdStartStrategy("drop").getColdStartStrategy() == "drop"
    estimator.write().save(str(tmp_path / "estimator"))
    assert type(estimator).load(str(tmp_path / "estimator")).getMaxIter() == 3

    model = estimator.fit(plays)
    assert model.rank == 4
    for factors in (model.userFactors, model.itemFactors):
        assert {f.name: f.dataType.simpleString() for f in factors.schema if f.name in ("id", "features")} == {
            "id": "int", "features": "array<float>"}
    recs = model.recommendForAllUsers(3)
    assert recs.schema.simpleString() == "struct<user:int,recommendations:array<struct<item:int,rating:float>>>"
    assert recs.count() == 40 and {len(r.recommendations) for r in recs.collect()} == {3}
    by_item = model.recommendForAllItems(2)
    assert by_item.schema.simpleString() == "struct<item:int,recommendations:array<struct<user:int,rating:float>>>"
    assert by_item.count() == 16
    subset = user_spark.createDataFrame([(0, 1), (1, 9), (999, 999)], "user int, item int")
    assert sorted(r.user for r in model.recommendForUserSubset(subset, 2).collect()) == [0, 1]
    assert sorted(r.item for r in model.recommendForItemSubset(subset, 2).collect()) == [1, 9]

    dropped = model.transform(subset)  # coldStartStrategy "drop": the unknown user and item go
    assert sorted((r.user, r.item) for r in dropped.collect()) == [(0, 1), (1, 9)]
    assert dict(dropped.dtypes)["score"] == "float"
    assert model.setColdStartStrategy("nan") is model and model.getColdStartStrategy() == "nan"
    scored = {(r.user, r.item): r.score for r in model.transform(subset).collect()}
    assert np.isnan(scored[(999, 999)]) and np.isfinite(scored[(0, 1)])
    assert model.setPredictionCol("p").transform(subset).columns == ["user", "item", "p"]

    model.write().overwrite().save(str(tmp_path / "model"))
    again = type(model).load(str(tmp_path / "model"))
    assert again.uid == model.uid and again.rank == 4
    pairs = subset.limit(2)
    np.testing.assert_allclose([r.p for r in model.transform(pairs).orderBy("user").collect()],
                               [r.p for r in again.transform(pairs).orderBy("user").collect()], rtol=1e-6)


#: A valid non-default value of each Param that takes one of a few strings. Other strings are column
#: names; numbers move within their range (an int + 1, a float halved, 0.0 to 0.5).
PARAM_CHOICES = {"coldStartStrategy": "drop", "loss": "bpr", "learningSchedule": "adadelta", "strategy": "stratified"}


def _another_valid_value(name: str, default):
    if name in PARAM_CHOICES:
        return PARAM_CHOICES[name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, str):
        return f"{name}_column"
    if isinstance(default, int):
        return default + 1
    return default / 2 if default else 0.5


def test_every_param_has_als_accessors_that_round_trip():
    """ALS's ``setMaxIter(5)`` / ``getMaxIter()`` for every Param of RankingFM, and on the model every getter and
    the setters ALSModel has (the other Params describe the fit). Needs no SparkSession."""
    estimator = RankingFM()
    model = RankingFMModel(state=None, user_map=None, item_map=None)  # a model's Params need none of these
    assert sorted(p.name for p in model.params) == sorted(p.name for p in estimator.params)
    missing = []
    for param in estimator.params:
        name, default = param.name, estimator.getOrDefault(param)
        getter, setter = (f"{prefix}{name[0].upper()}{name[1:]}" for prefix in ("get", "set"))
        settable = [estimator] + ([model] if hasattr(ALSModel, setter) or hasattr(model, setter) else [])
        for instance in (estimator, model):
            missing += [f"{type(instance).__name__}.{method}" for method in (getter, setter)
                        if not hasattr(instance, method) and (method == getter or instance in settable)]
        if missing:
            continue
        value = _another_valid_value(name, default)
        assert value != default, name
        for instance in settable:
            assert getattr(instance, getter)() == default, name
            assert getattr(instance, setter)(value) is instance, name
            assert getattr(instance, getter)() == value and instance.isSet(name), name
        if model not in settable:
            assert getattr(model, getter)() == default, name
    assert not missing, f"Params without ALS's accessors: {missing}"


@pytest.fixture(scope="module")
def labelled(plays):
    """``plays`` plus every item of the other taste group with plays 0: non-relevant rows to rank against."""
    users, items = plays.select("user").distinct(), plays.select("item").distinct()
    other_group = (F.col("user") % 2 == 0) == (F.col("item") >= 8)
    return plays.select("user", "item", "plays").unionByName(
        users.crossJoin(items).where(other_group).withColumn("plays", F.lit(0.0)))


@pytest.mark.parametrize("tuner", ["TrainValidationSplit", "CrossValidator"])
def test_spark_tuners_choose_the_model_that_learned(tuner, labelled):
    """A learning rate of 1e-5 leaves the random initialisation (AUC ~0.5); 0.1 learns the taste groups."""
    fm = RankingFM(userCol="user", itemCol="item", weightCol="plays", noComponents=4, maxIter=10, seed=3,
                   coldStartStrategy="drop")
    grid = ParamGridBuilder().addGrid(fm.learningRate, [1e-5, 0.1]).build()
    evaluator = RankingMetricEvaluator(userCol="user", itemCol="item", labelCol="plays", metricName="auc")
    if tuner == "TrainValidationSplit":
        fitted = TrainValidationSplit(estimator=fm, estimatorParamMaps=grid, evaluator=evaluator, trainRatio=0.75,
                                      seed=1).fit(labelled)
        metrics = fitted.validationMetrics
    else:
        fitted = CrossValidator(estimator=fm, estimatorParamMaps=grid, evaluator=evaluator, numFolds=2,
                                seed=1).fit(labelled)
        metrics = fitted.avgMetrics
    assert metrics[0] < 0.7 and metrics[1] > 0.8
    assert isinstance(fitted.bestModel, RankingFMModel) and fitted.bestModel.getLearningRate() == 0.1


def test_the_readme_snippet_runs(labelled, user_spark, tmp_path):
    """The README's "RankingFM in your own PySpark" code block, executed as written but for its two paths.

    (Spark resolves relative paths against the JVM's directory, which a test cannot move.)
    """
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## RankingFM in your own PySpark", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    paths = {'"plays.parquet"': f'"{tmp_path}/plays.parquet"', '"sqlite:///mlflow.db"': f'"sqlite:///{tmp_path}/mlflow.db"'}
    for relative, absolute in paths.items():
        assert relative in code
        code = code.replace(relative, absolute)
    pdf = labelled.toPandas()
    pdf["user"], pdf["item"] = "u" + pdf["user"].astype(str), "i" + pdf["item"].astype(str)
    pdf.to_parquet(tmp_path / "plays.parquet")
    names: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), names)
    finally:
        mlflow.set_tracking_uri(None)
    plays = names["plays"]
    assert isinstance(names["reloaded"].stages[-1], RankingFMModel)
    np.testing.assert_allclose(_pipeline_predictions(names["reloaded"], plays),
                               _pipeline_predictions(names["model"], plays), rtol=1e-6)
