"""``RankingFM``: a Spark ML estimator for LightFM-style WARP/BPR, beside ``pyspark.ml`` ALS.

A user (item) is represented by the sum of its feature embeddings — with no
side features, one identity feature per user/item, so the model is plain
matrix factorisation with item biases. The loss decides what is optimised:

- ``warp`` (Weston et al. 2011, "WSABIE"): samples negatives until one scores
  within a margin of 1 of the positive; the update is weighted by
  ``log(floor((n_items - 1) / n_draws))``, an estimate of the positive's rank,
  so it optimises the top of the list (precision@k). The default.
- ``bpr`` (Rendle et al. 2009): one random negative per positive, maximising
  ``log sigmoid(s_pos - s_neg)``; optimises AUC.

Training runs on the cluster with :class:`~recspark.models.warp.trainer.WarpTrainer`
(users sharded, item parameters broadcast and merged every epoch). Ids may be
strings or integers; the fitted model keeps the id maps, so every output uses
the original ids.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import typing
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark import keyword_only
from pyspark.errors import IllegalArgumentException
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasPredictionCol
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

import recspark
from recspark.data import fs
from recspark.data.columns import (
    FEATURES,
    ITEM_ID,
    ITEM_IDX,
    RANK,
    SCORE,
    USER_ID,
    USER_IDX,
    WEIGHT,
)
from recspark.data.features import FeatureMatrix
from recspark.data.frames import frame_from_pandas
from recspark.data.indexing import IdSource, apply_id_maps, build_id_maps, load_id_map, save_id_map
from recspark.config import KernelParams, TrainerParams, field_problems
from recspark.errors import ConfigError, DataValidationError
from recspark.models.scoring import FactorScorer
from recspark.models.topk import recommend, recommend_users
from recspark.models.warp.state import SideParams
from recspark.models.warp.trainer import (
    WarpState,
    WarpTrainer,
)

#: Params of models saved by earlier versions that no longer exist; ignored on load
#: (``batchSize``: the vectorised kernel's mini-batch, gone with the compiled per-sample kernel).
_RETIRED_PARAMS = frozenset({"batchSize"})


def _spark_name(field: dataclasses.Field) -> str:
    """A hyperparameter's Param name: the one it declares (``learningSchedule``), else its name in camelCase."""
    head, *rest = field.name.split("_")
    return field.metadata.get("spark") or head + "".join(part.title() for part in rest)


#: Param name -> (declaring dataclass, field): every hyperparameter of KernelParams and TrainerParams
#: (recspark.config declares them once) is a Param of the same default, range and doc.
_HYPERPARAMETERS: dict[str, tuple[type, dataclasses.Field]] = {
    _spark_name(f): (owner, f) for owner in (KernelParams, TrainerParams) for f in dataclasses.fields(owner)}
_CONVERTERS = {int: TypeConverters.toInt, float: TypeConverters.toFloat, str: TypeConverters.toString,
               bool: TypeConverters.toBoolean}


def _value_type(owner: type, field: dataclasses.Field) -> type:
    """``int`` for ``int | None``, ``str`` for a ``Literal`` of strings: what the Param holds."""
    tp = typing.get_type_hints(owner)[field.name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return type(args[0])
    return args[0] if args else tp


def _optional(owner: type, field: dataclasses.Field) -> bool:
    """Optional settings (null: automatic) are 0 as Params, which hold no None."""
    return type(None) in typing.get_args(typing.get_type_hints(owner)[field.name])


def _to_param(owner: type, field: dataclasses.Field, value: Any) -> Any:
    return 0 if value is None and _optional(owner, field) else value


#: ALS's values of ``coldStartStrategy``.
_COLD_START_STRATEGIES = ("nan", "drop")


class MissingColumnError(ConfigError, IllegalArgumentException):
    """An input column ``fit`` or ``transform`` needs is not in the DataFrame.

    A :class:`~recspark.errors.ConfigError`, and the ``IllegalArgumentException``
    ALS raises, worded as ALS's ("... does not exist"): tools that find a model's
    input columns by dropping one at a time rely on both, as MLflow's autolog does
    to log the model's signature.
    """

    def __init__(self, message: str) -> None:
        IllegalArgumentException.__init__(self, message=message)
        ConfigError.__init__(self, message)


def _require_columns(dataset: DataFrame, columns: dict[str, str], where: str) -> None:
    """Raise MissingColumnError unless ``dataset`` has every column of ``{param: column}`` ('' is none)."""
    missing = [f"{param} {c!r}" for param, c in columns.items() if c and c not in dataset.columns]
    if missing:
        raise MissingColumnError(f"{where}: {', '.join(missing)} does not exist in the DataFrame (its columns: "
                                 f"{dataset.columns}); set the column Params")


class _RankingFMParams(HasPredictionCol):
    """Params shared by the estimator and the fitted model: the columns, then every hyperparameter."""

    userCol = Param(Params._dummy(), "userCol", "user id column (string or integer)", TypeConverters.toString)
    itemCol = Param(Params._dummy(), "itemCol", "item id column (string or integer)", TypeConverters.toString)
    weightCol = Param(Params._dummy(), "weightCol", "sample weight column; '' weighs every row 1",
                      TypeConverters.toString)
    coldStartStrategy = Param(Params._dummy(), "coldStartStrategy",
                              "transform's rows whose user or item was not in the training data: 'nan' gives "
                              "them a NaN prediction, 'drop' drops them (as ALS; 'drop' keeps evaluators "
                              "finite)", TypeConverters.toString)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(**_DEFAULTS)

    def _values(self, owner: type) -> dict[str, Any]:
        """``owner``'s fields from the Params (0 back to None for optional ones)."""
        values = {}
        for name, (declared, f) in _HYPERPARAMETERS.items():
            if declared is owner:
                value = self.getOrDefault(name)
                values[f.name] = None if value == 0 and _optional(owner, f) else value
        return values

    def kernel_params(self) -> KernelParams:
        """The kernel's parameters, from the Params."""
        return KernelParams(**self._values(KernelParams))

    def trainer_params(self) -> TrainerParams:
        """The trainer's parameters, from the Params."""
        return TrainerParams(**self._values(TrainerParams))

    def _validate(self) -> None:
        """Every problem at once, each under its Param name (the checks are the YAML loader's)."""
        spark_names = {f.name: name for name, (_, f) in _HYPERPARAMETERS.items()}
        problems = [problem for owner in (KernelParams, TrainerParams)
                    for problem in field_problems(owner, self._values(owner), label=spark_names.__getitem__)]
        if self.getOrDefault("coldStartStrategy") not in _COLD_START_STRATEGIES:
            problems.append(f"coldStartStrategy: {self.getOrDefault('coldStartStrategy')!r} is not one of "
                            f"{list(_COLD_START_STRATEGIES)}")
        if problems:
            raise ConfigError(f"{type(self).__name__}: " + "; ".join(problems))


for _name, (_owner, _field) in _HYPERPARAMETERS.items():
    setattr(_RankingFMParams, _name, Param(Params._dummy(), _name, _field.metadata["doc"],
                                           _CONVERTERS[_value_type(_owner, _field)]))
#: Params a fitted model may change, as ALSModel's setters allow (the rest describe the fit).
_MODEL_PARAMS = ("userCol", "itemCol", "predictionCol", "coldStartStrategy")
_DEFAULTS: dict[str, Any] = {"userCol": "user_id", "itemCol": "item_id", "weightCol": "",
                             "predictionCol": "prediction", "coldStartStrategy": "nan",
                             **{name: _to_param(owner, f, f.default) for name, (owner, f) in _HYPERPARAMETERS.items()}}


def _accessor(prefix: str, name: str) -> str:
    return f"{prefix}{name[0].upper()}{name[1:]}"


for _name in _DEFAULTS:  # ALS's getters: getMaxIter(), getUserCol()
    setattr(_RankingFMParams, _accessor("get", _name), lambda self, _n=_name: self.getOrDefault(_n))


class RankingFM(Estimator, _RankingFMParams, DefaultParamsWritable, DefaultParamsReadable["RankingFM"]):
    """WARP/BPR with LightFM semantics, trained across a Spark cluster (see the module docstring).

    Takes the column Params and every hyperparameter of
    :class:`~recspark.config.KernelParams` and
    :class:`~recspark.config.TrainerParams` as a keyword, in camelCase
    (``learningRate``; ``optimiser`` is ``learningSchedule``, ``epochs`` is
    ``maxIter``; optional settings take 0 for automatic).

    Examples
    --------
    >>> model = RankingFM(loss="warp", noComponents=32, maxIter=10).fit(likes)  # doctest: +SKIP
    >>> model.recommendForAllUsers(10).show()  # doctest: +SKIP

    Notes
    -----
    With ``warp``, ``warp-kos`` and ``bpr``, rows of weight <= 0 are
    non-interactions: their ids join the model, but they are not trained on
    and may be drawn as negatives (``logistic`` reads them as 0 labels). So
    one DataFrame can carry the positives and the zeros that
    :class:`~recspark.evaluation.evaluator.RankingMetricEvaluator` ranks them
    against in TrainValidationSplit/CrossValidator.

    The estimator only holds Params, so Spark ML's default writer saves it
    (``RankingFM.load(path)``; a Pipeline or CrossValidator saves it too).
    """

    @keyword_only
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, **kwargs: Any) -> RankingFM:
        """Set any of the constructor's keyword params; invalid values raise ConfigError naming the param."""
        known = [p.name for p in self.params]
        unknown = [name for name in kwargs if name not in known]
        if unknown:
            hints = [f"{name!r}" + "".join(f" (did you mean {close!r}?)"
                                          for close in difflib.get_close_matches(name, known, n=1))
                     for name in unknown]
            raise ConfigError(f"{type(self).__name__}: unknown param {', '.join(hints)}")
        self._set(**self._input_kwargs)
        self._validate()
        return self

    @classmethod
    def from_params(cls, params: KernelParams | TrainerParams, *more: KernelParams | TrainerParams,
                    **columns: str) -> RankingFM:
        """The estimator with the hyperparameters of ``params`` (a :class:`~recspark.config.WarpConfig` has all)."""
        values = {name: _to_param(owner, f, getattr(p, f.name))
                  for p in (params, *more) for name, (owner, f) in _HYPERPARAMETERS.items() if isinstance(p, owner)}
        return cls(**values, **columns)


    def _fit(self, dataset: DataFrame) -> RankingFMModel:
        self._validate()  # again: copy(extra), as TrainValidationSplit's grid does, bypasses setParams
        user_col, item_col, weight_col = (self.getOrDefault(p) for p in ("userCol", "itemCol", "weightCol"))
        _require_columns(dataset, {"userCol": user_col, "itemCol": item_col, "weightCol": weight_col},
                         "RankingFM.fit")
        weight = F.col(weight_col).cast("double") if weight_col else F.lit(1.0)
        df = dataset.select(F.col(user_col).cast("string").alias(USER_ID),
                            F.col(item_col).cast("string").alias(ITEM_ID), weight.alias(WEIGHT))
        (user_map, n_users), (item_map, n_items) = build_id_maps(
            [IdSource(df, USER_ID, USER_IDX), IdSource(df, ITEM_ID, ITEM_IDX)])
        user_map, item_map = user_map.cache(), item_map.cache()
        train = apply_id_maps(df, user_map, item_map)
        if self.getOrDefault("loss") != "logistic":
            # WARP/BPR learn nothing from weight <= 0 rows, and as known positives they would never be
            # sampled as negatives: they are non-interactions (e.g. the zeros a ranking evaluator needs).
            train = train.where(F.col(WEIGHT) > 0)
        model = self.fit_indexed(train, user_map, item_map, n_users=n_users, n_items=n_items)
        model.id_types = tuple(dataset.schema[c].dataType.simpleString() for c in (user_col, item_col))
        return model

    def fit_indexed(self, train: DataFrame, user_map: DataFrame, item_map: DataFrame, *,
                    n_users: int | None = None, n_items: int | None = None,
                    init: RankingFMModel | None = None,
                    item_features: FeatureMatrix | None = None,
                    user_features: FeatureMatrix | None = None,
                    on_epoch: Callable[[int, dict[str, float], WarpState | None], None] | None = None,
                    state_every: int = 0) -> RankingFMModel:
        """Fit on already indexed interactions (``user_idx``, ``item_idx``, ``weight``), as the pipeline does.

        ``init`` warm-starts from a previous model (its users keep their
        parameters and optimiser state, new users start fresh, training
        continues for ``maxIter`` more epochs); ``item_features`` (rows =
        item indices, see :mod:`recspark.data.features`) makes an item the
        sum of its features' embeddings, identity only when None;
        ``user_features`` does the same for users (its entries stay
        distributed; users with features but no interactions get a
        representation from their features: cold start);
        ``on_epoch(epoch, stats, state)`` is called after every epoch
        (progress, learning curves); ``state`` is only given every
        ``state_every`` epochs (and at checkpoints): see ``WarpTrainer.fit``.
        """
        n_users = n_users if n_users is not None else user_map.count()
        n_items = n_items if n_items is not None else item_map.count()
        kernel = self.kernel_params()
        trainer = WarpTrainer(train.sparkSession, kernel, self.trainer_params())
        state = trainer.fit(train, n_users, n_items, init=init.state if init else None, on_epoch=on_epoch, state_every=state_every,
                            item_features=item_features.matrix if item_features else None,
                            item_feature_alpha=item_features.feature_alpha() if item_features else None,
                            user_features=user_features)
        # The model records what was used, so auto (0) settings are visible and a refit repeats them.
        names = item_features.names if item_features else (init.item_feature_names if init else [])
        user_names = user_features.names if user_features else []
        model = self._copyValues(RankingFMModel(state, user_map, item_map, names, user_names))
        return model._set(numShards=state.n_shards)


# ALS's setters (setMaxIter(10)), checked like setParams; and the keywords in help(RankingFM).
for _name in _DEFAULTS:
    setattr(RankingFM, _accessor("set", _name), lambda self, value, _n=_name: self.setParams(**{_n: value}))
RankingFM.__init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value) for name, value in _DEFAULTS.items()])


class RankingFMModel(Model, _RankingFMParams, MLWritable, MLReadable["RankingFMModel"]):
    """A fitted :class:`RankingFM`: factors, recommendations and pair scores with the original ids.

    Its outputs follow ``pyspark.ml.recommendation.ALSModel``: ``userFactors``
    and ``itemFactors`` (``id``, ``features``, plus the item ``bias`` ALS has
    not), ``recommendFor{AllUsers,UserSubset,AllItems,ItemSubset}`` with
    ``recommendations: array<struct<item, rating>>`` (``rating`` is the
    model's score ``user · item + item bias``, named as ALS names it, not a
    predicted rating), ``transform`` adding ``predictionCol``, and ``rank``.
    Ids come back in the type the fit was given (an ``int`` column gives int
    ids), which ALS needs them in.

    It is ``MLWritable``/``MLReadable``: ``model.write().overwrite().save(path)``,
    ``RankingFMModel.load(path)`` (the active session), and so inside a saved
    ``PipelineModel`` or ``mlflow.spark.log_model``.
    """

    def __init__(self, state: WarpState, user_map: DataFrame, item_map: DataFrame,
                 item_feature_names: list[str] | None = None, user_feature_names: list[str] | None = None) -> None:
        super().__init__()
        self.state = state
        self.user_map = user_map
        self.item_map = item_map
        # Side feature names; their columns follow the identity ones (if any) in state.item_features.
        self.item_feature_names = list(item_feature_names or [])
        # User side feature names, in the order of state.user_shared's rows.
        self.user_feature_names = list(user_feature_names or [])
        # Spark types of the user and item id columns the fit was given; outputs cast the ids back.
        self.id_types: tuple[str, str] = ("string", "string")

    @property
    def n_item_identity(self) -> int:
        """Identity columns ahead of the side features in the item feature matrix (0 or n_items)."""
        return self.state.item_features.shape[1] - len(self.item_feature_names)

    def item_feature_vectors(self) -> tuple[list[str], np.ndarray]:
        """Side feature names and their embeddings ``[n_features, k]`` (e.g. tag vectors)."""
        start = self.n_item_identity
        return self.item_feature_names, self.state.item_side.embeddings[start:]

    @property
    def rank(self) -> int:
        """Length of the user and item vectors (ALSModel's ``rank``; ``noComponents`` here)."""
        return self.state.item_side.no_components

    @property
    def _spark(self) -> SparkSession:
        return self.user_map.sparkSession

    # -- factors

    def user_factors_indexed(self) -> DataFrame:
        """``user_idx``, ``features`` (the user representation), ``bias``."""
        return self.state.user_factors(self._spark)

    def item_factors_indexed(self) -> DataFrame:
        """``item_idx``, ``features`` (sum of the item's feature embeddings), ``bias``. O(items) on the driver."""
        reps, biases = self.state.item_representations()
        pdf = pd.DataFrame({ITEM_IDX: np.arange(len(reps), dtype=np.int32), FEATURES: list(reps),
                            "bias": biases.astype(np.float32)})
        return frame_from_pandas(self._spark, pdf, f"{ITEM_IDX} int, {FEATURES} array<float>, bias float")

    @property
    def userFactors(self) -> DataFrame:
        """``id`` (original user id), ``features`` array<float>, ``bias`` float."""
        return self.user_factors_indexed().join(self.user_map, USER_IDX).select(
            self._id("user").alias("id"), FEATURES, "bias")

    @property
    def itemFactors(self) -> DataFrame:
        """``id`` (original item id), ``features`` array<float>, ``bias`` float."""
        return self.item_factors_indexed().join(self.item_map, ITEM_IDX).select(
            self._id("item").alias("id"), FEATURES, "bias")

    def _id(self, side: str) -> Column:
        """The original ``side`` ("user"/"item") id of a row joined with the id map, in the fit's type."""
        return F.col(USER_ID if side == "user" else ITEM_ID).cast(self.id_types[side == "item"])

    def scorer(self) -> FactorScorer:
        """The model as a :class:`FactorScorer` (``user · item + item bias``) for evaluation and top-k."""
        return self.state.scorer(self.user_factors_indexed())

    # -- recommendations and scores

    def recommendForAllUsers(self, numItems: int) -> DataFrame:
        """Top ``numItems`` per user: ``userCol``, ``recommendations`` array<struct<itemCol, rating>>.

        Like ALS, items the user interacted with are not excluded (the model
        does not keep the training data); use
        :func:`recspark.models.topk.recommend` with ``train`` to exclude them.
        """
        return self._recommend(self.user_map.select(USER_IDX), numItems)

    def recommendForUserSubset(self, dataset: DataFrame, numItems: int) -> DataFrame:
        """Top ``numItems`` for the users in ``dataset[userCol]`` (unknown users are skipped)."""
        users = dataset.select(F.col(self.getOrDefault("userCol")).cast("string").alias(USER_ID)).distinct()
        return self._recommend(users.join(self.user_map, USER_ID).select(USER_IDX), numItems)

    def recommendForAllItems(self, numUsers: int) -> DataFrame:
        """Top ``numUsers`` per item: ``itemCol``, ``recommendations`` array<struct<userCol, rating>>."""
        return self._nest(recommend_users(self.scorer(), k=numUsers), by="item")

    def recommendForItemSubset(self, dataset: DataFrame, numUsers: int) -> DataFrame:
        """Top ``numUsers`` for the items in ``dataset[itemCol]`` (unknown items are skipped)."""
        items = dataset.select(F.col(self.getOrDefault("itemCol")).cast("string").alias(ITEM_ID)).distinct()
        idx = items.join(self.item_map, ITEM_ID).select(ITEM_IDX).toPandas()[ITEM_IDX].to_numpy()
        return self._nest(recommend_users(self.scorer(), k=numUsers, items=idx), by="item")

    def _recommend(self, users: DataFrame, k: int) -> DataFrame:
        empty = self._spark.createDataFrame([], f"{USER_IDX} int, {ITEM_IDX} int")
        return self._nest(recommend(self.scorer(), empty, k=k, users=users, exclude_train=False), by="user")

    def _nest(self, recs: DataFrame, by: str) -> DataFrame:
        """Top-k rows (``user_idx``, ``item_idx``, ``rank``, ``score``) as one row per ``by`` side, ALS's shape."""
        other = "item" if by == "user" else "user"
        key_col, other_col = (self.getOrDefault(f"{side}Col") for side in (by, other))
        recs = recs.join(F.broadcast(self.item_map), ITEM_IDX).join(self.user_map, USER_IDX)
        ranked = F.array_sort(F.collect_list(F.struct(RANK, self._id(other).alias(other_col),
                                                      F.col(SCORE).alias("rating"))))
        return recs.groupBy(self._id(by).alias(key_col)).agg(
            F.transform(ranked, lambda s: F.struct(s[other_col].alias(other_col), s["rating"].alias("rating")))
            .alias("recommendations"))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        """Add ``predictionCol`` = user · item + item bias per (userCol, itemCol) row; unknown ids per coldStartStrategy."""
        user_col, item_col, prediction = (self.getOrDefault(p) for p in ("userCol", "itemCol", "predictionCol"))
        _require_columns(dataset, {"userCol": user_col, "itemCol": item_col}, "RankingFMModel.transform")
        users = self.user_factors_indexed().join(self.user_map, USER_IDX).select(
            F.col(USER_ID).alias("_uid"), F.col(FEATURES).alias("_uf"))
        items = self.item_factors_indexed().join(self.item_map, ITEM_IDX).select(
            F.col(ITEM_ID).alias("_iid"), F.col(FEATURES).alias("_if"), F.col("bias").alias("_ib"))
        joined = (dataset
                  .join(users, F.col(user_col).cast("string") == F.col("_uid"), "left")
                  .join(F.broadcast(items), F.col(item_col).cast("string") == F.col("_iid"), "left"))
        if self.getOrDefault("coldStartStrategy") == "drop":
            joined = joined.where(F.col("_uf").isNotNull() & F.col("_if").isNotNull())
        dot = F.aggregate(F.zip_with("_uf", "_if", lambda a, b: a * b), F.lit(0.0).cast("float"),
                          lambda acc, x: acc + x)
        score = F.coalesce(dot + F.col("_ib"), F.lit(float("nan")).cast("float"))
        return joined.withColumn(prediction, score).drop("_uid", "_uf", "_iid", "_if", "_ib")

    # -- persistence

    def write(self) -> MLWriter:
        """Spark ML's writer: ``write().overwrite().save(path)``; ``save(path)`` refuses an existing path."""
        return _RankingFMModelWriter(self)

    @classmethod
    def read(cls) -> MLReader[RankingFMModel]:
        """Spark ML's reader: ``read().session(spark).load(path)``; ``load(path)`` uses the active session."""
        return _RankingFMModelReader()

    def _save_to(self, spark: SparkSession, root: str) -> None:
        """Write the model's arrays and id maps as Parquet under ``root``, then the metadata (last: complete).

        Everything goes through Spark or Hadoop's FileSystem API, so ``root``
        may be any URI Spark writes (local, ``hdfs://``, ``s3a://``).
        """
        features = sp.coo_matrix(self.state.item_features)
        _write_side(spark, self.state.item_side, f"{root}/item_side")
        entries = pd.DataFrame({"row": features.row.astype(np.int32), "col": features.col.astype(np.int32),
                                "value": features.data.astype(np.float32)})
        frame_from_pandas(spark, entries, "row int, col int, value float").write.parquet(f"{root}/item_features")
        _write_vocab(spark, self.item_feature_names, self.n_item_identity, f"{root}/item_feature_vocab")
        self.state.user_state_frame(spark).write.parquet(f"{root}/user_state")
        if self.state.user_shared is not None:
            _write_side(spark, self.state.user_shared, f"{root}/user_shared")
        _write_vocab(spark, self.user_feature_names, 0, f"{root}/user_feature_vocab")
        save_id_map(self.user_map, f"{root}/id_maps/users")
        save_id_map(self.item_map, f"{root}/id_maps/items")
        extra = {"recspark_version": recspark.__version__, "n_users": self.state.n_users,
                 "n_items": self.state.n_items, "epochs_done": self.state.epochs_done,
                 "history": self.state.history, "item_features_shape": list(features.shape),
                 "id_types": list(self.id_types)}
        DefaultParamsWriter.saveMetadata(self, root, spark, extraMetadata={_METADATA_KEY: extra})

    @classmethod
    def _load_from(cls, spark: SparkSession, root: str) -> RankingFMModel:
        """Read a model written by :meth:`write` (or by ``save`` before it was Spark ML's; see ``_read_metadata``)."""
        meta, params, defaults = _read_metadata(spark, root)
        entries = spark.read.parquet(f"{root}/item_features").toPandas()
        features = sp.csr_matrix((entries["value"].to_numpy(np.float32), (entries["row"], entries["col"])),
                                 shape=tuple(meta["item_features_shape"]))
        vocab = spark.read.parquet(f"{root}/item_feature_vocab").toPandas().sort_values("feature_idx")
        user_vocab = _read_vocab(spark, f"{root}/user_feature_vocab")
        blocks = WarpState.user_blocks_from_frame(spark.read.parquet(f"{root}/user_state"), len(user_vocab))
        state = WarpState(item_side=_read_side(spark, f"{root}/item_side"), item_features=features,
                          user_blocks=blocks, n_users=meta["n_users"], n_items=meta["n_items"],
                          epochs_done=meta["epochs_done"], history=meta["history"],
                          user_shared=_read_side(spark, f"{root}/user_shared") if user_vocab else None)
        model = cls(state, load_id_map(spark, f"{root}/id_maps/users"),
                    load_id_map(spark, f"{root}/id_maps/items"), vocab["feature"].tolist(), user_vocab)
        if "uid" in meta:
            model._resetUid(meta["uid"])
        model.id_types = tuple(meta.get("id_types", model.id_types))
        model._setDefault(**{name: value for name, value in defaults.items() if name not in _RETIRED_PARAMS})
        model._set(**{name: value for name, value in params.items() if name not in _RETIRED_PARAMS})
        return model


# Setters ALSModel has (setUserCol, setPredictionCol, setColdStartStrategy...), checked as the estimator's.
def _model_setter(name: str) -> Callable[[RankingFMModel, Any], RankingFMModel]:
    def setter(self: RankingFMModel, value: Any) -> RankingFMModel:
        self._set(**{name: value})
        self._validate()
        return self
    return setter


for _name in _MODEL_PARAMS:
    setattr(RankingFMModel, _accessor("set", _name), _model_setter(_name))

#: Key of recspark's own fields (sizes, history, id types) in Spark ML's ``metadata/`` JSON.
_METADATA_KEY = "recspark"


class _RankingFMModelWriter(MLWriter):
    """Spark ML's layout: ``metadata/`` (DefaultParams JSON) beside the model's Parquet folders."""

    def __init__(self, instance: RankingFMModel) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        root = path.rstrip("/")
        if fs.exists(self.sparkSession, root):  # overwrite() has removed it by now
            raise DataValidationError(f"RankingFMModel: {root} already exists; use model.write().overwrite()"
                                      ".save(path) to replace it, or a new path")
        self.instance._save_to(self.sparkSession, root)


class _RankingFMModelReader(MLReader[RankingFMModel]):
    def load(self, path: str) -> RankingFMModel:
        return RankingFMModel._load_from(self.sparkSession, path.rstrip("/"))


def _read_metadata(spark: SparkSession, root: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(recspark's fields with ``uid``, set params, default params) of a saved model.

    Models saved before RankingFMModel was Spark ML writable keep all of it
    in ``metadata.json`` (params with their defaults resolved); they still load.
    """
    if fs.exists(spark, f"{root}/metadata"):
        meta = DefaultParamsReader.loadMetadata(root, spark)
        return {**meta[_METADATA_KEY], "uid": meta["uid"]}, meta["paramMap"], meta["defaultParamMap"]
    if fs.exists(spark, f"{root}/metadata.json"):
        meta = json.loads(fs.read_text(spark, f"{root}/metadata.json"))
        return meta, meta["params"], {}
    raise DataValidationError(f"RankingFMModel: no model at {root} (no metadata/, which a save writes last: "
                              "the path is wrong or the save did not finish)")


def _write_side(spark: SparkSession, side: SideParams, path: str) -> None:
    """A side's arrays as Parquet, one row per feature (``feature_idx`` plus one column per array)."""
    arrays = side.to_dict()
    frame = pd.DataFrame({"feature_idx": np.arange(side.n_features, dtype=np.int32),
                          **{name: list(a) if a.ndim == 2 else a for name, a in arrays.items()}})
    schema = ", ".join(["feature_idx int"] + [f"{n} array<float>" if a.ndim == 2 else f"{n} float"
                                              for n, a in arrays.items()])
    frame_from_pandas(spark, frame, schema).write.parquet(path)


def _read_side(spark: SparkSession, path: str) -> SideParams:
    side = spark.read.parquet(path).toPandas().sort_values("feature_idx")
    return SideParams.from_dict({name: (np.stack(side[name].to_numpy()) if side[name].dtype == object
                                        else side[name].to_numpy()).astype(np.float32)
                                 for name in side.columns if name != "feature_idx"})


def _write_vocab(spark: SparkSession, names: list[str], first_idx: int, path: str) -> None:
    """Feature names with their feature index (``first_idx`` onwards) as Parquet."""
    vocab = pd.DataFrame({"feature_idx": np.arange(len(names), dtype=np.int32) + first_idx, "feature": names})
    frame_from_pandas(spark, vocab, "feature_idx int, feature string").write.parquet(path)


def _read_vocab(spark: SparkSession, path: str) -> list[str]:
    """Feature names by index; [] for a model saved before user features existed."""
    if not fs.exists(spark, path):
        return []
    return spark.read.parquet(path).toPandas().sort_values("feature_idx")["feature"].tolist()
