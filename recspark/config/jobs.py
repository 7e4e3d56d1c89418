"""One frozen dataclass per job, built from the shared sections; ``load_config(path, <JobConfig>)`` reads one.

The jobs that train models (train, nightly, tune) share :class:`TrainingJob`:
the same data, split, model, features, evaluation, tracking and Spark
sections, checked across sections the same way.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import typing
from dataclasses import dataclass, field
from typing import Literal

from recspark.config.hyperparameters import WarpConfig
from recspark.config.loading import bounded, listed, with_values
from recspark.config.search import SearchConfig
from recspark.config.sections import (AlsConfig, DataConfig, EvaluationConfig, FeaturesConfig, MlflowConfig,
                                      OutputConfig, SparkConfig, SplitConfig)
from recspark.config.synthetic import SyntheticSpec
from recspark.errors import ConfigError


@dataclass(frozen=True)
class TrainingJob:
    """The sections of every job that trains models; each job adds its own."""

    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    als: AlsConfig = field(default_factory=AlsConfig)
    warp: WarpConfig = field(default_factory=WarpConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def _problems(self) -> list[str]:
        """Checks across sections, so they fail before Spark starts; a job extends the list with its own."""
        problems = []
        if self.split.strategy == "time" and not self.data.timestamp_col:
            problems.append("split.strategy 'time' needs data.timestamp_col")
        if self.warp.strategy == "stratified" and (self.features.items.sources or self.features.users.sources):
            problems.append("warp.strategy 'stratified' trains identity item embeddings only: use 'hogwild' with "
                            "features.items/features.users sources")
        return problems


@dataclass(frozen=True)
class TrainConfig(TrainingJob):
    """The training job: data -> split -> models -> evaluation -> MLflow."""

    output: OutputConfig = field(default_factory=OutputConfig)


@dataclass(frozen=True)
class GenerateConfig:
    """The synthetic-data job: writes ``output`` (interactions + item_tags)."""

    output: str = "data/demo"
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    spark: SparkConfig = field(default_factory=SparkConfig)


@dataclass(frozen=True)
class ModelSource:
    """Which trained model the products read: a training run's ``output.dir`` and a model in it."""

    # The training job's output.dir (holds id_maps/, matrix/, models/, recommendations/).
    run_dir: str = "output/demo"
    # warp/bpr: models/<model>/model (a RankingFMModel); als: models/als/item_factors.
    model: Literal["warp", "bpr", "als"] = "warp"


#: Products the embedding-products job can compute (``products`` in :class:`ProductsConfig`).
ProductName = Literal["similar_items", "feature_items", "feature_suggestions", "similar_features", "explanations"]
PRODUCT_NAMES: tuple[str, ...] = typing.get_args(ProductName)


@dataclass(frozen=True)
class ProductsConfig:
    """The embedding-products job: similar items, tag->items, tag suggestions, similar tags, explanations."""

    source: ModelSource = field(default_factory=ModelSource)
    products: list[ProductName] = listed(*PRODUCT_NAMES)
    k: int = bounded(10, ge=1)  # neighbours per item / feature
    explain_n: int = bounded(3, ge=1)  # training items kept per (user, recommended item)
    # Side-feature group of the feature products (names prefixed ``<group>_``, e.g. tag_rock).
    feature_group: str = "tag"
    # Products go to <output>/products/<model>/<product>; null: the training run's dir (source.run_dir).
    output: str | None = None
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)

    def __post_init__(self) -> None:
        if not self.products:
            raise ConfigError("products: list at least one product")
        if len(set(self.products)) != len(self.products):
            raise ConfigError(f"products: duplicates in {self.products}")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", self.feature_group or ""):
            raise ConfigError(f"feature_group must be a feature group name like 'tag', got {self.feature_group!r}")


@dataclass(frozen=True)
class PromotionConfig:
    """The quality gate: when a nightly candidate takes the ``champion`` alias in the Model Registry."""

    registered_model: str = "recspark"
    # A metric evaluate() reports for evaluation.ks: precision_at_5, recall_at_10, ndcg_at_5, map_at_5, mrr, auc.
    primary_metric: str = "precision_at_5"
    # Promote when candidate >= champion - tolerance (absolute); a negative value demands an improvement.
    tolerance: float = 0.0


@dataclass(frozen=True)
class NightlyConfig(TrainingJob):
    """The nightly retrain job: dated snapshot -> candidate -> quality gate -> champion + published recommendations."""

    data: DataConfig = field(default_factory=lambda: DataConfig(path="data/nightly/{date}/interactions"))
    # The snapshot's date (YYYY-MM-DD), substituted for ``{date}`` in data.path; null: today (UTC).
    date: str | None = None
    # Holds runs/<date>/<mlflow run id>/ (one folder per attempt) and the _CURRENT pointer.
    root: str = "output/nightly"
    model: Literal["warp", "als"] = "warp"
    # WARP: continue from the champion's parameters (new users/items start fresh); false: from scratch.
    warm_start: bool = True
    promotion: PromotionConfig = field(default_factory=PromotionConfig)

    def _problems(self) -> list[str]:
        problems = super()._problems()
        if self.date is not None:
            try:
                datetime.date.fromisoformat(self.date)
            except ValueError:
                problems.append(f"date: expected YYYY-MM-DD, got {self.date!r}")
        metric = re.fullmatch(r"(precision|recall|ndcg|map)_at_(\d+)|mrr|auc", self.promotion.primary_metric)
        if metric is None or (metric.group(2) and int(metric.group(2)) not in self.evaluation.ks):
            problems.append(f"promotion.primary_metric: {self.promotion.primary_metric!r} is not reported; use "
                            f"precision/recall/ndcg/map_at_<k> with k in evaluation.ks {self.evaluation.ks}, "
                            "mrr or auc")
        return problems

    def run_date(self) -> str:
        """The snapshot date: ``date``, else today in UTC."""
        return self.date or datetime.datetime.now(datetime.timezone.utc).date().isoformat()

    def snapshot_path(self) -> str:
        """``data.path`` with ``{date}`` replaced by :meth:`run_date` (a fixed path is read as is)."""
        return self.data.path.replace("{date}", self.run_date())



@dataclass(frozen=True)
class TuneConfig(TrainConfig):
    """The search job: the training job's sections (the base every trial varies) plus ``tune``."""

    tune: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        search = self.tune
        if search.strategy != "grid" and search.n_trials is None and search.timeout_minutes is None:
            problems.append(f"tune: strategy {search.strategy!r} needs a budget: set tune.n_trials "
                            "and/or tune.timeout_minutes")
        if not search.space:
            problems.append("tune.space: no valid parameter to search; list at least one, e.g. "
                            "{name: warp.learning_rate, type: loguniform, low: 0.01, high: 0.3}")
        sections = ("als",) if search.model == "als" else ("warp", "features")
        base, seen = self.train_config(), set()
        for i, spec in enumerate(search.space):
            if spec.name in seen:
                problems.append(f"tune.space[{i}]: {spec.name} is listed twice")
            seen.add(spec.name)
            if spec.name.split(".")[0] not in sections:
                problems.append(f"tune.space[{i}]: {spec.name} is not a {search.model} setting; "
                                f"tune.model {search.model!r} searches keys under {', '.join(sections)}")
                continue
            ends = [int(spec.low), int(spec.high)] if spec.type == "int" else [spec.low, spec.high]
            for value in spec.values if spec.type == "categorical" else ends:
                try:
                    with_values(base, {spec.name: value})
                except ConfigError as err:
                    problems.append(f"tune.space[{i}]: {err}")
        if problems:  # one line each, as load_config lists problems (a bad key fails at both ends: once)
            raise ConfigError("\n  - ".join(dict.fromkeys(problems)))

    def train_config(self) -> TrainConfig:
        """The base training config (everything but ``tune``) that trials vary."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})
