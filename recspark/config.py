"""Typed job configuration: YAML -> frozen dataclasses, validated before Spark starts.

Every job has one YAML file in ``conf/``. Sections map to the dataclasses below;
defaults live in the dataclasses, so a YAML file only states what differs.
Validation reports *all* problems at once, each under its dotted key, and
suggests the closest key for a typo. Any value can be overridden on the
command line with ``--set section.key=value`` (the value is parsed as YAML).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from recspark.errors import ConfigError
from recspark.redact import redact

T = TypeVar("T")


def _bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
             lt: float | None = None, doc: str = "", spark: str | None = None) -> Any:
    """A dataclass field with its numeric range, checked wherever a value is set (:func:`field_problems`).

    Hyperparameters also carry their ``doc`` and, when it is not the field
    name in camelCase, the name of their ``RankingFM`` Param (``spark``).
    """
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc, "spark": spark})


def _list(*items: Any) -> Any:
    return field(default_factory=lambda: list(items))


# ---------------------------------------------------------------------------
# The synthetic-data generator's spec (recspark.data.synthetic generates from it). It lives
# here, not beside the generator, so the config layer imports nothing from data/.
# ---------------------------------------------------------------------------

_MAX_USER_FRACTION = 0.2  # a user draws at most this fraction of all items


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: sizes, planted structure, optional columns and seed.

    The spec fully determines the output (same spec -> same rows), including
    ``rows_per_chunk``; the number of Spark partitions does not.

    Parameters
    ----------
    n_users, n_items : int
        Number of users and items. Every user appears (before bad-row
        injection); an item in the long Zipf tail may never be drawn.
    n_interactions : int
        Target number of rows. Approximate: deduplication within a user and the
        per-user cap (``0.2 * n_items``) usually remove a few percent.
    n_clusters : int
        Number of latent item clusters.
    clusters_per_user : tuple of (int, int)
        Inclusive range of how many clusters a user prefers (uniform in it).
    cluster_affinity : float
        Probability that an interaction goes to one of the user's clusters rather
        than to the global popularity distribution. 1.0 is a trivially easy
        problem; 0.0 makes popularity the best possible model.
    zipf_exponent : float
        Zipf exponent of item popularity within a cluster (half of it is used
        for cluster masses). Larger means a stronger popularity baseline.
    min_user_interactions : int
        Every user draws at least this many rows, so that most users survive a
        5/5 threshold plus a 5-item holdout.
    tags_per_item : float
        Mean number of distinct tags per item (>= 1; each item has at least one).
    n_tags : int
        Size of the tag vocabulary (``tag_rock``, ``tag_pop``, ... then ``tag_rock2``...).
    with_weights : bool
        Write a ``weight`` column (play counts >= 1, as double).
    with_timestamps : bool
        Write a ``timestamp`` column, increasing within each user.
    start_date : str
        ISO date (UTC) at which the time range starts.
    time_span_days : int
        Length of the time range.
    bad_row_fraction : float
        Fraction of rows to corrupt (one of ``recspark.data.synthetic.BAD_ROW_KINDS`` each) so demos
        exercise the rejects path. 0 writes clean data.
    seed : int
        Non-negative seed of everything.
    rows_per_chunk : int
        Approximate rows per generation task. Part of the data's identity:
        changing it changes the rows. Smaller chunks mean less executor memory
        and more tasks/files.

    Raises
    ------
    ConfigError
        Listing every invalid field by name, with the value and what is allowed.
    """

    n_users: int = 5_000
    n_items: int = 2_000
    n_interactions: int = 100_000
    n_clusters: int = 20
    clusters_per_user: tuple[int, int] = (1, 3)
    cluster_affinity: float = 0.8
    zipf_exponent: float = 1.0
    min_user_interactions: int = 10
    tags_per_item: float = 3.0
    n_tags: int = 50
    with_weights: bool = True
    with_timestamps: bool = True
    start_date: str = "2023-01-01"
    time_span_days: int = 365
    bad_row_fraction: float = 0.0
    seed: int = 42
    rows_per_chunk: int = 200_000

    def __post_init__(self) -> None:
        # Accept lists (e.g. from YAML/argparse) but store a hashable tuple.
        if isinstance(self.clusters_per_user, list):
            object.__setattr__(self, "clusters_per_user", tuple(self.clusters_per_user))
        problems = _synthetic_problems(self)
        if problems:
            raise ConfigError(
                "invalid SyntheticSpec: " + "; ".join(problems)
                + ". Fix these fields (defaults: SyntheticSpec())."
            )

    @property
    def mean_user_interactions(self) -> float:
        """Target mean rows per user, ``n_interactions / n_users``."""
        return self.n_interactions / self.n_users

    @property
    def users_per_chunk(self) -> int:
        """Users generated by one task (a fixed function of the spec)."""
        return max(1, int(self.rows_per_chunk // self.mean_user_interactions))

    @property
    def max_user_interactions(self) -> int:
        """Cap on one user's rows, so a heavy user cannot draw most of the catalogue."""
        return max(self.min_user_interactions, int(_MAX_USER_FRACTION * self.n_items))

    @property
    def n_chunks(self) -> int:
        """Number of user chunks (generation tasks)."""
        return math.ceil(self.n_users / self.users_per_chunk)


def _is_int(value: Any) -> bool:
    # numbers.Integral/Real cover NumPy scalars without importing NumPy into the config layer.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _synthetic_problems(spec: SyntheticSpec) -> list[str]:
    """Return every problem with ``spec`` as ``"field: message"`` strings."""
    problems: list[str] = []

    def need_int(name: str, low: int) -> bool:
        value = getattr(spec, name)
        if not _is_int(value):
            problems.append(f"{name}: expected an integer, got {value!r}")
            return False
        if value < low:
            problems.append(f"{name}: must be >= {low}, got {value}")
            return False
        return True

    def need_float(name: str, low: float, high: float) -> bool:
        value = getattr(spec, name)
        if not _is_num(value):
            problems.append(f"{name}: expected a finite number, got {value!r}")
            return False
        if not low <= value <= high:
            problems.append(f"{name}: must be in [{low}, {high}], got {value}")
            return False
        return True

    ok_users = need_int("n_users", 1)
    ok_items = need_int("n_items", 2)
    ok_rows = need_int("n_interactions", 1)
    ok_clusters = need_int("n_clusters", 1)
    ok_min = need_int("min_user_interactions", 1)
    ok_tags = need_int("n_tags", 1)
    need_int("time_span_days", 1)
    need_int("seed", 0)
    need_int("rows_per_chunk", 1_000)
    need_float("cluster_affinity", 0.0, 1.0)
    need_float("zipf_exponent", 0.0, 5.0)
    need_float("bad_row_fraction", 0.0, 0.5)
    for name in ("with_weights", "with_timestamps"):
        if not isinstance(getattr(spec, name), bool):
            problems.append(f"{name}: expected true/false, got {getattr(spec, name)!r}")

    if ok_items and ok_clusters and spec.n_clusters > spec.n_items // 2:
        problems.append(
            f"n_clusters: must be <= n_items // 2 = {spec.n_items // 2} so each cluster "
            f"has items to choose from, got {spec.n_clusters}"
        )
    cpu = spec.clusters_per_user
    if not (isinstance(cpu, tuple) and len(cpu) == 2 and all(_is_int(v) for v in cpu)):
        problems.append(f"clusters_per_user: expected (min, max) integers, got {cpu!r}")
    elif not 1 <= cpu[0] <= cpu[1]:
        problems.append(f"clusters_per_user: need 1 <= min <= max, got {cpu!r}")
    elif ok_clusters and cpu[1] > spec.n_clusters:
        problems.append(
            f"clusters_per_user: max {cpu[1]} exceeds n_clusters = {spec.n_clusters}"
        )
    if ok_tags:
        need_float("tags_per_item", 1.0, float(spec.n_tags))
    if ok_users and ok_rows and ok_min:
        mean = spec.n_interactions / spec.n_users
        if mean < spec.min_user_interactions:
            problems.append(
                f"n_interactions: {spec.n_interactions} gives {mean:.2f} rows per user, below "
                f"min_user_interactions = {spec.min_user_interactions}; raise n_interactions "
                f"to >= {spec.n_users * spec.min_user_interactions} or lower the minimum"
            )
        if ok_items and spec.min_user_interactions > _MAX_USER_FRACTION * spec.n_items:
            problems.append(
                f"min_user_interactions: {spec.min_user_interactions} exceeds "
                f"{_MAX_USER_FRACTION:.0%} of n_items = {spec.n_items}"
            )
        if ok_items and mean > _MAX_USER_FRACTION * spec.n_items / 2:
            problems.append(
                f"n_interactions: {mean:.1f} rows per user is too dense for n_items = "
                f"{spec.n_items} (at most {_MAX_USER_FRACTION * spec.n_items / 2:.1f}); "
                "add items or lower n_interactions"
            )
    if isinstance(spec.start_date, str):
        try:
            datetime.date.fromisoformat(spec.start_date)
        except ValueError:
            problems.append(
                f"start_date: expected an ISO date like '2023-01-01', got {spec.start_date!r}"
            )
    else:
        problems.append(f"start_date: expected an ISO date string, got {spec.start_date!r}")
    return problems


@dataclass(frozen=True)
class DataConfig:
    """Where interactions come from and how the matrix is built from them."""

    path: str = "data/demo/interactions"
    user_col: str = "user_id"
    item_col: str = "item_id"
    weight_col: str | None = "weight"
    timestamp_col: str | None = "timestamp"
    timestamp_format: str | None = None
    max_reject_fraction: float = _bounded(0.01, ge=0.0, le=1.0)
    # Rows of weight 0 are rejects (reason zero_weight) unless kept: a 0 usually means "no interaction".
    keep_zero_weight: bool = False
    dedupe: Literal["sum", "max", "count", "binary"] = "sum"
    min_user_interactions: int = _bounded(5, ge=1)
    min_item_interactions: int = _bounded(5, ge=1)
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
    bins: int = _bounded(10, ge=2)
    # Extra L2 on this group's embeddings (applied when a feature is updated), on top of
    # warp.item_alpha: the seed wondered whether tags need a different strength than ids.
    alpha: float = _bounded(0.0, ge=0.0)

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

    sources: list[FeatureSource] = _list()
    # One feature per item/user besides the side features (LightFM's default): lets the model
    # learn what features cannot explain; off for pure content models.
    identity: bool = True
    # Divide each row's weights by their sum, so an item with 30 tags does not dominate.
    normalize: bool = True
    # Features seen on fewer items/users are dropped (counted per group in MLflow).
    min_frequency: int = _bounded(2, ge=1)
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
    test_user_fraction: float = _bounded(0.2, gt=0.0, le=1.0)
    test_item_fraction: float = _bounded(0.2, gt=0.0, le=1.0)  # cold_items only
    holdout_k: int = _bounded(5, ge=1)
    time_last_n: int | None = _bounded(None, ge=1)
    time_cutoff: str | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if self.strategy == "time" and (self.time_last_n is None) == (self.time_cutoff is None):
            raise ConfigError("strategy 'time' needs exactly one of split.time_last_n or split.time_cutoff")


@dataclass(frozen=True)
class AlsConfig:
    """Spark ML ALS with implicit preferences (WRMF, Hu/Koren/Volinsky)."""

    enabled: bool = True
    rank: int = _bounded(32, ge=1)
    reg_param: float = _bounded(0.05, ge=0.0)
    alpha: float = _bounded(10.0, ge=0.0)
    max_iter: int = _bounded(10, ge=1)
    seed: int = 42
    nonnegative: bool = False
    checkpoint_interval: int = _bounded(5, ge=1)
    num_user_blocks: int | None = _bounded(None, ge=1)
    num_item_blocks: int | None = _bounded(None, ge=1)
    # How interaction weights become preferences r_ui (confidence = 1 + alpha * r_ui).
    confidence: Literal["binary", "count", "log1p"] = "log1p"
    # Iteration counts at which to measure p@k for the learning curve; [] skips it.
    learning_curve: list[int] = _list()


Loss = Literal["warp", "warp-kos", "bpr", "logistic"]
LOSSES: tuple[str, ...] = typing.get_args(Loss)
Optimiser = Literal["adagrad", "adadelta"]
OPTIMISERS: tuple[str, ...] = typing.get_args(Optimiser)

#: Default largest Spark record of a shard's pickled state. The JVM holds a record as one byte array:
#: a shard of 10M interactions with its users pickles to ~0.7 GB, more than a small heap can allocate
#: or spill (the 10M-row run with a 2g driver died in WARP), and 2 GB is a hard limit. Pieces this
#: size are cached and spilled to disk like any other records. They are also the rows of the Arrow ->
#: RDD hand-over that builds the shards, where the JVM pickles each binary value through a string
#: (several times its size in transient heap): 64 MB pieces ran a 10M-row fit's 8g executor out of
#: heap there, so they are kept small.
STATE_CHUNK_BYTES = 16 << 20


class Checked:
    """Dataclass mixin: constructing one checks every field's type and range, as the YAML loader does.

    So a value set from Python (``KernelParams(rho=1.0)``, a ``RankingFM``
    Param, a search trial) is refused with the same message as in YAML.
    """

    def __post_init__(self) -> None:
        problems = field_problems(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if problems:
            raise ConfigError(f"invalid {type(self).__name__}: " + "; ".join(problems))


# WARP/BPR hyperparameters, declared once: the YAML ``warp`` section (WarpConfig), RankingFM's Spark
# Params (recspark.models.warp.estimator) and the kernel and trainer all take their names, defaults,
# ranges and docs from the two dataclasses below.


@dataclass(frozen=True)
class KernelParams(Checked):
    """LightFM's hyperparameters of one kernel pass (:func:`recspark.models.warp.kernel.fit_epoch`)."""

    loss: Loss = _bounded("warp", doc="'warp' (precision at the top: updates weighted by the positive's "
                          "estimated rank), 'warp-kos' (the k-th best of n sampled positives per user), 'bpr' "
                          "(pairwise AUC) or 'logistic' (labels from the weight's sign: weight > 0 is 1, else 0)")
    learning_rate: float = _bounded(0.05, gt=0.0, doc="adagrad step size (adadelta ignores it, as LightFM); "
                                    "lower it if training diverges")
    optimiser: Optimiser = _bounded("adagrad", spark="learningSchedule",
                                    doc="'adagrad' or 'adadelta' (LightFM's learning_schedule)")
    rho: float = _bounded(0.95, gt=0.0, lt=1.0, doc="adadelta decay")
    epsilon: float = _bounded(1e-6, gt=0.0, doc="adadelta stabiliser")
    user_alpha: float = _bounded(0.0, ge=0.0, doc="L2 penalty on user features (LightFM's lazy scaling)")
    item_alpha: float = _bounded(0.0, ge=0.0, doc="L2 penalty on item features (LightFM's lazy scaling)")
    max_sampled: int = _bounded(10, ge=1, doc="warp, warp-kos: counted negative draws per positive before "
                                "giving up")
    k: int = _bounded(5, ge=1, doc="warp-kos: the k-th best scored of n sampled positives is the step's positive")
    n: int = _bounded(10, ge=1, doc="warp-kos: positives sampled per user and step")
    num_threads: int = _bounded(1, ge=1, doc="lock-free threads inside each shard's kernel pass (LightFM's "
                                "num_threads); 1 is deterministic, more only helps when a shard has idle cores "
                                "to itself")


@dataclass(frozen=True)
class TrainerParams(Checked):
    """How a WARP/BPR fit is distributed over Spark (:class:`recspark.models.warp.trainer.WarpTrainer`)."""

    no_components: int = _bounded(64, ge=1, doc="embedding dimension")
    epochs: int = _bounded(10, ge=1, spark="maxIter", doc="passes over the training interactions")
    n_shards: int | None = _bounded(None, ge=1, spark="numShards",
                                    doc="user shards trained in parallel; null (Spark Param 0): the cluster's "
                                    "default parallelism, but at least 200k interactions per shard (small data "
                                    "trains as one shard: faster and better)")
    local_passes: int = _bounded(1, ge=1, doc="kernel passes over a shard's data per epoch")
    strategy: Literal["stratified", "hogwild"] = _bounded(
        "hogwild", doc="'hogwild': every shard updates every item, deltas summed syncs_per_epoch times an "
        "epoch (item accumulators scaled by the shard count to curb overshoot); 'stratified' (DSGD): round r "
        "trains shard s on item block (s + r) mod S only, so merges are exact; identity item features only")
    syncs_per_epoch: int = _bounded(1, ge=1, doc="hogwild: item merges per epoch (each round trains every "
                                    "shard on a 1/syncs slice of its data)")
    checkpoint_interval: int = _bounded(5, ge=1, doc="epochs between checkpoints of the training state "
                                        "(cuts the lineage a lost executor recomputes)")
    seed: int = _bounded(42, doc="seeds every random stream (initialisation, shuffles, negatives, per shard, "
                         "epoch and round), so a retried task gives the same bits")
    n_tasks: int | None = _bounded(None, ge=1, spark="numTasks",
                                   doc="Spark tasks the shards are dealt to (shard k to task k mod n_tasks); "
                                   "null (Spark Param 0): 1 on a local master, else n_shards")
    state_chunk_bytes: int = _bounded(STATE_CHUNK_BYTES, ge=1, doc="largest Spark record of a shard's pickled "
                                      "state; lower it when executors with small heaps fail caching the shards")


@dataclass(frozen=True)
class WarpConfig(TrainerParams, KernelParams):
    """The ``warp`` section: the sharded WARP/BPR trainer (LightFM semantics; see ``recspark.models.warp``).

    Its hyperparameters are :class:`KernelParams` and :class:`TrainerParams`;
    the fields below are the training job's own.
    """

    enabled: bool = True
    # Per-interaction sample weight from the interaction weight (binary: all 1, as LightFM's default).
    sample_weight: Literal["binary", "count", "log1p"] = "binary"
    # Measure test p@k every N epochs for the learning curve (0: only at the end).
    eval_every: int = _bounded(0, ge=0)
    # Also log train p@k (a fixed 20% of training users, train items ranked) at each eval_every
    # epoch and at the end, next to the test curve (over-/under-fitting at a glance).
    train_metrics: bool = False

    def kernel_params(self) -> KernelParams:
        return KernelParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(KernelParams)})

    def trainer_params(self) -> TrainerParams:
        return TrainerParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainerParams)})


@dataclass(frozen=True)
class EvaluationConfig:
    """Ranking metrics over all test users, and the top-N recommendations written out."""

    ks: list[int] = _list(5, 10)
    exclude_train: bool = True
    recommend_k: int = _bounded(10, ge=1)
    random_seed: int = 7


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


def _training_problems(conf: TrainConfig | NightlyConfig) -> list[str]:
    """Checks across the sections a training job shares, so they fail before Spark starts."""
    problems = []
    if conf.split.strategy == "time" and not conf.data.timestamp_col:
        problems.append("split.strategy 'time' needs data.timestamp_col")
    if conf.warp.strategy == "stratified" and (conf.features.items.sources or conf.features.users.sources):
        problems.append("warp.strategy 'stratified' trains identity item embeddings only: use 'hogwild' with "
                        "features.items/features.users sources")
    return problems


@dataclass(frozen=True)
class TrainConfig:
    """The training job: data -> split -> models -> evaluation -> MLflow."""

    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    als: AlsConfig = field(default_factory=AlsConfig)
    warp: WarpConfig = field(default_factory=WarpConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)

    def __post_init__(self) -> None:
        problems = _training_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))


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
    products: list[ProductName] = _list(*PRODUCT_NAMES)
    k: int = _bounded(10, ge=1)  # neighbours per item / feature
    explain_n: int = _bounded(3, ge=1)  # training items kept per (user, recommended item)
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
class NightlyConfig:
    """The nightly retrain job: dated snapshot -> candidate -> quality gate -> champion + published recommendations."""

    # The snapshot's date (YYYY-MM-DD), substituted for ``{date}`` in data.path; null: today (UTC).
    date: str | None = None
    # Holds runs/<date>/<mlflow run id>/ (one folder per attempt) and the _CURRENT pointer.
    root: str = "output/nightly"
    model: Literal["warp", "als"] = "warp"
    # WARP: continue from the champion's parameters (new users/items start fresh); false: from scratch.
    warm_start: bool = True
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(path="data/nightly/{date}/interactions"))
    split: SplitConfig = field(default_factory=SplitConfig)
    als: AlsConfig = field(default_factory=AlsConfig)
    warp: WarpConfig = field(default_factory=WarpConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)

    def __post_init__(self) -> None:
        problems = []
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
        problems += _training_problems(self)
        if problems:
            raise ConfigError("; ".join(problems))

    def run_date(self) -> str:
        """The snapshot date: ``date``, else today in UTC."""
        return self.date or datetime.datetime.now(datetime.timezone.utc).date().isoformat()

    def snapshot_path(self) -> str:
        """``data.path`` with ``{date}`` replaced by :meth:`run_date` (a fixed path is read as is)."""
        return self.data.path.replace("{date}", self.run_date())


@dataclass(frozen=True)
class ParamRange:
    """One searched setting: ``name`` is its dotted config key (``warp.learning_rate``), the rest its range.

    ``loguniform`` draws evenly in log space (learning rates, L2 strengths spanning decades);
    ``uniform`` and ``int`` draw linearly unless ``log``; ``categorical`` picks from ``values``
    (losses, booleans, component counts). The grid strategy takes every categorical value and
    ``grid_points`` evenly spaced points (log-spaced when logarithmic) of a range.
    """

    name: str = ""
    type: Literal["loguniform", "uniform", "int", "categorical"] = "uniform"
    low: float | None = None
    high: float | None = None
    values: list[Any] = _list()
    log: bool = False
    grid_points: int = _bounded(3, ge=2)

    @property
    def logarithmic(self) -> bool:
        return self.type == "loguniform" or self.log

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("name is required (a dotted config key such as warp.learning_rate)")
        if self.type == "categorical":
            if not self.values:
                problems.append("categorical needs values: [...]")
            if self.low is not None or self.high is not None:
                problems.append("categorical takes values, not low/high")
        else:
            if self.values:
                problems.append(f"{self.type} takes low/high, not values (use type: categorical)")
            if self.low is None or self.high is None or self.low >= self.high:
                problems.append(f"{self.type} needs low < high, got low={self.low}, high={self.high}")
            elif self.logarithmic and self.low <= 0:
                problems.append(f"a logarithmic range needs low > 0, got {self.low}")
            if self.type == "int" and any(v is not None and v != int(v) for v in (self.low, self.high)):
                problems.append(f"int needs whole low/high, got {self.low}, {self.high}")
        if problems:
            raise ConfigError(f"{self.name or '<unnamed>'}: " + "; ".join(problems))


@dataclass(frozen=True)
class ValidationSplitConfig:
    """The validation split carved from the training split (a per-user holdout) that trials are scored on."""

    test_user_fraction: float = _bounded(0.2, gt=0.0, le=1.0)
    holdout_k: int = _bounded(5, ge=1)
    seed: int = 1042  # not split.seed: validation users differ from test users' draw


@dataclass(frozen=True)
class PruningConfig:
    """Stop WARP/BPR trials whose validation learning curve trails the median of earlier trials."""

    enabled: bool = True
    every: int = _bounded(2, ge=1)  # score validation p@k every N epochs: the curve, and pruning points
    startup_trials: int = _bounded(3, ge=0)  # trials that must finish before any trial is pruned
    warmup_epochs: int = _bounded(0, ge=0)  # epochs a trial always gets


@dataclass(frozen=True)
class SearchConfig:
    """The ``tune`` section: what to search, how, and the budget (trials and/or wall time)."""

    model: Literal["als", "warp"] = "warp"  # warp covers bpr too (search warp.loss)
    strategy: Literal["grid", "random", "tpe"] = "tpe"
    n_trials: int | None = _bounded(20, ge=1)  # null: until timeout_minutes (grid: the whole grid)
    timeout_minutes: float | None = _bounded(None, gt=0.0)  # no trial starts after it; running ones finish
    concurrency: int = _bounded(2, ge=1)  # trials running at once, each in its own FAIR scheduler pool
    seed: int = 42
    tpe_startup_trials: int = _bounded(5, ge=1)  # random trials before TPE models the space
    space: list[ParamRange] = _list()
    validation: ValidationSplitConfig = field(default_factory=ValidationSplitConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)


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


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e6`` is a number, as a person means it (1.1 wants ``1.0e6``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def load_config(path: str | Path | None, cls: type[T], overrides: list[str] | None = None) -> T:
    """Load ``path`` (YAML; None for defaults only), apply ``key=value`` overrides, validate.

    Raises
    ------
    ConfigError
        Listing every problem found, each under its dotted key.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = _parse(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(redact(f"{path}: not valid YAML: {err}")) from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    problems: list[str] = []
    for item in overrides or []:
        _apply_override(raw, item, problems)
    conf = _build(cls, raw, "", problems)
    if problems:
        where = f" in {path}" if path else ""
        problems = [_blame(problem, overrides or []) for problem in problems]
        raise ConfigError(redact(f"invalid configuration{where}:\n  - " + "\n  - ".join(problems)))
    return conf


def _blame(problem: str, overrides: list[str]) -> str:
    """Name the ``--set`` a problem comes from, when its value was given on the command line (the last one wins)."""
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if key and (problem.startswith(f"{key}:") or problem.startswith(f"{key}[")):
            return f"{problem} (from --set {item})"
    return problem


def _apply_override(raw: dict[str, Any], item: str, problems: list[str]) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        problems.append(f"override {item!r}: expected section.key=value")
        return
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(f"override {item!r}: {part!r} is not a section")
            return
        node = child
    node[parts[-1]] = _parse(value) if value.strip() else None


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from ``raw``, appending problems instead of raising."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or '<top>'}: expected a mapping, got {raw!r}")
        return None
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            problems.append(f"{prefix}{key}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        found = len(problems)
        value = _convert(hints[name], raw[name], f"{prefix}{name}", problems)
        if value is not _INVALID:
            _check_range(f, value, f"{prefix}{name}", problems)
        if len(problems) == found:  # a refused value is reported once, here, not again by the section
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a section's own __post_init__ checks
        problems.append(f"{prefix.rstrip('.')}: {err}" if prefix else str(err))
        return None


_INVALID = object()


def _convert(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    if tp is Any:  # checked where it is used (tune.space values, by the key they set)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, problems)
    if dataclasses.is_dataclass(tp):
        built = _build(tp, value, key + ".", problems)
        return _INVALID if built is None else built
    if origin is Literal:
        if value not in args:
            problems.append(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
            return _INVALID
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {value!r}")
            return _INVALID
        items = [_convert(args[0], v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return _INVALID if _INVALID in items else items
    if origin is tuple:
        if not isinstance(value, list) or len(value) != len(args):
            problems.append(f"{key}: expected a list of {len(args)} values, got {value!r}")
            return _INVALID
        items = [_convert(a, v, f"{key}[{i}]", problems) for i, (a, v) in enumerate(zip(args, value))]
        return _INVALID if _INVALID in items else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {value!r}")
            return _INVALID
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: expected true/false, got {value!r}")
            return _INVALID
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            problems.append(f"{key}: expected an integer, got {value!r}")
            return _INVALID
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            problems.append(f"{key}: expected a number, got {value!r}")
            return _INVALID
        if not math.isfinite(value):
            problems.append(f"{key}: expected a finite number, got {value!r}")
            return _INVALID
        return float(value)
    if tp is str:
        if isinstance(value, datetime.date):  # YAML reads 2024-06-01 as a date
            return value.isoformat()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            problems.append(f"{key}: expected a string, got {value!r}")
            return _INVALID
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module, not user input


def _check_range(f: dataclasses.Field, value: Any, key: str, problems: list[str]) -> None:
    if value is None or not isinstance(value, (int, float)):
        return
    ge, gt, le, lt = (f.metadata.get(bound) for bound in ("ge", "gt", "le", "lt"))
    if ge is not None and value < ge:
        problems.append(f"{key}: {value} is out of range; must be >= {ge}")
    if gt is not None and value <= gt:
        problems.append(f"{key}: {value} is out of range; must be > {gt}")
    if le is not None and value > le:
        problems.append(f"{key}: {value} is out of range; must be <= {le}")
    if lt is not None and value >= lt:
        problems.append(f"{key}: {value} is out of range; must be < {lt}")


def field_problems(cls: type, values: Mapping[str, Any], label: Callable[[str], str] = str) -> list[str]:
    """Type and range problems of ``values`` for dataclass ``cls``'s fields (absent ones are not checked).

    Each problem names its field as ``label(field name)``: the dotted YAML key,
    the field itself, or a Spark Param name.
    """
    hints = _hints(cls)
    problems: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = _convert(hints[f.name], values[f.name], label(f.name), problems)
            if value is not _INVALID:
                _check_range(f, value, label(f.name), problems)
    return problems


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def with_values(conf: T, values: Mapping[str, Any]) -> T:
    """A copy of ``conf`` with dotted keys set (``{"warp.learning_rate": 0.1}``), checked as YAML values are.

    For code that varies a loaded config (hyperparameter search trials): types, ranges and each
    section's own checks apply, so a trial never runs a config the YAML loader would refuse.

    Raises
    ------
    ConfigError
        Listing every problem, each under its dotted key.
    """
    problems: list[str] = []
    for key, value in values.items():
        conf = _with_value(conf, key.split("."), value, key, problems)
    if problems:
        raise ConfigError(redact("; ".join(problems)))
    return conf


def _with_value(node: Any, parts: list[str], value: Any, key: str, problems: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
    name = parts[0]
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1)
        problems.append(f"{key}: unknown key" + (f" (did you mean '{close[0]}' for '{name}'?)" if close else ""))
        return node
    if len(parts) > 1:
        new = _with_value(getattr(node, name), parts[1:], value, key, problems)
    else:
        found = len(problems)
        new = _convert(_hints(type(node))[name], value, key, problems)
        if new is not _INVALID:
            _check_range(fields[name], new, key, problems)
        if len(problems) > found:
            return node
    try:
        return dataclasses.replace(node, **{name: new})
    except ConfigError as err:  # the section's own __post_init__ checks
        problems.append(f"{key}: {err}")
        return node


# --------------------------------------------------------------------------- output


def to_dict(conf: Any) -> dict[str, Any]:
    """The resolved config as plain nested dicts (for the YAML artifact)."""
    return dataclasses.asdict(conf)


def flatten(conf: Any) -> dict[str, str]:
    """Dotted ``section.key -> str(value)`` pairs (for MLflow params)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
            for i, value in enumerate(node):  # features.items.sources.0.group
                walk(value, f"{prefix}{i}.")
        else:
            out[prefix[:-1]] = "" if node is None else str(node)

    walk(to_dict(conf), "")
    return out
