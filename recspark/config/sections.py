"""The sections every job that reads interactions shares: data, features, split, ALS, evaluation, output, tracking, Spark."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from recspark.config.loading import bounded, listed
from recspark.config.synthetic import SyntheticSpec
from recspark.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Where interactions come from and how the matrix is built from them."""

    path: str = "data/demo/interactions"
    user_col: str = "user_id"
    item_col: str = "item_id"
    weight_col: str | None = "weight"
    timestamp_col: str | None = "timestamp"
    timestamp_format: str | None = None
    max_reject_fraction: float = bounded(0.01, ge=0.0, le=1.0)
    # Rows of weight 0 are rejects (reason zero_weight) unless kept: a 0 usually means "no interaction".
    keep_zero_weight: bool = False
    dedupe: Literal["sum", "max", "count", "binary"] = "sum"
    # Pairs whose deduplicated weight is below this are dropped before the thresholds (counted as
    # rows_below_min_weight): turns ratings into likes, e.g. dedupe: max with min_weight: 4 on 1-5 stars.
    min_weight: float | None = None
    min_user_interactions: int = bounded(5, ge=1)
    min_item_interactions: int = bounded(5, ge=1)
    # Generate the synthetic dataset at ``path`` when it does not exist (demo runs).
    generate: SyntheticSpec | None = None


@dataclass(frozen=True)
class FeatureSource:
    """One long-form feature file (``<id>, feature, value`` rows); its features form a group.

    Feature names are prefixed with the group (``tag`` + ``rock`` -> ``tag_rock``),
    so groups never collide and a group's features can be found by prefix.
    """

    path: str = ""
    group: str = ""
    id_col: str | None = None  # null: the side's id column (data.item_col / data.user_col)
    feature_col: str = "feature"
    value_col: str | None = "value"  # null: every row has weight 1
    # Numbers (price, age) rather than weights: discretised per feature name into quantile
    # bins (``price_q3``) -- the seed found bins learn better than raw values.
    numeric: bool = False
    bins: int = bounded(10, ge=2)
    # Extra L2 on this group's embeddings (applied when a feature is updated), on top of
    # warp.item_alpha: the seed wondered whether tags need a different strength than ids.
    alpha: float = bounded(0.0, ge=0.0)

    def __post_init__(self) -> None:
        problems = []
        if not self.path:
            problems.append("path is required")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", self.group or ""):
            problems.append(f"group must be a short alphanumeric name like 'tag', got {self.group!r}")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class SideFeatures:
    """Side features of items or users, and how their feature matrix is built."""

    sources: list[FeatureSource] = listed()
    # One feature per item/user besides the side features (LightFM's default): lets the model
    # learn what features cannot explain; off for pure content models.
    identity: bool = True
    # Divide each row's weights by their sum, so an item with 30 tags does not dominate.
    normalize: bool = True
    # Features seen on fewer items/users are dropped (counted per group in MLflow).
    min_frequency: int = bounded(2, ge=1)
    # Ids found only in the feature files (no interactions yet) are appended to the id map: cold start.
    # They get vectors from their features alone; cold users also get recommendations.
    cold_start: bool = True


@dataclass(frozen=True)
class FeaturesConfig:
    """Item and user side features for the WARP/BPR model (ALS ignores them)."""

    items: SideFeatures = field(default_factory=SideFeatures)
    users: SideFeatures = field(default_factory=SideFeatures)


@dataclass(frozen=True)
class SplitConfig:
    """Train/test split. ``holdout`` is the seed protocol; ``time`` needs timestamps; ``cold_items`` holds out
    whole items (all their interactions go to test) to measure cold start: models also log ``<model>_cold_*``
    metrics, each test user's items ranked among the held-out items only (only side features can rank them)."""

    strategy: Literal["holdout", "time", "cold_items"] = "holdout"
    test_user_fraction: float = bounded(0.2, gt=0.0, le=1.0)
    test_item_fraction: float = bounded(0.2, gt=0.0, le=1.0)  # cold_items only
    holdout_k: int = bounded(5, ge=1)
    time_last_n: int | None = bounded(None, ge=1)
    time_cutoff: str | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if self.strategy == "time" and (self.time_last_n is None) == (self.time_cutoff is None):
            raise ConfigError("strategy 'time' needs exactly one of split.time_last_n or split.time_cutoff")


@dataclass(frozen=True)
class AlsConfig:
    """Spark ML ALS with implicit preferences (WRMF, Hu/Koren/Volinsky)."""

    enabled: bool = True
    rank: int = bounded(32, ge=1)
    reg_param: float = bounded(0.05, ge=0.0)
    alpha: float = bounded(10.0, ge=0.0)
    max_iter: int = bounded(10, ge=1)
    seed: int = 42
    nonnegative: bool = False
    checkpoint_interval: int = bounded(5, ge=1)
    # None: one block per task slot (Spark's defaultParallelism), not Spark's fixed 10.
    # Factors depend on the block count, so pin both to get identical models on any cluster shape.
    num_user_blocks: int | None = bounded(None, ge=1)
    num_item_blocks: int | None = bounded(None, ge=1)
    # How interaction weights become preferences r_ui (confidence = 1 + alpha * r_ui).
    confidence: Literal["binary", "count", "log1p"] = "log1p"
    # Iteration counts at which to measure p@k for the learning curve; [] skips it.
    learning_curve: list[int] = listed()


@dataclass(frozen=True)
class EvaluationConfig:
    """Ranking metrics over all test users, and the top-N recommendations written out."""

    ks: list[int] = listed(5, 10)
    exclude_train: bool = True
    recommend_k: int = bounded(10, ge=1)
    random_seed: int = 7
    # Above this many test users, models and baselines are evaluated on a seeded sample of about
    # this many (the same users for every model), each metric with its standard error; null: always exact.
    max_test_users: int | None = bounded(50_000, ge=1)
    # Learning-curve points (ALS's als.learning_curve, WARP/BPR's eval_every) evaluate a seeded
    # sample of about this many test users; null: all (the final evaluation follows max_test_users).
    curve_test_users: int | None = bounded(5_000, ge=1)


@dataclass(frozen=True)
class OutputConfig:
    """Root folder of a run's outputs (rejects, id maps, matrix, factors, recommendations)."""

    dir: str = "output/demo"


@dataclass(frozen=True)
class MlflowConfig:
    """Tracking: ``tracking_uri`` null means ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""

    tracking_uri: str | None = None
    experiment: str = "recspark"
    # Where a *new* experiment keeps artifacts (e.g. s3://bucket/mlflow); null: MLflow's default (./mlruns).
    artifact_location: str | None = None
    run_name: str | None = None


@dataclass(frozen=True)
class SparkConfig:
    """SparkSession settings. ``master`` is for plain ``python`` runs; under spark-submit its ``--master`` decides."""

    master: str | None = "local[*]"
    app_name: str = "recspark"
    checkpoint_dir: str = "checkpoints"
    conf: dict[str, str] = field(default_factory=dict)
