"""Spark side of the WARP/BPR trainer: Hogwild across user shards.

Interactions are sharded by user (``shard = user_idx mod n_shards``), so a
user's parameters live in exactly one shard for the whole fit. Shard k lives
in Spark partition ``k mod n_tasks``; a task trains the shards it holds in
parallel threads (the compiled kernel releases the GIL). Each round:

1. the driver broadcasts the item-side parameters (embeddings, biases,
   optimiser accumulators) — O(item features x components);
2. every shard runs the compiled kernel over its interactions (``mapPartitions``),
   updating its users in place and a private copy of the item side;
3. the shards' item-side *deltas* are summed over a fixed tree keyed by shard
   id (:func:`sum_deltas_rdd`) — the same float additions in the same order
   however the shards are laid out in tasks — down to one delta, which the
   driver applies.

Locally (``local[...]`` masters) one task holds every shard by default, so
nothing crosses a process boundary between rounds and that task runs every
round up to the next point where the driver needs the model (an evaluation,
a checkpoint, the end): a Spark round costs a few tenths of a second, about
what the compiled kernel needs for a whole epoch of MovieLens 100k. On a
cluster every shard gets its own task (``n_tasks = n_shards``) so the shards
spread over executors; the result is bit-identical either way.

``strategy="hogwild"`` (the default) lets every shard update every item;
each shard's item accumulators anticipate the other shards' gradients so the
summed steps do not overshoot, and ``syncs_per_epoch`` merges more often.
``strategy="stratified"`` (DSGD, Gemulla et al., KDD 2011) makes an epoch S
rounds; in round r shard s trains only on its positives in item block
(s + r) mod S (blocks re-dealt every epoch), drawing negatives from that
block, so no item row is updated by two shards at once and merges are exact —
but a pairwise loss then compares only items of one block per round. Both
lose some quality against one shard on small catalogues where every item is
contended (see the README's performance section); identity item features only
for ``stratified``.

Nothing proportional to interactions or users reaches the driver. Every task
seeds its RNG from ``(seed, epoch, shard)`` and sorts its rows, so a retried
task (executor loss) recomputes exactly the same result. Lineage is truncated
by checkpointing the shard states every ``checkpoint_interval`` epochs, or
sooner when the item-side broadcasts the driver keeps for it would pass
``lineage_bytes``.

This is the only module of ``recspark.models.warp`` that runs code on executors.
"""

from __future__ import annotations

import collections
import logging
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import scipy.sparse as sp
from pyspark import RDD, StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.config import STATE_CHUNK_BYTES, KernelParams, TrainerParams
from recspark.data.columns import FEATURES, ITEM_IDX, USER_IDX, VALUE, WEIGHT
from recspark.data.features import FeatureMatrix
from recspark.errors import ConfigError, DataValidationError
from recspark.models.scoring import FactorScorer
from recspark.models.warp import streams
from recspark.models.warp.frames import arrow_frame, ragged_column, row_slices, vector_column
from recspark.models.warp.kernel import check_finite, fit_epoch, representations
from recspark.models.warp.state import SideParams
from recspark.session import job_description

log = logging.getLogger(__name__)


#: With ``n_shards`` unset, each shard gets at least this many interactions. Below it a shard's
#: kernel pass is shorter than a Spark round's fixed cost, and shards training on stale copies of
#: the item side cost quality (on MovieLens/Last.fm-sized data one shard beat two in p@5), so small
#: data trains as one shard and large data uses the cluster's parallelism.
MIN_ROWS_PER_SHARD = 200_000


def default_shards(n_rows: int, parallelism: int) -> int:
    """Shards for ``n_rows`` interactions when not set: the parallelism, capped by :data:`MIN_ROWS_PER_SHARD`.

    >>> default_shards(50_000, 8), default_shards(1_900_000, 2), default_shards(20_000_000, 16)
    (1, 2, 16)
    """
    return max(1, min(parallelism, n_rows // MIN_ROWS_PER_SHARD))


def default_tasks(n_shards: int, master: str) -> int:
    """Spark tasks the shards run in when not set: one with a local master, else one per shard.

    On one machine one task runs every shard in its own thread and merges
    them itself, so the epochs between two hand-backs to the driver cost no
    Spark round (a few tenths of a second to ~1 s: scheduling, the broadcast,
    the shard states' trip through the block manager). On a cluster each
    shard is a task, so the shards spread over the executors.

    >>> default_tasks(2, "local[2]"), default_tasks(4, "spark://host:7077"), default_tasks(2, "local-cluster[2,1,1024]")
    (1, 4, 2)
    """
    return 1 if master == "local" or master.startswith("local[") else n_shards


# --------------------------------------------------------------------------- shard data


@dataclass
class ShardData:
    """One shard's interactions in local user rows, sorted (user, item) so order never depends on shuffles.

    ``users[row]`` is the global ``user_idx`` of local row ``row``. With user
    side features, ``user_features`` is the shard's user feature matrix in
    local columns: ``0 .. n_local - 1`` the users' own (identity) rows, then
    the side features shared by all shards; users with features but no
    interactions (cold start) are shard users too.
    """

    users: npt.NDArray[np.int32]
    rows: npt.NDArray[np.int32]
    items: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float32]
    n_items: int
    user_features: sp.csr_matrix | None = None

    @classmethod
    def from_arrays(cls, user_idx: np.ndarray, item_idx: np.ndarray, weight: np.ndarray, n_items: int,
                    feature_entries: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    n_user_identity: int = 0, n_user_shared: int = 0) -> ShardData:
        """``feature_entries`` = (user_idx, global feature column, weight) of this shard's users, columns as in
        :class:`recspark.data.features.FeatureMatrix` (``n_user_identity`` identity columns, then shared ones)."""
        order = np.lexsort((item_idx, user_idx))
        user_idx, item_idx, weight = user_idx[order], item_idx[order], weight[order]
        if feature_entries is None:
            users, rows = np.unique(user_idx, return_inverse=True)
            return cls(users.astype(np.int32), rows.astype(np.int32), item_idx.astype(np.int32),
                       weight.astype(np.float32), n_items)
        f_users, f_cols, f_values = feature_entries
        users = np.unique(np.concatenate([user_idx, f_users]))
        f_rows = np.searchsorted(users, f_users)
        n_local = len(users)
        local_cols = np.where(f_cols < n_user_identity, f_rows, n_local + f_cols - n_user_identity)
        features = sp.csr_matrix((f_values.astype(np.float32), (f_rows, local_cols)),
                                 shape=(n_local, n_local + n_user_shared), dtype=np.float32)
        features.sum_duplicates()
        return cls(users.astype(np.int32), np.searchsorted(users, user_idx).astype(np.int32),
                   item_idx.astype(np.int32), weight.astype(np.float32), n_items, features)

    def positives(self) -> sp.csr_matrix:
        """CSR [local users, n_items] of known positives (never sampled as negatives)."""
        return sp.csr_matrix((np.ones(len(self.items), np.float32), (self.rows, self.items)),
                             shape=(len(self.users), self.n_items))

    def identity_features(self) -> sp.csr_matrix:
        return sp.identity(len(self.users), dtype=np.float32, format="csr")

    def features(self) -> sp.csr_matrix:
        """The users' feature matrix over [own rows | shared features] (identity without user features)."""
        return self.identity_features() if self.user_features is None else self.user_features


@dataclass
class SharedDelta:
    """A shard's change to the parameters all shards share, summed across shards by :func:`sum_deltas`.

    ``arrays`` holds the item side's arrays by name and, with user side
    features, the shared user features' arrays prefixed ``user_``.
    """

    arrays: dict[str, np.ndarray]
    n_samples: int = 0
    n_updates: int = 0
    loss_sum: float = 0.0
    kernel_seconds: float = 0.0  # summed over shards: epoch time minus this is Spark's share
    # Per epoch the task trained (several in a one-task fit): epoch -> [samples, updates, loss, kernel s].
    epochs: dict[int, list[float]] = field(default_factory=dict)
    # The arrays are the shared parameters themselves, not a change: a task that held every shard and
    # trained several steps (see run_shard_steps). Never summed: there is only one such task.
    absolute: bool = False

    def __iadd__(self, other: SharedDelta) -> SharedDelta:
        if self.absolute or other.absolute:
            raise ValueError("shared parameters from a task that trained every shard cannot be summed")
        for name, value in other.arrays.items():
            self.arrays[name] += value
        self.n_samples += other.n_samples
        self.n_updates += other.n_updates
        self.loss_sum += other.loss_sum
        self.kernel_seconds += other.kernel_seconds
        _add_epoch_stats(self.epochs, other.epochs)
        return self


def _add_epoch_stats(into: dict[int, list[float]], other: dict[int, list[float]]) -> None:
    """Sum ``SharedDelta.epochs`` entries (per epoch: samples, updates, loss, kernel seconds) into ``into``."""
    for epoch, values in other.items():
        mine = into.setdefault(epoch, [0.0] * len(values))
        mine[:] = [a + b for a, b in zip(mine, values)]


def _merge_deltas(acc: SharedDelta | None, other: SharedDelta | None) -> SharedDelta | None:
    if acc is None:
        return other
    if other is None:
        return acc
    acc += other
    return acc


#: Shard deltas are summed in a fixed tree over shard ids: groups of this many consecutive keys, left to
#: right, then groups of those. The tree depends on the shard ids alone, never on which task or reducer
#: held a delta or when it arrived, so the sum has the same bits in one task, one task per shard, or any
#: cluster. It also bounds how many item-sized deltas one process holds at once.
DELTA_FAN_IN = 4


def _fold(records: Iterable[tuple[int, SharedDelta]]) -> SharedDelta | None:
    total = None
    for _, delta in sorted(records, key=lambda kv: kv[0]):
        total = _merge_deltas(total, delta)
    return total


def _tree_levels(n_keys: int) -> int:
    levels = 0
    while n_keys > DELTA_FAN_IN:
        n_keys, levels = -(-n_keys // DELTA_FAN_IN), levels + 1
    return levels


def sum_deltas(records: list[tuple[int, SharedDelta]], n_keys: int) -> SharedDelta | None:
    """The sum of ``(shard_id, delta)`` records (shard ids below ``n_keys``) in the tree of :data:`DELTA_FAN_IN`."""
    for _ in range(_tree_levels(n_keys)):
        groups: dict[int, list[tuple[int, SharedDelta]]] = collections.defaultdict(list)
        for key, delta in records:
            groups[key // DELTA_FAN_IN].append((key, delta))
        records = [(group, _fold(members)) for group, members in groups.items()]
    return _fold(records)


def sum_deltas_rdd(records: RDD, n_keys: int) -> SharedDelta | None:
    """:func:`sum_deltas` of an RDD of ``(shard_id, delta)``: each tree level a shuffle, the root too.

    The root's fold runs in one task, so the driver receives a single
    item-sized delta, not up to :data:`DELTA_FAN_IN` of them at once (which
    its heap and ``spark.driver.maxResultSize`` would have to hold); the
    arithmetic is the same fold in key order either way.
    """
    if records.getNumPartitions() == 1:
        return sum_deltas(records.collect(), n_keys)
    for _ in range(_tree_levels(n_keys)):
        n_keys = -(-n_keys // DELTA_FAN_IN)
        records = (records.map(lambda kv: (kv[0] // DELTA_FAN_IN, kv)).groupByKey(n_keys)
                   .map(lambda group: (group[0], _fold(group[1]))))
    root = records.map(lambda kv: (0, kv)).groupByKey(1).map(lambda group: (0, _fold(group[1])))
    return _fold(root.collect())


def _leading_deltas(records: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, SharedDelta]]:
    """The ``(shard_id, delta)`` records at the head of a round's output partition, without touching the shard
    states behind them.

    The rest of the partition is still drained: a Python worker that leaves
    input unread is not reused, and forking a fresh one costs more per round
    than reading the states.
    """
    for key, record in records:
        if not isinstance(record, SharedDelta):
            collections.deque(records, maxlen=0)
            return
        yield key, record


def apply_delta(item_side: SideParams, user_shared: SideParams | None,
                delta: SharedDelta | None) -> tuple[SideParams, SideParams | None]:
    """The shared parameters after a round: the summed shard deltas added, or the task's own result when
    ``delta.absolute`` (new objects; inputs untouched)."""
    if delta is None:
        return item_side, user_shared

    def updated(side: SideParams, prefix: str) -> SideParams:
        old = side.to_dict()
        return SideParams.from_dict({name: (delta.arrays[prefix + name].copy() if delta.absolute
                                            else old[name] + delta.arrays[prefix + name]) for name in old})

    new_side = updated(item_side, "")
    check_finite(new_side, "item")
    if user_shared is not None:
        user_shared = updated(user_shared, "user_")
        check_finite(user_shared, "user")
    return new_side, user_shared


def run_shard_steps(shards: list[tuple[int, ShardData, SideParams]], item_side: SideParams,
                    user_shared: SideParams | None, steps: list[tuple[int, int]], **kwargs: Any,
                    ) -> tuple[list[SideParams], list[tuple[int, SharedDelta]]]:
    """Train one task's shards for the ``(epoch, sync_round)`` steps: their users and ``(shard_id, delta)`` records.

    In each step the shards train side by side in threads (the compiled
    kernel releases the GIL), each on its own copy of the shared parameters.
    With one step the records are each shard's delta, summed by the driver
    (:func:`sum_deltas_rdd`). Several steps happen only when the task holds
    every shard (nothing to merge with other tasks): the task sums each
    step's deltas in the same tree (:func:`sum_deltas`), so the bits are those
    of one task per shard, applies them itself and returns one record with
    the final shared parameters (:attr:`SharedDelta.absolute`); the driver
    then sees one Spark job for all the steps instead of a broadcast and an
    aggregate per epoch.
    """
    users = [side for _, _, side in shards]
    items, shared = item_side, user_shared
    records: list[tuple[int, SharedDelta]] = []
    epochs: dict[int, list[float]] = {}
    n_keys = kwargs.get("n_shards", 1)

    def train(k: int, epoch: int, sync_round: int) -> tuple[SideParams, SharedDelta]:
        shard_id, data, _ = shards[k]
        return run_shard_epoch(shard_id, data, users[k], items, epoch=epoch, sync_round=sync_round,
                               user_shared=shared, **kwargs)

    with ThreadPoolExecutor(len(shards)) as pool:
        for epoch, sync_round in steps:
            results = list(pool.map(lambda k: train(k, epoch, sync_round), range(len(shards))))
            users = [side for side, _ in results]
            records = [(shard_id, delta) for (shard_id, _, _), (_, delta) in zip(shards, results)]
            if len(steps) > 1:
                for _, delta in records:
                    _add_epoch_stats(epochs, delta.epochs)
                items, shared = apply_delta(items, shared, sum_deltas(records, n_keys))
    if len(steps) == 1:
        return users, records
    arrays = items.to_dict()
    if shared is not None:
        arrays.update({f"user_{name}": value for name, value in shared.to_dict().items()})
    totals = [sum(values[i] for values in epochs.values()) for i in range(4)]
    return users, [(0, SharedDelta(arrays, int(totals[0]), int(totals[1]), *totals[2:], epochs=epochs,
                                   absolute=True))]


def rounds_per_epoch(params: TrainerParams, n_shards: int) -> int:
    """Stratified: one round per item block (= shards); hogwild: ``syncs_per_epoch``."""
    return n_shards if params.strategy == "stratified" else params.syncs_per_epoch


def item_block(n_items: int, n_blocks: int, block: int, *, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Items of ``block`` (sorted) and each item's position in it (-1 outside) for this epoch.

    Items are dealt into blocks by a permutation drawn from ``(seed, epoch)``
    alone, so every shard agrees on the blocks, and every pair of items shares
    a block in some epochs: a pairwise loss only compares items of one block,
    and fixed blocks would never calibrate scores across blocks.
    """
    permutation = np.random.default_rng([seed, epoch, streams.ITEM_BLOCKS]).permutation(n_items)
    block_items = np.sort(np.flatnonzero(permutation % n_blocks == block))
    local_of = np.full(n_items, -1, dtype=np.int64)
    local_of[block_items] = np.arange(len(block_items))
    return block_items, local_of


def run_shard_epoch(
    shard_id: int,
    data: ShardData,
    user_side: SideParams,
    item_side: SideParams,
    item_features: sp.csr_matrix,
    kernel: KernelParams,
    *,
    seed: int,
    epoch: int,
    sync_round: int = 0,
    n_shards: int = 1,
    params: TrainerParams = TrainerParams(),
    item_feature_alpha: np.ndarray | None = None,
    user_shared: SideParams | None = None,
    user_feature_alpha: np.ndarray | None = None,
) -> tuple[SideParams, SharedDelta]:
    """One shard's share of one round of an epoch; returns its users and its item-side delta.

    ``stratified``: the shard trains on its positives in item block
    ``(shard_id + sync_round) mod n_shards`` with negatives from that block
    only, on a copy of just that block's item rows, so shards never touch the
    same item row in a round. ``hogwild``: the shard trains on slice
    ``sync_round`` of its data against all items; the kernel's item
    accumulators anticipate the other shards' gradients
    (``item_accum_scale``) and the accumulator deltas are divided back.

    With user side features, the shard trains its users' own rows together
    with a copy of ``user_shared`` (the side features' rows, which every
    shard's users share, so they are merged like the item side); the delta
    then also carries their change.

    Pure and deterministic (RNG from ``(seed, epoch, sync_round, shard_id)``),
    so Spark can retry it; the inputs are not modified.
    """
    rng = np.random.default_rng([seed, epoch, sync_round, shard_id])
    n_own = user_side.n_features
    user_kwargs: dict[str, Any] = {}
    if user_shared is None:
        users = user_side.copy()
    else:
        users = SideParams.concatenate([user_side, user_shared])
        user_kwargs["user_accum_scale"] = np.concatenate([np.ones(n_own, np.float32),
                                                          np.full(user_shared.n_features, n_shards, np.float32)])
        if user_feature_alpha is not None:
            user_kwargs["user_feature_alpha"] = np.concatenate([np.zeros(n_own, np.float32), user_feature_alpha])
    features = data.features()
    before = item_side.to_dict()
    n_samples = n_updates = 0
    loss_sum = 0.0
    if params.strategy == "stratified" and n_shards > 1:
        block_items, local_of = item_block(data.n_items, n_shards, (shard_id + sync_round) % n_shards,
                                           seed=seed, epoch=epoch)
        mask = local_of[data.items] >= 0
        rows, items_idx, weights = data.rows[mask], local_of[data.items[mask]], data.weights[mask]
        positives = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, items_idx)),
                                  shape=(len(data.users), len(block_items)))
        items = SideParams.from_dict({name: array[block_items] for name, array in before.items()})
        block_features = sp.identity(len(block_items), dtype=np.float32, format="csr")
        fit_kwargs: dict[str, Any] = {"n_items_total": data.n_items}
    else:
        rows, items_idx, weights = data.rows, data.items, data.weights
        rounds = rounds_per_epoch(params, n_shards)
        if rounds > 1:
            order = np.random.default_rng([seed, epoch, shard_id, streams.ROUND_SLICES]).permutation(len(rows))
            part = np.sort(order[sync_round::rounds])
            rows, items_idx, weights = rows[part], items_idx[part], weights[part]
        positives = data.positives()
        items = item_side.copy()
        block_items, block_features = None, item_features
        fit_kwargs = {"item_accum_scale": n_shards, "item_feature_alpha": item_feature_alpha, **user_kwargs}
    seconds = 0.0
    for _ in range(params.local_passes):
        stats = fit_epoch(users, items, features, block_features, rows, items_idx, weights, positives, kernel, rng,
                          **fit_kwargs)
        n_samples += stats.n_samples
        n_updates += stats.n_updates
        loss_sum += stats.loss_sum
        seconds += stats.cpu_seconds
    after = items.to_dict()
    if block_items is not None:
        arrays = {name: np.zeros_like(before[name]) for name in before}
        for name in arrays:
            arrays[name][block_items] = after[name] - before[name][block_items]
    else:
        arrays = _shared_change(before, after, n_shards)
    if user_shared is not None:
        shared_after = users.rows(n_own).to_dict()
        arrays.update({f"user_{name}": change for name, change in
                       _shared_change(user_shared.to_dict(), shared_after, n_shards).items()})
        users = users.rows(0, n_own)
    return users, SharedDelta(arrays, n_samples, n_updates, loss_sum, seconds,
                              {epoch: [n_samples, n_updates, loss_sum, seconds]})


def _shared_change(before: dict[str, np.ndarray], after: dict[str, np.ndarray], n_shards: int) -> dict[str, np.ndarray]:
    """One shard's change to parameters every shard trains a copy of, ready to be summed over shards.

    Squared-gradient accumulators grew ``n_shards`` x (the kernel's accum
    scale); adadelta's running averages of updates decay the shared start
    value in every shard, so the sum over shards must count that decay once:
    both are averaged.
    """
    arrays = {name: after[name] - before[name] for name in before}
    if n_shards > 1:
        for name in ("emb_accum", "bias_accum", "emb_delta_accum", "bias_delta_accum"):
            if name in arrays:
                arrays[name] /= np.float32(n_shards)
    return arrays


# --------------------------------------------------------------------------- state records



@dataclass(frozen=True)
class StateChunk:
    """Piece ``part`` of ``n_parts`` of one shard's pickled state (see :data:`recspark.config.STATE_CHUNK_BYTES`)."""

    part: int
    n_parts: int
    payload: bytes


def to_chunks(shard_id: int, obj: Any, chunk_bytes: int = STATE_CHUNK_BYTES) -> list[tuple[int, StateChunk]]:
    """``obj`` pickled and cut into ``(shard_id, StateChunk)`` records of at most ``chunk_bytes``."""
    blob = pickle.dumps(obj, protocol=5)
    n_parts = max(1, -(-len(blob) // chunk_bytes))
    return [(shard_id, StateChunk(part, n_parts, blob[part * chunk_bytes:(part + 1) * chunk_bytes]))
            for part in range(n_parts)]


def from_chunks(records: Iterable[tuple[int, StateChunk]]) -> Iterator[tuple[int, Any]]:
    """Inverse of :func:`to_chunks` for every shard in ``records`` (any order), by ascending shard id.

    A shard with a missing piece is an error, never a silently smaller shard.
    """
    pieces: dict[int, dict[int, StateChunk]] = collections.defaultdict(dict)
    for shard_id, chunk in records:
        pieces[shard_id][chunk.part] = chunk
    for shard_id in sorted(pieces):
        parts = pieces.pop(shard_id)
        n_parts = next(iter(parts.values())).n_parts
        if sorted(parts) != list(range(n_parts)):
            raise RuntimeError(f"shard {shard_id}: got state pieces {sorted(parts)} of {n_parts}")
        yield shard_id, pickle.loads(b"".join(parts[i].payload for i in range(n_parts)))


# --------------------------------------------------------------------------- state


@dataclass
class UserBlock:
    """A shard's users: global indices, their own parameters (rows aligned) and, with side features, their
    feature matrix over [own rows | shared user features] (:attr:`ShardData.user_features`)."""

    users: npt.NDArray[np.int32]
    side: SideParams
    features: sp.csr_matrix | None = None

    def representations(self, shared: SideParams | None) -> tuple[np.ndarray, np.ndarray]:
        """The users' vectors and biases: their own rows, plus their weighted shared feature rows."""
        if self.features is None:
            return self.side.embeddings, self.side.biases
        return representations(self.features, SideParams.concatenate([self.side, shared]))

    def feature_lists(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each user's side features as saved: ``(own_weight, counts, cols, weights)``.

        ``own_weight`` is the weight of the user's own row; the user's shared
        features are the next ``counts[u]`` entries of ``cols`` (from 0) and
        ``weights``, users in order.
        """
        f, n_own = self.features, len(self.users)
        owner = np.repeat(np.arange(n_own), np.diff(f.indptr))
        shared = f.indices >= n_own
        own_weight = np.bincount(owner[~shared], weights=f.data[~shared], minlength=n_own)
        counts = np.bincount(owner[shared], minlength=n_own)
        return own_weight, counts, (f.indices[shared] - n_own).astype(np.int32), f.data[shared].astype(np.float32)


@dataclass(kw_only=True)
class WarpState:
    """A fitted (or warm-startable) model: item side on the driver, user blocks in the cluster.

    Keyword-only: eleven fields, several of the same type, are too many to pass by position.

    ``user_blocks`` is an RDD of ``(shard_id, UserBlock)`` read from the
    persisted ``cache`` (the last round's output); its size is O(users), so it
    never comes to the driver. :meth:`unpersist` frees it.
    """

    item_side: SideParams
    item_features: sp.csr_matrix
    user_blocks: RDD
    n_users: int
    n_items: int
    epochs_done: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    cache: RDD | None = None
    n_shards: int = 1
    # Broadcasts the cache's lineage still needs (a lost partition is recomputed from them).
    broadcasts: list[Any] = field(default_factory=list)
    # User side features' rows (shared by all users; on the driver like the item side), None without.
    user_shared: SideParams | None = None

    def unpersist(self) -> None:
        """Free the cached shards and their broadcasts once the model's users are saved or no longer needed."""
        if self.cache is not None:
            self.cache.unpersist()
        for bc in self.broadcasts:
            bc.destroy()
        self.broadcasts = []

    def item_representations(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Item vectors and biases ``([n_items, k], [n_items])``: sums of their feature rows."""
        return representations(self.item_features, self.item_side)

    def scorer(self, user_factors: DataFrame) -> FactorScorer:
        """The state (mid-fit or final) as a scorer: ``user · item + item bias``, item side on the driver.

        ``user_factors`` is :meth:`user_factors`, or a cached copy of it.
        """
        reps, biases = self.item_representations()
        return FactorScorer(reps, user_factors, item_bias=biases)

    def user_factors(self, spark: SparkSession) -> DataFrame:
        """DataFrame ``user_idx`` int, ``features`` array<float>, ``bias`` float: each user's representation."""
        schema = T.StructType([T.StructField(USER_IDX, T.IntegerType(), False),
                               T.StructField(FEATURES, T.ArrayType(T.FloatType(), False), False),
                               T.StructField("bias", T.FloatType(), False)])
        shared_bc = None
        if self.user_shared is not None:
            shared_bc = spark.sparkContext.broadcast(self.user_shared)
            self.broadcasts.append(shared_bc)

        def batches(blocks: Iterable[tuple[int, UserBlock]]) -> Iterator[pa.RecordBatch]:
            shared = shared_bc.value if shared_bc is not None else None
            for _, block in blocks:
                reps, biases = block.representations(shared)
                for rows in row_slices(len(block.users), 4 * (reps.shape[1] + 2)):
                    yield pa.RecordBatch.from_arrays(
                        [pa.array(block.users[rows], pa.int32()), vector_column(reps[rows]),
                         pa.array(biases[rows], pa.float32())], names=schema.names)

        return arrow_frame(spark, self.user_blocks.mapPartitions(batches), schema)

    def user_state_frame(self, spark: SparkSession) -> DataFrame:
        """Every user's parameters *and* optimiser state: ``user_idx`` plus one column per array.

        This is what a saved model keeps so the next fit can warm-start
        (``init=``) with the optimiser where it left off. With user side
        features it also keeps each user's feature weights: ``own_weight``
        (of the user's own row), ``feature_cols`` (shared feature indices,
        from 0) and ``feature_weights``.
        """
        names = self.item_side.to_dict().keys()
        with_features = self.user_shared is not None
        fields = [T.StructField(USER_IDX, T.IntegerType(), False)] + [
            T.StructField(name, T.ArrayType(T.FloatType(), False) if name.startswith("emb") else T.FloatType(),
                          False) for name in names]
        if with_features:
            fields += [T.StructField("own_weight", T.FloatType(), False),
                       T.StructField("feature_cols", T.ArrayType(T.IntegerType(), False), False),
                       T.StructField("feature_weights", T.ArrayType(T.FloatType(), False), False)]

        schema = T.StructType(fields)

        def column(array: np.ndarray) -> pa.Array:
            return vector_column(array) if array.ndim == 2 else pa.array(array, pa.float32())

        def batches(blocks: Iterable[tuple[int, UserBlock]]) -> Iterator[pa.RecordBatch]:
            for _, block in blocks:
                arrays = block.side.to_dict()
                row_bytes = 4 * sum(a.shape[1] if a.ndim == 2 else 1 for a in arrays.values())
                if with_features:
                    own_weight, counts, cols, weights = block.feature_lists()
                    starts = np.concatenate([[0], np.cumsum(counts)])
                    row_bytes += 4 + 8 * int(counts.max(initial=0))
                for rows in row_slices(len(block.users), row_bytes):
                    columns = [pa.array(block.users[rows], pa.int32())] + [column(arrays[n][rows]) for n in names]
                    if with_features:
                        span = slice(starts[rows.start], starts[rows.stop])
                        columns += [pa.array(own_weight[rows], pa.float32()),
                                    ragged_column(cols[span], counts[rows]), ragged_column(weights[span], counts[rows])]
                    yield pa.RecordBatch.from_arrays(columns, names=schema.names)

        return arrow_frame(spark, self.user_blocks.mapPartitions(batches), schema)

    @staticmethod
    def user_blocks_from_frame(frame: DataFrame, n_user_shared: int = 0) -> RDD:
        """Inverse of :meth:`user_state_frame`: one ``(partition, UserBlock)`` per partition."""
        feature_columns = ("own_weight", "feature_cols", "feature_weights")
        names = [c for c in frame.columns if c != USER_IDX and c not in feature_columns]
        with_features = "feature_cols" in frame.columns

        def build(index: int, rows: Iterable[Any]) -> Iterator[tuple[int, UserBlock]]:
            rows = list(rows)
            if not rows:
                return
            users = np.array([r[USER_IDX] for r in rows], dtype=np.int32)
            arrays = {n: np.array([r[n] for r in rows], dtype=np.float32) for n in names}
            features = None
            if with_features:
                n_own = len(rows)
                entries = [(i, i, r["own_weight"]) for i, r in enumerate(rows) if r["own_weight"]] + [
                    (i, n_own + c, w) for i, r in enumerate(rows) for c, w in zip(r["feature_cols"],
                                                                                 r["feature_weights"])]
                r_idx, c_idx, vals = (np.array(x) for x in zip(*entries)) if entries else ([], [], [])
                features = sp.csr_matrix((np.asarray(vals, np.float32), (r_idx, c_idx)),
                                         shape=(n_own, n_own + n_user_shared), dtype=np.float32)
            yield index, UserBlock(users, SideParams.from_dict(arrays), features)

        return frame.rdd.mapPartitionsWithIndex(build)


def _user_blocks(records: Iterable[tuple[int, StateChunk]]) -> Iterator[tuple[int, UserBlock]]:
    for shard_id, (_, block) in from_chunks(records):
        yield shard_id, block


# --------------------------------------------------------------------------- driver


#: One row of a shard's input as it crosses the shuffle: user, item (or feature column), weight, kind.
_ROW = np.dtype([("user", "<i4"), ("col", "<i4"), ("weight", "<f4"), ("kind", "i1")])


def _shard_rdd(train: DataFrame, n_shards: int, n_tasks: int, n_items: int, chunk_bytes: int,
               user_features: FeatureMatrix | None = None) -> RDD:
    """``ShardData`` as :func:`to_chunks` records, shard ``k`` in partition ``k mod n_tasks``.

    Each input partition packs its rows per shard into compact arrays (Arrow
    in, 13 bytes a row out), and those pieces are shuffled once, to the task
    of their shard, which sorts them into the shard (the sort makes the
    result independent of the order pieces arrive in). User feature entries
    travel in the same shuffle as the interactions (``kind`` 1), so each shard
    gets its users' feature rows without a join. With one task there is
    nothing to shuffle: one task reads every partition and packs all the shards.
    """
    # Plain values only: the closures below are shipped to executors (no DataFrame in them).
    with_features = user_features is not None
    n_identity = user_features.n_identity if with_features else 0
    n_shared = len(user_features.names) if with_features else 0
    rows_per_piece = max(1, chunk_bytes // _ROW.itemsize)
    schema = T.StructType([T.StructField("shard", T.IntegerType(), False),
                           T.StructField("payload", T.BinaryType(), False)])
    arrow_schema = pa.schema([("shard", pa.int32(), False), ("payload", pa.binary(), False)])

    def split(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            packed = np.empty(batch.num_rows, dtype=_ROW)
            for name, column in zip(_ROW.names, (USER_IDX, ITEM_IDX, WEIGHT, "kind")):
                packed[name] = batch.column(column).to_numpy()
            shard = packed["user"] % n_shards
            for k in np.unique(shard):
                mine = packed[shard == k]
                pieces = [mine[i:i + rows_per_piece].tobytes() for i in range(0, len(mine), rows_per_piece)]
                yield pa.RecordBatch.from_pydict({"shard": [int(k)] * len(pieces), "payload": pieces},
                                                 schema=arrow_schema)

    def build(records: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, StateChunk]]:
        pieces: dict[int, list[np.ndarray]] = collections.defaultdict(list)
        for shard_id, payload in records:
            pieces[shard_id].append(np.frombuffer(payload, dtype=_ROW))
        for k in sorted(pieces):
            rows = np.concatenate(pieces.pop(k))
            mask, features = rows["kind"] == 0, rows["kind"] == 1
            entries = (rows["user"][features], rows["col"][features], rows["weight"][features]) \
                if with_features else None
            data = ShardData.from_arrays(rows["user"][mask], rows["col"][mask], rows["weight"][mask], n_items,
                                         entries, n_identity, n_shared)
            del rows
            yield from to_chunks(int(k), data, chunk_bytes)

    rows = train.select(F.col(USER_IDX).cast("int"), F.col(ITEM_IDX).cast("int"), F.col(WEIGHT).cast("float"),
                        F.lit(0).cast("byte").alias("kind"))
    if user_features is not None:  # (user, feature column, weight) rows of kind 1
        rows = rows.unionByName(user_features.entries.select(
            F.col("row").cast("int").alias(USER_IDX), F.col("col").cast("int").alias(ITEM_IDX),
            F.col(VALUE).cast("float").alias(WEIGHT), F.lit(1).cast("byte").alias("kind")))
    pieces = rows.mapInArrow(split, schema).rdd.map(lambda r: (r.shard, r.payload))
    pieces = pieces.coalesce(1) if n_tasks == 1 else pieces.partitionBy(n_tasks, lambda k: k % n_tasks)
    return pieces.mapPartitions(build, preservesPartitioning=True)


def _is_identity(features: sp.csr_matrix) -> bool:
    n = features.shape[0]
    return (features.shape == (n, n) and features.nnz == n and np.array_equal(features.indices, np.arange(n))
            and np.array_equal(features.indptr, np.arange(n + 1)) and bool(np.all(features.data == 1)))


def _user_side_features(user_features: FeatureMatrix | None) -> tuple[int, np.ndarray | None]:
    """How many user side features the fit shares across shards, and their per-feature L2 (if any)."""
    if user_features is None:
        return 0, None
    alpha = user_features.feature_alpha()
    return len(user_features.names), (alpha[user_features.n_identity:] if alpha is not None else None)


def _warm_parameters(init: WarpState, n_user_shared: int) -> tuple[SideParams, SideParams | None]:
    """Copies of ``init``'s item side and user side features' rows, refused when the user features differ."""
    n_init_shared = init.user_shared.n_features if init.user_shared else 0
    if n_init_shared != n_user_shared:
        raise ConfigError(f"init: the model has {n_init_shared} user side features, this fit {n_user_shared}; "
                          "warm starts need the same ones")
    return init.item_side.copy(), (init.user_shared.copy() if init.user_shared else None)


@dataclass
class _FitRun:
    """One fit's layout and progress, handed between the steps of :meth:`WarpTrainer.fit`."""

    n_users: int
    n_items: int
    n_shards: int
    n_tasks: int
    item_features: sp.csr_matrix
    features_bc: Any  # broadcast (item_features, item_feature_alpha, user side-feature alpha)
    item_side: SideParams
    user_shared: SideParams | None
    state_rdd: RDD  # the shards' (ShardData, UserBlock) chunks the next round trains
    epochs_done: int
    history: list[dict[str, float]]
    cached: RDD | None = None  # the RDD state_rdd reads its shards from: persisted, or checkpointed and read from files
    broadcasts: list[Any] = field(default_factory=list)  # item-side broadcasts the cache's lineage needs


class WarpTrainer:
    """Drives the epochs on the cluster; see the module docstring for the algorithm."""

    def __init__(self, spark: SparkSession, kernel: KernelParams, params: TrainerParams) -> None:
        self.spark = spark
        self.kernel = kernel
        self.params = params

    def fit(
        self,
        train: DataFrame,
        n_users: int,
        n_items: int,
        *,
        item_features: sp.csr_matrix | None = None,
        item_feature_alpha: np.ndarray | None = None,
        user_features: FeatureMatrix | None = None,
        init: WarpState | None = None,
        epochs: int | None = None,
        on_epoch: Callable[[int, dict[str, float], WarpState | None], None] | None = None,
        state_every: int = 0,
    ) -> WarpState:
        """Train on ``train`` (``user_idx``, ``item_idx``, ``weight``); continue from ``init`` when given.

        ``item_feature_alpha`` (one value per item feature column) adds a
        per-feature L2, e.g. per feature group (see the kernel's ``fit_epoch``).
        ``user_features`` (rows = user indices; its ``entries`` stay
        distributed) makes a user the weighted sum of its own row and its
        side features' rows; the latter are shared by all shards and merged
        each round like the item side.

        ``on_epoch(epoch, stats, state)`` is called after every epoch (learning
        curves, progress); ``stats`` holds seconds, samples/s, updates and loss.
        ``state`` is the model after that epoch at every ``state_every``-th
        epoch (0: none), every checkpoint and the last epoch, and ``None`` in
        between when the fit has one shard: one Spark task then trains all the
        epochs between two such points, so their stats arrive together.
        """
        item_features = self._checked_item_features(item_features, n_items, init, user_features)  # before Spark
        sc = self.spark.sparkContext
        p = self.params
        n_shards = p.n_shards or default_shards(train.count(), sc.defaultParallelism)
        n_tasks = min(p.n_tasks or default_tasks(n_shards, sc.master), n_shards)
        # The first round's job builds the shards (a job of their own would cost a few tenths of a second,
        # a small set's whole fit), so the first epoch's time includes building them; the persisted
        # round outputs hold the shards from then on, and a lost one is rebuilt from lineage.
        shards = _shard_rdd(train, n_shards, n_tasks, n_items, p.state_chunk_bytes, user_features)
        n_user_shared, user_alpha = _user_side_features(user_features)
        if init is not None:
            item_side, user_shared = _warm_parameters(init, n_user_shared)
            state_rdd = self._warm_state(shards, init, n_shards, n_tasks)
        else:
            item_side, user_shared = self._fresh_parameters(item_features.shape[1], n_user_shared)
            state_rdd = self._fresh_state(shards)
        run = _FitRun(n_users=n_users, n_items=n_items, n_shards=n_shards, n_tasks=n_tasks,
                      item_features=item_features,
                      features_bc=sc.broadcast((item_features, item_feature_alpha, user_alpha)),
                      item_side=item_side, user_shared=user_shared, state_rdd=state_rdd,
                      epochs_done=init.epochs_done if init else 0, history=list(init.history) if init else [])
        last_epoch = run.epochs_done + (epochs or p.epochs)
        checkpoint_interval = p.checkpoint_interval if sc.getCheckpointDir() else 0
        state = None
        while run.epochs_done < last_epoch:
            # One task holding every shard merges them itself: it trains every epoch up to the next point
            # where the caller wants the state (state_every), a checkpoint or the end. Several tasks merge
            # their item deltas on the driver every round.
            epoch = run.epochs_done
            stop = epoch + 1 if n_tasks > 1 else _next_stop(epoch, last_epoch, state_every, checkpoint_interval)
            start = time.perf_counter()
            per_epoch = self._train_epochs(run, stop)
            seconds = (time.perf_counter() - start) / (stop - epoch)  # a multi-epoch task's wall time, shared
            state = self._report_epochs(run, stop, seconds, per_epoch, on_epoch)
            run.epochs_done = stop
        if state is None:
            raise ConfigError("epochs must be >= 1")
        return state

    # -- the steps of fit

    def _checked_item_features(self, item_features: sp.csr_matrix | None, n_items: int, init: WarpState | None,
                               user_features: FeatureMatrix | None) -> sp.csr_matrix:
        """The fit's item features (``init``'s, or identity, when not given), refused when they cannot fit."""
        if item_features is None:
            item_features = init.item_features if init else sp.identity(n_items, dtype=np.float32, format="csr")
        item_features = sp.csr_matrix(item_features, dtype=np.float32)
        if item_features.shape[0] != n_items:
            raise DataValidationError(f"item_features has {item_features.shape[0]} rows but there are {n_items} "
                                      "items; build the feature matrix over the item map train was indexed with")
        if self.params.strategy == "stratified" and (not _is_identity(item_features) or user_features is not None):
            raise ConfigError("strategy='stratified' needs identity item features and no user features (side "
                              "features are shared across blocks and shards); use strategy='hogwild'")
        return item_features

    def _fresh_parameters(self, n_item_features: int, n_user_shared: int) -> tuple[SideParams, SideParams | None]:
        """LightFM's initialisation of the item side and of the user side features' rows (if any)."""
        p, optimiser = self.params, self.kernel.optimiser
        item_side = SideParams.init(n_item_features, p.no_components, optimiser,
                                    np.random.default_rng([p.seed, streams.ITEM_INIT]))
        user_shared = (SideParams.init(n_user_shared, p.no_components, optimiser,
                                       np.random.default_rng([p.seed, streams.USER_INIT, streams.ITEM_INIT]))
                       if n_user_shared else None)
        return item_side, user_shared

    def _train_epochs(self, run: _FitRun, stop: int) -> dict[int, list[float]]:
        """Train epochs ``run.epochs_done .. stop - 1``: one Spark job per round, or one for all with one task.

        Updates ``run``'s parameters and cluster state; returns each epoch's
        summed kernel stats (samples, updates, loss, CPU seconds).
        """
        sc, p = self.spark.sparkContext, self.params
        rounds = rounds_per_epoch(p, run.n_shards)
        steps = [(e, r) for e in range(run.epochs_done, stop) for r in range(rounds)]
        jobs = [steps] if run.n_tasks == 1 else [[step] for step in steps]
        per_epoch: dict[int, list[float]] = {}
        for i, job in enumerate(jobs):
            # Every round's item side stays broadcast until the next checkpoint (a lost cached shard is
            # recomputed through those rounds), so checkpoint sooner once the next round's would pass the budget.
            kept = (len(run.broadcasts) + 2) * _shared_bytes(run)
            checkpoint = sc.getCheckpointDir() is not None and (
                (i == len(jobs) - 1 and stop % p.checkpoint_interval == 0) or kept > p.lineage_bytes)
            delta = self._run_job(run, job, checkpoint)
            run.item_side, run.user_shared = apply_delta(run.item_side, run.user_shared, delta)
            if delta is not None:
                _add_epoch_stats(per_epoch, delta.epochs)
        return per_epoch

    def _run_job(self, run: _FitRun, steps: list[tuple[int, int]], checkpoint: bool) -> SharedDelta | None:
        """One Spark job training every shard through ``steps``; returns the summed item-side delta.

        Its only action trains the shards, caches their outputs (the next
        job's input) and sums their deltas; with ``checkpoint`` the new state
        is also checkpointed, which truncates the lineage.
        """
        item_bc = self.spark.sparkContext.broadcast((run.item_side, run.user_shared))
        run.broadcasts.append(item_bc)
        out = self._epoch_rdd(run.state_rdd, item_bc, run.features_bc, steps, run.n_shards)
        out = out.persist(StorageLevel.MEMORY_AND_DISK)
        if checkpoint:  # marked before the job: Spark writes the cached output when the job ends, in the JVM
            out.checkpoint()
        with job_description(self.spark, self._describe(steps, run.n_shards)):
            delta = sum_deltas_rdd(out.mapPartitions(_leading_deltas, preservesPartitioning=True), run.n_shards)
        if run.cached is not None:
            run.cached.unpersist()
        run.cached = out
        if checkpoint:
            # Read back from the files, not through ``out``: a task reading ``out`` would carry its closure and
            # with it the broadcasts destroyed below. The files keep the shards' partitioner.
            files = out.getCheckpointFile()
            if files is None:
                raise RuntimeError("Spark did not checkpoint the round's output")
            out.unpersist()  # still referenced by run.cached: Spark may delete a collected RDD's checkpoint files
            out = self.spark.sparkContext._checkpointFile(files, out._jrdd_deserializer)
            for bc in run.broadcasts:  # the truncated lineage no longer needs them
                bc.destroy()
            run.broadcasts = []
        run.state_rdd = out.filter(lambda kv: not isinstance(kv[1], SharedDelta))
        return delta

    def _describe(self, steps: list[tuple[int, int]], n_shards: int) -> str:
        """``warp epoch 3/10`` (``round 2/4`` with several rounds), or ``warp epochs 1-10/10`` for one job."""
        loss, epochs, rounds = self.kernel.loss, self.params.epochs, rounds_per_epoch(self.params, n_shards)
        (first, first_round), (last, _) = steps[0], steps[-1]
        if first != last:
            return f"{loss} epochs {first + 1}-{last + 1}/{epochs}"
        step = f" round {first_round + 1}/{rounds}" if len(steps) == 1 and rounds > 1 else ""
        return f"{loss} epoch {first + 1}/{epochs}{step}"

    def _report_epochs(self, run: _FitRun, stop: int, seconds: float, per_epoch: dict[int, list[float]],
                       on_epoch: Callable[[int, dict[str, float], WarpState | None], None] | None,
                       ) -> WarpState | None:
        """Log and record epochs ``run.epochs_done .. stop - 1``; returns the model after the last one."""
        state = None
        for e in range(run.epochs_done, stop):
            n_samples, n_updates, loss_sum, kernel_seconds = per_epoch.get(e, [0.0] * 4)
            stats = {"epoch_seconds": seconds, "samples_per_s": n_samples / seconds if seconds else 0.0,
                     "updates": float(n_updates), "mean_loss": loss_sum / max(n_samples, 1),
                     "kernel_cpu_seconds": kernel_seconds}
            run.history.append({"epoch": float(e + 1), **stats})
            state = self._state(run, e + 1) if e == stop - 1 else None
            log.info("epoch %d: %.1fs (kernel %.1f CPU-s over %d shards in %d tasks), %.0f samples/s, "
                     "%d updates, mean loss %.4f", e + 1, seconds, kernel_seconds, run.n_shards, run.n_tasks,
                     stats["samples_per_s"], stats["updates"], stats["mean_loss"])
            if on_epoch is not None:
                on_epoch(e + 1, stats, state)
        return state

    @staticmethod
    def _state(run: _FitRun, epochs_done: int) -> WarpState:
        """The model as it stands: the driver's parameters and the cached shards' user blocks."""
        return WarpState(item_side=run.item_side, item_features=run.item_features,
                         user_blocks=run.state_rdd.mapPartitions(_user_blocks, True), n_users=run.n_users,
                         n_items=run.n_items, epochs_done=epochs_done, history=run.history, cache=run.cached,
                         n_shards=run.n_shards, broadcasts=[*run.broadcasts, run.features_bc],
                         user_shared=run.user_shared)

    # -- helpers

    def _fresh_state(self, shards: RDD) -> RDD:
        """``(ShardData, UserBlock)`` per shard, as :func:`to_chunks` records, with freshly initialised users."""
        p, optimiser = self.params, self.kernel.optimiser

        def init(records: Iterable[tuple[int, StateChunk]]) -> Iterator[tuple[int, StateChunk]]:
            for shard_id, data in from_chunks(records):
                rng = np.random.default_rng([p.seed, streams.USER_INIT, shard_id])
                block = UserBlock(data.users, SideParams.init(len(data.users), p.no_components, optimiser, rng),
                                  data.user_features)
                yield from to_chunks(shard_id, (data, block), p.state_chunk_bytes)

        return shards.mapPartitions(init, preservesPartitioning=True)

    def _warm_state(self, shards: RDD, init: WarpState, n_shards: int, n_tasks: int) -> RDD:
        """Like ``_fresh_state``, but users of ``init`` keep their parameters and optimiser state."""
        p, optimiser, epochs_done = self.params, self.kernel.optimiser, init.epochs_done

        def old_rows(block: UserBlock) -> list[tuple[int, tuple[int, dict[str, np.ndarray]]]]:
            arrays = block.side.to_dict()
            return [(int(u) % n_shards, (int(u), {name: a[i] for name, a in arrays.items()}))
                    for i, u in enumerate(block.users)]

        def build(shard_id: int, data: ShardData, rows: Iterable[tuple[int, dict[str, np.ndarray]]]):
            rng = np.random.default_rng([p.seed, streams.USER_INIT, shard_id, epochs_done])
            arrays = SideParams.init(len(data.users), p.no_components, optimiser, rng).to_dict()
            position = {int(u): i for i, u in enumerate(data.users)}
            for user, row in rows:
                if user in position:
                    for name, value in row.items():
                        arrays[name][position[user]] = value
            return data, UserBlock(data.users, SideParams.from_dict(arrays), data.user_features)

        previous = init.user_blocks.flatMap(lambda kv: old_rows(kv[1]))
        grouped = shards.cogroup(previous, numPartitions=n_shards)
        return grouped.flatMap(
            lambda kv: [record for shard_id, data in from_chunks((kv[0], c) for c in kv[1][0])
                        for record in to_chunks(shard_id, build(shard_id, data, kv[1][1]), p.state_chunk_bytes)]
        ).partitionBy(n_tasks, lambda k: k % n_tasks)

    def _epoch_rdd(self, state_rdd: RDD, item_bc: Any, features_bc: Any, steps: list[tuple[int, int]],
                   n_shards: int) -> RDD:
        """Per partition: its shards' ``(shard_id, SharedDelta)`` records, then the shards' new states as chunks.

        ``steps`` are the ``(epoch, sync_round)`` pairs the job trains (several
        only when one task holds every shard). The delta comes first so
        :func:`_leading_deltas` reads it from the cached output without
        unpickling the shards behind it.
        """
        p, kernel = self.params, self.kernel

        def run(records: Iterator[tuple[int, StateChunk]]) -> Iterator[tuple[int, Any]]:
            shards = [(shard_id, data, block.side) for shard_id, (data, block) in from_chunks(records)]
            if not shards:
                return
            features, feature_alpha, user_alpha = features_bc.value
            item_side, user_shared = item_bc.value
            users, deltas = run_shard_steps(shards, item_side, user_shared, steps, item_features=features,
                                            kernel=kernel, seed=p.seed, n_shards=n_shards, params=p,
                                            item_feature_alpha=feature_alpha, user_feature_alpha=user_alpha)
            yield from deltas
            for (shard_id, data, _), side in zip(shards, users):
                yield from to_chunks(shard_id, (data, UserBlock(data.users, side, data.user_features)),
                                     p.state_chunk_bytes)

        return state_rdd.mapPartitions(run, preservesPartitioning=True)


def _shared_bytes(run: _FitRun) -> int:
    """Bytes of one round's item-side broadcast (item side plus user side features' rows)."""
    return run.item_side.nbytes + (run.user_shared.nbytes if run.user_shared is not None else 0)


def _next_stop(epoch: int, last_epoch: int, state_every: int, checkpoint_interval: int) -> int:
    """The first epoch count after ``epoch`` at which a single-shard fit hands its state back to the driver.

    ``checkpoint_interval`` 0 means no checkpoints (no checkpoint directory set).

    >>> _next_stop(0, 10, 0, 5), _next_stop(5, 10, 0, 5), _next_stop(0, 10, 2, 5), _next_stop(4, 10, 3, 5)
    (5, 10, 2, 5)
    >>> _next_stop(0, 10, 0, 0)
    10
    """
    stop = epoch + 1
    while (stop < last_epoch and not (checkpoint_interval and stop % checkpoint_interval == 0)
           and not (state_every and stop % state_every == 0)):
        stop += 1
    return stop
