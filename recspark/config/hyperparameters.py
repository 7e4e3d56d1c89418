"""WARP/BPR hyperparameters, declared once.

The YAML ``warp`` section (:class:`WarpConfig`), ``RankingFM``'s Spark Params
(recspark.models.warp.estimator) and the kernel and trainer all take their
names, defaults, ranges and docs from :class:`KernelParams` and
:class:`TrainerParams`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

from recspark.config.loading import Checked, bounded


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


@dataclass(frozen=True)
class KernelParams(Checked):
    """LightFM's hyperparameters of one kernel pass (:func:`recspark.models.warp.kernel.fit_epoch`)."""

    loss: Loss = bounded("warp", doc="'warp' (precision at the top: updates weighted by the positive's "
                          "estimated rank), 'warp-kos' (the k-th best of n sampled positives per user), 'bpr' "
                          "(pairwise AUC) or 'logistic' (labels from the weight's sign: weight > 0 is 1, else 0)")
    learning_rate: float = bounded(0.05, gt=0.0, doc="adagrad step size (adadelta ignores it, as LightFM); "
                                    "lower it if training diverges")
    optimiser: Optimiser = bounded("adagrad", spark="learningSchedule",
                                    doc="'adagrad' or 'adadelta' (LightFM's learning_schedule)")
    rho: float = bounded(0.95, gt=0.0, lt=1.0, doc="adadelta decay")
    epsilon: float = bounded(1e-6, gt=0.0, doc="adadelta stabiliser")
    user_alpha: float = bounded(0.0, ge=0.0, doc="L2 penalty on user features (LightFM's lazy scaling)")
    item_alpha: float = bounded(0.0, ge=0.0, doc="L2 penalty on item features (LightFM's lazy scaling)")
    max_sampled: int = bounded(10, ge=1, doc="warp, warp-kos: counted negative draws per positive before "
                                "giving up")
    k: int = bounded(5, ge=1, doc="warp-kos: the k-th best scored of n sampled positives is the step's positive")
    n: int = bounded(10, ge=1, doc="warp-kos: positives sampled per user and step")
    num_threads: int = bounded(1, ge=1, doc="lock-free threads inside each shard's kernel pass (LightFM's "
                                "num_threads); 1 is deterministic, more only helps when a shard has idle cores "
                                "to itself")


@dataclass(frozen=True)
class TrainerParams(Checked):
    """How a WARP/BPR fit is distributed over Spark (:class:`recspark.models.warp.trainer.WarpTrainer`)."""

    no_components: int = bounded(64, ge=1, doc="embedding dimension")
    epochs: int = bounded(10, ge=1, spark="maxIter", doc="passes over the training interactions")
    n_shards: int | None = bounded(None, ge=1, spark="numShards",
                                    doc="user shards trained in parallel; null (Spark Param 0): the cluster's "
                                    "default parallelism, but at least 200k interactions per shard (small data "
                                    "trains as one shard: faster and better)")
    local_passes: int = bounded(1, ge=1, doc="kernel passes over a shard's data per epoch")
    strategy: Literal["stratified", "hogwild"] = bounded(
        "hogwild", doc="'hogwild': every shard updates every item, deltas summed syncs_per_epoch times an "
        "epoch (item accumulators scaled by the shard count to curb overshoot); 'stratified' (DSGD): round r "
        "trains shard s on item block (s + r) mod S only, so merges are exact; identity item features only")
    syncs_per_epoch: int = bounded(1, ge=1, doc="hogwild: item merges per epoch (each round trains every "
                                    "shard on a 1/syncs slice of its data)")
    checkpoint_interval: int = bounded(5, ge=1, doc="epochs between checkpoints of the training state "
                                        "(cuts the lineage a lost executor recomputes)")
    lineage_bytes: int = bounded(128 * 2**20, ge=1, doc="most bytes of item-side broadcasts the driver keeps "
                                 "for the lineage between checkpoints: a checkpoint comes sooner than "
                                 "checkpoint_interval once the next round's broadcast would pass it (bounds the "
                                 "driver heap for large item sides, at the cost of more checkpoints)")
    seed: int = bounded(42, doc="seeds every random stream (initialisation, shuffles, negatives, per shard, "
                         "epoch and round), so a retried task gives the same bits")
    n_tasks: int | None = bounded(None, ge=1, spark="numTasks",
                                   doc="Spark tasks the shards are dealt to (shard k to task k mod n_tasks); "
                                   "null (Spark Param 0): 1 on a local master, else n_shards")
    state_chunk_bytes: int = bounded(STATE_CHUNK_BYTES, ge=1, doc="largest Spark record of a shard's pickled "
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
    eval_every: int = bounded(0, ge=0)
    # Also log train p@k (a fixed 20% of training users, train items ranked) at each eval_every
    # epoch and at the end, next to the test curve (over-/under-fitting at a glance).
    train_metrics: bool = False

    def kernel_params(self) -> KernelParams:
        return KernelParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(KernelParams)})

    def trainer_params(self) -> TrainerParams:
        return TrainerParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainerParams)})
