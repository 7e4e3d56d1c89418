"""One way to fit ALS and WARP/BPR, shared by the training job, the nightly retrain and the search.

Each job used to assemble the estimator, the side-feature matrices, the
scorer and the cleanup by hand, and the copies drifted (the search ignored
``features.users``). Here they are built once: :func:`fit_als` and
:func:`fit_warp` return a :class:`FittedModel`; :func:`side_feature_matrices`
builds both sides' features from the ``features`` section (a WARP state
mid-fit scores through ``WarpState.scorer``). Logging to MLflow stays with the callers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession

from recspark.config import AlsConfig, FeaturesConfig, WarpConfig
from recspark.data.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, WEIGHT
from recspark.data.features import FeatureMatrix, build_feature_matrix
from recspark.models.als import factor_frames, fit_spark_als
from recspark.models.scoring import FactorScorer
from recspark.models.warp.estimator import RankingFM, RankingFMModel
from recspark.models.warp.trainer import WarpState
from recspark.models.weights import transformed_weight

log = logging.getLogger(__name__)

#: ``on_epoch(epoch, stats, state)``: the trainer's per-epoch hook (``state`` only every ``state_every`` epochs).
OnEpoch = Callable[[int, dict[str, float], WarpState | None], None]


@dataclass
class FittedModel:
    """A fitted model as every job uses it: its scorer, factor frames and the model itself.

    ``user_factors`` (``user_idx``, ``features``; WARP adds ``bias``) is cached;
    ``item_factors`` has ``item_idx``, ``features`` (WARP adds ``bias``). Use it
    as a context manager, or call :meth:`close`, to free what the fit cached.
    """

    model: ALSModel | RankingFMModel
    scorer: FactorScorer
    user_factors: DataFrame
    item_factors: DataFrame

    @property
    def warp(self) -> RankingFMModel | None:
        """The WARP/BPR model (None for ALS): the one a warm start continues."""
        return self.model if isinstance(self.model, RankingFMModel) else None

    @property
    def item_vectors(self) -> npt.NDArray[np.float32]:
        """Item representations ``[n_items, k]`` (driver copy)."""
        return self.scorer.item_side[0]

    @property
    def item_bias(self) -> npt.NDArray[np.float32]:
        """Item biases ``[n_items]``; zeros for ALS, which has none."""
        bias = self.scorer.item_side[1]
        return bias if bias is not None else np.zeros(self.scorer.n_items, np.float32)

    def user_feature_embeddings(self) -> tuple[list[str], npt.NDArray[np.float32] | None]:
        """User side feature names and embeddings (a new user is the sum of theirs); ``([], None)`` without."""
        warp = self.warp
        if warp is None or warp.state.user_shared is None:
            return [], None
        return warp.user_feature_names, warp.state.user_shared.embeddings

    def save(self, path: str) -> None:
        """Write the model under ``path`` with its Spark ML writer (RankingFMModel's or ALSModel's), replacing it."""
        (self.warp if self.warp is not None else self.model).write().overwrite().save(path)

    def close(self) -> None:
        """Free the scorer's broadcast, the cached factors and (WARP) the trainer's cached shards."""
        self.scorer.unpersist()
        self.user_factors.unpersist()
        self.item_factors.unpersist()
        if self.warp is not None:
            self.warp.state.unpersist()

    def __enter__(self) -> FittedModel:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def fit_als(train: DataFrame, conf: AlsConfig, n_items: int, *, max_iter: int | None = None) -> FittedModel:
    """Fit ALS on indexed ``train`` (``max_iter`` overrides ``conf.max_iter``, for learning curves)."""
    model = fit_spark_als(train, conf, max_iter=max_iter)
    users, items = (frame.cache() for frame in factor_frames(model))
    return FittedModel(model, FactorScorer.from_dataframes(users, items, n_items), users, items)


@dataclass(frozen=True)
class SideFeatureMatrices:
    """The item and user feature matrices of one fit; a side is None when it has no sources."""

    items: FeatureMatrix | None = None
    users: FeatureMatrix | None = None

    def sides(self) -> Iterator[tuple[str, FeatureMatrix]]:
        """``("item", matrix)`` and ``("user", matrix)`` for the sides that have features."""
        for side, features in (("item", self.items), ("user", self.users)):
            if features is not None:
                yield side, features

    def metrics(self) -> dict[str, float]:
        """Per group rows read/rejected and features kept/dropped, per side the totals: for the caller to log."""
        metrics: dict[str, float] = {}
        for side, features in self.sides():
            for report in features.reports:
                metrics.update(report.as_metrics(side))
            metrics.update({f"features_{side}_total": features.n_features,
                            f"features_{side}_side": len(features.names)})
        return metrics

    def reject_paths(self) -> dict[str, str]:
        """``rejects_<side>_features_<group>`` -> the folder holding that group's bad rows."""
        return {f"rejects_{side}_features_{report.group}": report.rejects_path
                for side, features in self.sides() for report in features.reports}


def side_feature_matrices(spark: SparkSession, conf: FeaturesConfig, user_map: DataFrame, item_map: DataFrame,
                          n_users: int, n_items: int, rejects_dir: str) -> SideFeatureMatrices:
    """Both sides' matrices from ``features.items`` and ``features.users``; bad rows go under ``rejects_dir``.

    Item entries are collected (O(items)); user entries stay distributed.
    """
    items = (build_feature_matrix(spark, conf.items, item_map, ITEM_ID, ITEM_IDX, n_items, rejects_dir)
             if conf.items.sources else None)
    users = (build_feature_matrix(spark, conf.users, user_map, USER_ID, USER_IDX, n_users, rejects_dir,
                                  side="user", collect=False)
             if conf.users.sources else None)
    return SideFeatureMatrices(items, users)


def fit_warp(train: DataFrame, conf: WarpConfig, user_map: DataFrame, item_map: DataFrame, n_users: int,
             n_items: int, *, features: SideFeatureMatrices | None = None, init: RankingFMModel | None = None,
             on_epoch: OnEpoch | None = None, state_every: int = 0) -> FittedModel:
    """Fit WARP/BPR on indexed ``train`` with ``conf.sample_weight`` applied and ``features`` if given.

    ``init`` warm-starts; ``on_epoch``/``state_every`` are the trainer's hook
    (see ``RankingFM.fit_indexed``). A fit that raises (pruned, stopped or
    diverged, possibly from ``on_epoch``) frees the last epoch's cached shards
    and broadcasts on the way out.
    """
    features = features or SideFeatureMatrices()
    last: list[WarpState] = []

    def hook(epoch: int, stats: dict[str, float], state: WarpState | None) -> None:
        if state is not None:
            last[:] = [state]
        if on_epoch is not None:
            on_epoch(epoch, stats, state)

    weighted = train.select(USER_IDX, ITEM_IDX, transformed_weight(conf.sample_weight).alias(WEIGHT))
    try:
        model = RankingFM.from_params(conf).fit_indexed(
            weighted, user_map, item_map, n_users=n_users, n_items=n_items, init=init, item_features=features.items,
            user_features=features.users, on_epoch=hook, state_every=state_every)
    except BaseException:
        if last:
            last[0].unpersist()
        raise
    users = model.user_factors_indexed().cache()
    return FittedModel(model, model.state.scorer(users), users, model.item_factors_indexed())
