"""Compiled per-sample kernel for WARP, k-OS WARP, BPR and logistic training with LightFM 1.17 semantics.

One call to :func:`fit_epoch` is one shuffled pass over a set of (user, item)
interactions. It is what the Spark trainer runs per shard: the user side lives
in the shard, the item side is a broadcast copy whose changes are merged
afterwards. The loop is compiled with numba (``nogil``, cached on disk), one
sample at a time, like LightFM's Cython loop.

How it maps onto LightFM (``lightfm/_lightfm_fast.pyx.template``)
----------------------------------------------------------------
* Representations: ``rep = scale * features[row] @ embeddings`` and
  ``bias = scale * features[row] @ biases``; ``score = user_rep . item_rep +
  user_bias + item_bias`` (``compute_representation``). ``scale`` is the lazy
  L2 factor below, 1.0 when the alphas are 0. Identity features (one feature
  per row, weight 1: plain collaborative filtering) are detected and read as
  plain rows.
* WARP: for a positive (u, i), draw items uniformly. The first draw ``j``
  with ``score(j) > score(i) - 1`` that is not a known positive of ``u`` is the
  negative, and the update is weighted by
  ``w * min(log(max(1, floor((n_items - 1) / n_draws))), 10)``; no violation in
  ``max_sampled`` counted draws means no update. As in LightFM only violators
  are checked against the positives. A violating positive is skipped
  *without* counting (LightFM counts it): on catalogues where a user's
  positives are a large share of the high-scoring items, counting them spends
  ``max_sampled`` on draws that can never give an update, and measured p@5
  drops (the planted test in ``tests/spark/test_warp_trainer.py``).
* k-OS WARP (``warp-kos``, LightFM's ``fit_warp_kos``): one sample per user;
  ``n`` of the user's positives are drawn with replacement, the ``k``-th best
  scored is the positive of a WARP step. The sample weight is the chosen
  interaction's (LightFM refuses sample weights for this loss).
* BPR: one negative, the item of a uniformly drawn interaction of the pass
  (popularity-proportional, as LightFM's ``item_ids[rand % no_examples]``),
  redrawn while it is a positive; the update is weighted by
  ``w * (1 - sigmoid(score(i) - score(j)))``.
* logistic: every interaction is a labelled example, ``y = 1`` when its weight
  is > 0 and 0 otherwise (LightFM reads the label from the interaction value's
  sign); the update is ``|w| * (sigmoid(score) - y)`` times the score's
  gradient (LightFM's ``update``), user bias included.
* Pairwise update directions are LightFM's ``warp_update``: with coefficient
  ``c``, positive item ``-c * user_rep``, negative item ``+c * user_rep``, user
  ``c * (neg_rep - pos_rep)``, item biases ``-c``/``+c`` and the user bias
  ``+c`` (LightFM's choice: the user bias does not affect the pairwise loss,
  so its true gradient is 0; LightFM still moves it, and so do we). Each
  feature of a row receives its weight times the row's gradient, in LightFM's
  order (positive item, negative item, user), so a feature shared by the
  positive and the negative item takes two consecutive steps.
* adagrad: ``p -= lr / sqrt(acc) * g``, then ``acc += g**2`` (accumulators
  start at 1). adadelta: LightFM's ``update_features`` formulas with ``rho``
  and ``epsilon``.
* L2 (``user_alpha`` / ``item_alpha``) is LightFM's lazy scheme, step for
  step: each touched parameter is multiplied by ``1 + alpha * local_lr`` after
  its step, the side's ``scale`` by ``1 + alpha * mean(local_lr of the
  parameters touched by the sample)``, representations are multiplied by
  ``scale``, and every parameter of the side is divided by ``scale`` (which is
  reset to 1) when ``scale`` exceeds 1e6 and at the end of the pass.

Where it differs
----------------
* Random numbers: the shuffle is NumPy's ``rng.permutation``; negative draws
  come from a SplitMix64 stream seeded from ``rng`` (LightFM: ``rand_r``).
  The contract is spelled out in :mod:`recspark.models.warp.reference`.
* BPR: LightFM redraws a positive up to ``no_examples`` times and then uses
  it anyway; here after ``BPR_POPULAR_DRAWS`` (256) positives in a row the
  negative is drawn uniformly among the user's non-positives, so a user who
  holds most of the popular items costs 256 draws, not one per interaction of the pass.
* A user whose positives cover every item has no valid negative; LightFM would
  loop forever, here the sample is skipped and counted in
  ``EpochStats.n_skipped`` (so are WARP/BPR interactions with weight <= 0,
  which LightFM skips as non-positive).
* Arithmetic is float32 throughout (LightFM mixes float and double).
* ``num_threads > 1`` runs LightFM-style lock-free threads inside the pass:
  faster, but the result depends on thread timing. The default, 1, is
  deterministic.
* Sharded training (the Spark trainer) adds three knobs LightFM has no use
  for: accumulator scales (``item_accum_scale``, ``user_accum_scale``),
  ``n_items_total`` and per-feature L2 (``*_feature_alpha``); see
  :func:`fit_epoch`.

This module never imports pyspark.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recspark.config import KernelParams
from recspark.errors import ConfigError, DataValidationError, ModelFitError
from recspark.models.jit import inline, jit
from recspark.models.selection import sorted_contains
from recspark.models.warp.state import SideParams

#: LightFM clips the WARP rank weight at this value for numerical stability.
MAX_LOSS = 10.0
#: LightFM applies the lazy L2 rescaling early once a side's scale passes this.
MAX_REG_SCALE = 1_000_000.0
#: With several threads and an alpha > 0, threads meet after this many samples each so that the
#: lazy-L2 rescaling (which touches every parameter) never runs while another thread trains.
THREAD_SEGMENT = 1 << 16
#: BPR draws a negative from the pass's interactions (popularity-proportional) at most this many
#: times before it falls back to a uniform non-positive item: a user whose positives hold a share
#: f of the interactions falls back with chance f**256 (< 1e-5 for f <= 0.95).
BPR_POPULAR_DRAWS = 256

_WARP, _BPR, _LOGISTIC, _KOS = range(4)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)
_MAX_LOSS32 = np.float32(MAX_LOSS)
# SplitMix64 (Steele, Lea & Flood 2014): a 64-bit counter through a bijective mixer.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
#: Thread ``t`` of a pass starts its stream at ``seed + t * THREAD_STRIDE`` (mod 2**64).
THREAD_STRIDE = 0x632BE59BD9B4E019


@dataclass
class EpochStats:
    """What one :func:`fit_epoch` call did.

    Attributes
    ----------
    n_samples : int
        Samples visited: interactions, or users for 'warp-kos'.
    n_updates : int
        Samples that produced an update (WARP/k-OS: a violating negative was
        found; BPR: a negative was drawn; logistic: every sample).
    n_skipped : int
        Samples whose user has no item left to use as a negative, or (pairwise
        losses) whose weight is <= 0.
    loss_sum : float
        Sum over samples of the pre-update loss: WARP/k-OS ``weight *
        rank_weight * (1 - s_pos + s_neg)`` for updated samples (0 otherwise),
        BPR ``-weight * log(sigmoid(s_pos - s_neg))``, logistic the weighted
        cross-entropy. A monitoring signal, comparable across epochs of the
        same loss.
    item_feature_updates : np.ndarray of int64, shape [n_item_features]
        How many (sample, feature) gradient contributions each item feature
        received; the trainer weights shard deltas by it.
    cpu_seconds : float
        CPU time of the compiled pass, summed over its threads (per-thread
        clocks, so passes running side by side in one process do not count
        each other's time).
    """

    n_samples: int = 0
    n_updates: int = 0
    n_skipped: int = 0
    loss_sum: float = 0.0
    cpu_seconds: float = 0.0
    item_feature_updates: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )

    @property
    def mean_loss(self) -> float:
        """``loss_sum / n_samples`` (0.0 for an empty pass)."""
        return self.loss_sum / self.n_samples if self.n_samples else 0.0


def representations(
    features: sp.csr_matrix,
    side: SideParams,
    scale: float = 1.0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Feature-weighted sums of a side's embeddings and biases.

    Parameters
    ----------
    features : scipy.sparse.csr_matrix of float32, shape [n_rows, side.n_features]
        Each row's weights over features (identity for one feature per row).
    side : SideParams
    scale : float
        LightFM's pending lazy-L2 factor; 1.0 outside an epoch.

    Returns
    -------
    reps : np.ndarray of float32, shape [n_rows, no_components]
    biases : np.ndarray of float32, shape [n_rows]
    """
    fmap = _Features(features, side, "features")
    if fmap.identity:
        reps, biases = side.embeddings.copy(), side.biases.copy()
    else:
        reps = np.asarray(fmap.csr @ side.embeddings, dtype=np.float32)
        biases = np.asarray(fmap.csr @ side.biases, dtype=np.float32)
    if scale != 1:
        reps *= np.float32(scale)
        biases *= np.float32(scale)
    return reps, biases


def score(
    user_side: SideParams,
    item_side: SideParams,
    user_features: sp.csr_matrix,
    item_features: sp.csr_matrix,
    user_idx: npt.ArrayLike,
    item_idx: npt.ArrayLike,
) -> npt.NDArray[np.float32]:
    """Scores of (user, item) pairs, as LightFM's ``predict``: ``user_rep . item_rep + user_bias + item_bias``.

    ``user_idx`` / ``item_idx`` are parallel arrays of row indices into the
    feature matrices.
    """
    users = np.asarray(user_idx, dtype=np.int64)
    items = np.asarray(item_idx, dtype=np.int64)
    umap = _Features(user_features, user_side, "user_features")
    imap = _Features(item_features, item_side, "item_features")
    _check_index(users, umap.n_rows, "user_idx")
    _check_index(items, imap.n_rows, "item_idx")
    if users.shape != items.shape:
        raise DataValidationError(
            f"score: user_idx has shape {users.shape} but item_idx {items.shape}; "
            "pass one item per user."
        )
    u_rep = np.asarray(umap.csr[users] @ user_side.embeddings, dtype=np.float32)
    i_rep = np.asarray(imap.csr[items] @ item_side.embeddings, dtype=np.float32)
    u_bias = np.asarray(umap.csr[users] @ user_side.biases, dtype=np.float32)
    i_bias = np.asarray(imap.csr[items] @ item_side.biases, dtype=np.float32)
    return np.einsum("ij,ij->i", u_rep, i_rep) + u_bias + i_bias


def fit_epoch(
    user_side: SideParams,
    item_side: SideParams,
    user_features: sp.csr_matrix,
    item_features: sp.csr_matrix,
    user_idx: npt.ArrayLike,
    item_idx: npt.ArrayLike,
    sample_weight: npt.ArrayLike | None,
    positives: sp.csr_matrix,
    params: KernelParams,
    rng: np.random.Generator,
    *,
    item_accum_scale: float = 1.0,
    n_items_total: int | None = None,
    item_feature_alpha: npt.NDArray[np.float32] | None = None,
    user_feature_alpha: npt.NDArray[np.float32] | None = None,
    user_accum_scale: npt.NDArray[np.float32] | None = None,
) -> EpochStats:
    """One shuffled pass of updates over the given interactions, in place.

    Parameters
    ----------
    user_side, item_side : SideParams
        Mutated in place. Their optimiser must be ``params.optimiser``.
    user_features : csr_matrix of float32, shape [n_users, user_side.n_features]
        Row ``u`` holds user ``u``'s feature weights; ``scipy.sparse.identity``
        for plain collaborative filtering (detected and special-cased).
    item_features : csr_matrix of float32, shape [n_items, item_side.n_features]
        Same for items. WARP's negatives are drawn uniformly from its rows,
        BPR's from ``item_idx`` (see the module docstring).
    user_idx, item_idx : array-like of int, shape [n_samples]
        The interactions to visit, as row indices into the feature matrices.
    sample_weight : array-like of float, shape [n_samples], or None
        Per-interaction weights multiplying the update (None: all 1);
        'logistic' reads the label from their sign.
    positives : csr_matrix, shape [n_users, n_items]
        Every known positive of each user (usually a superset of the pairs
        above), so that none is ever used as a negative.
    params : KernelParams
    rng : np.random.Generator
        Drives the shuffle and seeds the negative draws; same inputs and same
        generator state give bit-identical results (with ``num_threads=1``).
    item_accum_scale : float
        Item-side squared gradients enter the optimiser accumulators this many
        times over. The Spark trainer sets it to the number of shards that
        train concurrently on copies of the item side: each shard then takes
        the smaller steps it would take if it saw the other shards' gradients
        too, so the shards' summed steps approximate one sequential pass
        instead of overshooting by up to sqrt(shards). The trainer divides the
        accumulator deltas back by it. 1.0 (the default) is plain LightFM.
    n_items_total : int, optional
        The catalogue size used in WARP's rank estimate
        ``floor((n_items_total - 1) / n_draws)``, when ``item_features`` holds
        only a uniform block of the catalogue (the trainer's stratified rounds:
        the fraction of violators in a uniform block estimates the global one).
        Default: the number of rows of ``item_features``.
    item_feature_alpha : np.ndarray of float32, shape [item_side.n_features], optional
        Extra L2 per item feature (e.g. one strength per feature group: tags
        regularised harder than ids). Applied as sparse L2 when a feature is
        updated, ``p *= 1 - alpha_f * local_lr``, on top of ``item_alpha``'s
        lazy scheme (which LightFM applies to every feature alike).
    user_feature_alpha : np.ndarray of float32, shape [user_side.n_features], optional
        The same for user features.
    user_accum_scale : np.ndarray of float32, shape [user_side.n_features], optional
        ``item_accum_scale`` per user feature: the trainer sets it to the
        number of shards for user side features (shared by users of every
        shard, so trained concurrently like items) and 1 for a shard's own
        users' identity features.

    Returns
    -------
    EpochStats

    Raises
    ------
    ConfigError
        If a side was initialised for a different optimiser.
    DataValidationError
        If shapes or indices are inconsistent.
    ModelFitError
        If any parameter is not finite after the pass (training diverged).
    """
    for name, side in (("user_side", user_side), ("item_side", item_side)):
        if side.optimiser != params.optimiser:
            raise ConfigError(
                f"optimiser: params say {params.optimiser!r} but {name} carries "
                f"{side.optimiser!r} accumulators; initialise both sides with "
                "SideParams.init(..., optimiser=params.optimiser)."
            )
    if user_side.no_components != item_side.no_components:
        raise DataValidationError(
            f"no_components: user side has {user_side.no_components}, item side "
            f"{item_side.no_components}; both sides must use the same dimension."
        )
    umap = _Features(user_features, user_side, "user_features")
    imap = _Features(item_features, item_side, "item_features")
    users = np.ascontiguousarray(np.asarray(user_idx, dtype=np.int64).ravel())
    items = np.ascontiguousarray(np.asarray(item_idx, dtype=np.int64).ravel())
    if users.shape != items.shape:
        raise DataValidationError(
            f"fit_epoch: user_idx has {users.size} entries but item_idx {items.size}; "
            "they must be parallel arrays."
        )
    _check_index(users, umap.n_rows, "user_idx")
    _check_index(items, imap.n_rows, "item_idx")
    if sample_weight is None:
        weights = np.ones(users.size, dtype=np.float32)
    else:
        weights = np.ascontiguousarray(np.asarray(sample_weight, dtype=np.float32).ravel())
        if weights.shape != users.shape:
            raise DataValidationError(
                f"sample_weight: {weights.size} entries for {users.size} interactions; "
                "pass one weight per interaction or None."
            )
        if not np.isfinite(weights).all():
            raise DataValidationError("sample_weight: contains NaN or infinite values.")
    pos_ptr, pos_ind = _positive_rows(positives, umap.n_rows, imap.n_rows)
    u_scale = _per_feature("user_accum_scale", user_accum_scale, user_side.n_features, 1.0)
    i_scale = np.full(item_side.n_features, np.float32(item_accum_scale), dtype=np.float32)
    u_alpha = _per_feature("user_feature_alpha", user_feature_alpha, user_side.n_features, 0.0)
    i_alpha = _per_feature("item_feature_alpha", item_feature_alpha, item_side.n_features, 0.0)

    if params.loss == "warp-kos":  # one sample per user: the interactions grouped by user
        by_user = np.argsort(users, kind="stable")
        group_users, starts = np.unique(users[by_user], return_index=True)
        group_ptr = np.append(starts, users.size).astype(np.int64)
        order = rng.permutation(group_users.size).astype(np.int64)
    else:
        by_user, group_users, group_ptr = _EMPTY_I64, _EMPTY_I64, _EMPTY_I64
        order = rng.permutation(users.size).astype(np.int64)
    seed = int(rng.integers(0, 2**63 - 1, dtype=np.int64))

    stats = EpochStats(item_feature_updates=np.zeros(item_side.n_features, dtype=np.int64))
    user_table, item_table = _pack(user_side), _pack(item_side)
    scales = np.ones(2, dtype=np.float64)  # pending lazy-L2 factors: user, item
    regularised = params.user_alpha > 0 or params.item_alpha > 0

    def run(lo: int, hi: int, state: np.ndarray, counters: np.ndarray, updates: np.ndarray) -> None:
        started = time.thread_time()
        _run(_LOSS_CODES[params.loss], order[lo:hi], users, items, weights, by_user, group_users, group_ptr,
             umap.identity, umap.indptr, umap.indices, umap.data,
             imap.identity, imap.indptr, imap.indices, imap.data,
             pos_ptr, pos_ind, user_table, item_table, user_side.no_components,
             params.optimiser == "adagrad", np.float32(params.learning_rate), np.float32(params.rho),
             np.float32(params.epsilon), np.float32(params.user_alpha), np.float32(params.item_alpha),
             params.max_sampled, params.k, params.n, n_items_total or imap.n_rows,
             u_scale, i_scale, u_alpha, i_alpha, scales, state, counters, updates,
             regularised and threads == 1)  # with threads, the rescale waits for a segment end
        counters[4] += time.thread_time() - started

    threads = min(params.num_threads, max(order.size, 1))
    states = [np.array([(seed + t * THREAD_STRIDE) % 2**64], dtype=np.uint64) for t in range(threads)]
    counters = [np.zeros(5, dtype=np.float64) for _ in range(threads)]  # samples, updates, skipped, loss, CPU s
    updates = [stats.item_feature_updates] + [np.zeros_like(stats.item_feature_updates) for _ in range(threads - 1)]
    if threads == 1:
        run(0, order.size, states[0], counters[0], updates[0])
    else:
        bounds = np.linspace(0, order.size, threads + 1).astype(np.int64)
        segment = THREAD_SEGMENT if regularised else order.size
        with ThreadPoolExecutor(threads) as pool:
            for offset in range(0, int(np.diff(bounds).max()), segment):
                spans = [(int(bounds[t]) + offset, min(int(bounds[t]) + offset + segment, int(bounds[t + 1])))
                         for t in range(threads)]
                list(pool.map(lambda t: run(*spans[t], states[t], counters[t], updates[t])
                              if spans[t][0] < spans[t][1] else None, range(threads)))
                if regularised and scales.max() > MAX_REG_SCALE:
                    _rescale(user_table, item_table, user_side.no_components, scales)
        for extra in updates[1:]:
            stats.item_feature_updates += extra
    if regularised:
        _rescale(user_table, item_table, user_side.no_components, scales)
    _unpack(user_table, user_side)
    _unpack(item_table, item_side)
    total = np.sum(counters, axis=0)
    stats.n_samples, stats.n_updates, stats.n_skipped = (int(x) for x in total[:3])
    stats.loss_sum, stats.cpu_seconds = float(total[3]), float(total[4])
    check_finite(user_side, "user")
    check_finite(item_side, "item")
    return stats


def check_finite(side: SideParams, name: str) -> None:
    """Raise :class:`ModelFitError` (naming ``learning_rate``) when a side holds NaN or infinite values."""
    if not (np.isfinite(side.embeddings).all() and np.isfinite(side.biases).all()):
        raise ModelFitError(
            f"Training diverged: the {name} embeddings or biases contain NaN or "
            "infinite values. Lower learning_rate (or raise the alphas' "
            "regularisation if you use large sample weights)."
        )


# --------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------

_LOSS_CODES = {"warp": _WARP, "bpr": _BPR, "logistic": _LOGISTIC, "warp-kos": _KOS}
_EMPTY_I64 = np.zeros(0, dtype=np.int64)



def _per_feature(name: str, values: npt.ArrayLike | None, n_features: int, default: float) -> np.ndarray:
    """``values`` as float32 after checking there is one value >= 0 per feature (None: ``default`` each)."""
    if values is None:
        return np.full(n_features, default, dtype=np.float32)
    array = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    if array.shape != (n_features,) or not (array >= 0).all():
        raise DataValidationError(f"{name}: expected {n_features} values >= 0 (one per feature), got shape "
                                  f"{array.shape}.")
    return array


def _check_index(idx: np.ndarray, n: int, name: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)]
        raise DataValidationError(
            f"{name}: {bad.size} indices outside [0, {n}) (first: {int(bad[0])}); "
            "indices must be local rows of the feature matrix."
        )


class _Features:
    """A side's feature matrix as canonical CSR arrays for the compiled loop, identity detected."""

    def __init__(self, features: sp.spmatrix, side: SideParams, name: str):
        if not sp.issparse(features):
            raise DataValidationError(
                f"{name}: expected a scipy.sparse CSR matrix, got {type(features).__name__}."
            )
        csr = sp.csr_matrix(features, dtype=np.float32)
        if csr.shape[1] != side.n_features:
            raise DataValidationError(
                f"{name}: has {csr.shape[1]} feature columns but the side has "
                f"{side.n_features} feature rows; they must match."
            )
        if not csr.has_canonical_format:
            csr = csr.copy()
            csr.sum_duplicates()
        self.csr = csr
        self.n_rows = n = csr.shape[0]
        self.identity = bool(
            n == csr.shape[1] and csr.nnz == n
            and np.array_equal(csr.indptr, np.arange(n + 1))
            and np.array_equal(csr.indices, np.arange(n))
            and (csr.data == 1).all()
        )
        self.indptr = csr.indptr.astype(np.int64)
        self.indices = csr.indices.astype(np.int64)
        self.data = np.ascontiguousarray(csr.data, dtype=np.float32)


def _positive_rows(positives: sp.spmatrix, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's known positives as sorted CSR rows (``indptr``, ``indices``), for binary search."""
    if not sp.issparse(positives):
        raise DataValidationError(
            f"positives: expected a scipy.sparse matrix, got {type(positives).__name__}."
        )
    if positives.shape != (n_users, n_items):
        raise DataValidationError(
            f"positives: shape {positives.shape}, expected (n_users, n_items) = "
            f"({n_users}, {n_items}) from the feature matrices."
        )
    csr = sp.csr_matrix(positives)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return csr.indptr.astype(np.int64), csr.indices.astype(np.int64)


def _blocks(side: SideParams) -> list[tuple[np.ndarray, np.ndarray]]:
    blocks = [(side.embeddings, side.biases), (side.emb_accum, side.bias_accum)]
    if side.emb_delta_accum is not None:
        blocks.append((side.emb_delta_accum, side.bias_delta_accum))
    return blocks


def _pack(side: SideParams) -> np.ndarray:
    """The side as one row per feature: ``[embedding | bias | accumulators | bias accumulator (| adadelta's)]``.

    A feature's parameters and optimiser state then share a few adjacent
    cache lines instead of four or six arrays' worth: the pass is bound by
    memory latency (random users and items), and this layout measured ~25%
    more samples per second. Packing costs one copy of the side per pass.
    """
    k1 = side.no_components + 1
    blocks = _blocks(side)
    table = np.empty((side.n_features, k1 * len(blocks)), dtype=np.float32)
    for b, (emb, bias) in enumerate(blocks):
        table[:, b * k1: b * k1 + k1 - 1] = emb
        table[:, b * k1 + k1 - 1] = bias
    return table


def _unpack(table: np.ndarray, side: SideParams) -> None:
    k1 = side.no_components + 1
    for b, (emb, bias) in enumerate(_blocks(side)):
        np.copyto(emb, table[:, b * k1: b * k1 + k1 - 1])
        np.copyto(bias, table[:, b * k1 + k1 - 1])


# --------------------------------------------------------------------------
# The compiled loop
# --------------------------------------------------------------------------




@inline
def _below(state, n):
    """The next SplitMix64 output of ``state`` (advanced in place) mapped onto [0, n): ``(z >> 32) * n >> 32``."""
    s = state[0] + _GAMMA
    state[0] = s
    z = (s ^ (s >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return np.int64(((z >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))


@inline
def _rep(out, row, ident, ptr, ind, dat, table, k, scale):
    """``out = scale * features[row] @ table[:, :k + 1]``: the representation, bias last."""
    if ident:
        for c in range(k + 1):
            out[c] = scale * table[row, c]
        return
    for c in range(k + 1):
        out[c] = _ZERO
    for p in range(ptr[row], ptr[row + 1]):
        f = ind[p]
        w = scale * dat[p]
        for c in range(k + 1):
            out[c] += w * table[f, c]


@inline
def _dot(a, b, k):
    acc = _ZERO
    for c in range(k):
        acc += a[c] * b[c]
    return acc


@inline
def _adagrad(value, accum, g, acc_scale, l2, feature_l2, lr):
    """LightFM's adagrad step of one parameter, then the lazy-L2 and per-feature L2 factors."""
    local = lr / np.sqrt(accum)
    value = (value - local * g) * ((_ONE + l2 * local) * (_ONE - feature_l2 * local))
    return value, accum + acc_scale * g * g, local


@inline
def _adadelta(value, accum, delta, g, acc_scale, l2, feature_l2, rho, eps):
    """LightFM's adadelta step of one parameter, then the two L2 factors."""
    accum = rho * accum + (_ONE - rho) * acc_scale * g * g
    local = np.sqrt(delta + eps) / np.sqrt(accum + eps)
    update = local * g
    delta = rho * delta + (_ONE - rho) * update * update
    value = (value - update) * ((_ONE + l2 * local) * (_ONE - feature_l2 * local))
    return value, accum, delta, local


@inline
def _update_row(row, ident, ptr, ind, dat, table, k, coef, direction,
                acc_scale, feature_alpha, alpha, adagrad, lr, rho, eps, counts, count):
    """One optimiser step for every feature of ``row`` along ``coef * weight * direction``.

    ``direction[k]`` is the bias's. The L2 factors are exactly 1 when their
    alpha is 0, so they need no branch and the loops vectorise. Returns the
    sum of the local learning rates and the number of features (for the
    lazy-L2 mean); ``counts[f] += 1`` per feature when ``count``.
    """
    k1 = k + 1
    lr_sum = 0.0
    start, stop = (row, row + 1) if ident else (ptr[row], ptr[row + 1])
    for p in range(start, stop):
        f = row if ident else ind[p]
        cw = coef if ident else coef * dat[p]
        a_s = acc_scale[f]
        fa = feature_alpha[f]
        if adagrad:
            for c in range(k1):
                table[f, c], table[f, k1 + c], local = _adagrad(
                    table[f, c], table[f, k1 + c], cw * direction[c], a_s, alpha, fa, lr)
                lr_sum += local
        else:
            for c in range(k1):
                table[f, c], table[f, k1 + c], table[f, 2 * k1 + c], local = _adadelta(
                    table[f, c], table[f, k1 + c], table[f, 2 * k1 + c], cw * direction[c], a_s, alpha, fa, rho, eps)
                lr_sum += local
        if count:
            counts[f] += 1
    return lr_sum, stop - start


@inline
def _divide(table, k, scale):
    inv = np.float32(scale)
    for f in range(table.shape[0]):
        for c in range(k + 1):
            table[f, c] /= inv


@jit
def _rescale(user_table, item_table, k, scales):
    """LightFM's ``regularize``: fold the pending lazy-L2 factors into the parameters, reset them to 1."""
    if scales[0] != 1.0:
        _divide(user_table, k, scales[0])
    if scales[1] != 1.0:
        _divide(item_table, k, scales[1])
    scales[0] = 1.0
    scales[1] = 1.0


@inline
def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@jit
def _run(loss, order, users, items, weights, by_user, group_users, group_ptr,
         u_ident, u_ptr, u_ind, u_dat, i_ident, i_ptr, i_ind, i_dat, pos_ptr, pos_ind,
         ut, it, k,
         adagrad, lr, rho, eps, user_alpha, item_alpha, max_sampled, kos_k, kos_n, n_rank_items,
         u_acc_scale, i_acc_scale, u_feature_alpha, i_feature_alpha, scales, state, counters, feature_updates,
         rescale_early):
    """The samples ``order`` (rows, or k-OS user groups) of one pass; see :func:`fit_epoch` for the rules."""
    n_items = i_ptr.size - 1
    ur = np.empty(k + 1, np.float32)  # user representation | bias
    pr = np.empty(k + 1, np.float32)  # positive item
    nr = np.empty(k + 1, np.float32)  # negative item
    u_dir = np.empty(k + 1, np.float32)  # the items' update direction: [user rep | 1]
    i_dir = np.empty(k + 1, np.float32)  # the user's: [neg rep - pos rep | 1], or [item rep | 1]
    cand_items = np.empty(max(kos_n, 1), np.int64)
    cand_rows = np.empty(max(kos_n, 1), np.int64)
    cand_scores = np.empty(max(kos_n, 1), np.float32)
    regularised = user_alpha > 0 or item_alpha > 0
    for s in range(order.size):
        counters[0] += 1
        if loss == _KOS:
            g = order[s]
            u = group_users[g]
        else:
            row = order[s]
            u = users[row]
        n_pos = pos_ptr[u + 1] - pos_ptr[u]
        if loss != _LOGISTIC and n_pos >= n_items:
            counters[2] += 1
            continue
        u_s = np.float32(scales[0])
        i_s = np.float32(scales[1])
        _rep(ur, u, u_ident, u_ptr, u_ind, u_dat, ut, k, u_s)
        if loss == _KOS:
            m = group_ptr[g + 1] - group_ptr[g]
            n_cand = min(kos_n, m)
            for t in range(n_cand):
                r = by_user[group_ptr[g] + _below(state, m)]
                cand_rows[t] = r
                cand_items[t] = items[r]
                _rep(pr, items[r], i_ident, i_ptr, i_ind, i_dat, it, k, i_s)
                cand_scores[t] = _dot(ur, pr, k) + ur[k] + pr[k]
            ranked = np.argsort(-cand_scores[:n_cand], kind="mergesort")
            pick = ranked[min(kos_k, n_cand) - 1]
            row = cand_rows[pick]
        i = items[row]
        w = weights[row]
        if loss != _LOGISTIC and w <= 0:
            counters[2] += 1
            continue
        _rep(pr, i, i_ident, i_ptr, i_ind, i_dat, it, k, i_s)
        s_pos = _dot(ur, pr, k) + ur[k] + pr[k]

        neg = -1  # stays -1 for logistic: one labelled item, no negative
        if loss == _LOGISTIC:
            y = _ONE if w > 0 else _ZERO
            aw = abs(w)
            coef = aw * (_ONE / (_ONE + np.float32(math.exp(-s_pos))) - y)
            counters[3] += aw * (_softplus(s_pos) - y * s_pos)
        else:
            s_neg = _ZERO
            if loss == _BPR:
                j = -1
                for _ in range(BPR_POPULAR_DRAWS):  # LightFM: the item of a random interaction
                    c = items[_below(state, items.size)]
                    if not sorted_contains(pos_ind, pos_ptr[u], pos_ptr[u + 1], c):
                        j = c
                        break
                while j < 0:  # the user holds the popular items: a uniform non-positive (one exists)
                    c = _below(state, n_items)
                    if not sorted_contains(pos_ind, pos_ptr[u], pos_ptr[u + 1], c):
                        j = c
                neg = j
                _rep(nr, neg, i_ident, i_ptr, i_ind, i_dat, it, k, i_s)
                s_neg = _dot(ur, nr, k) + ur[k] + nr[k]
                z = np.float64(s_pos - s_neg)
                coef = w / (_ONE + np.float32(math.exp(z)))
                counters[3] += w * _softplus(-z)
            else:
                draws = 0
                while draws < max_sampled:
                    j = _below(state, n_items)
                    if i_ident:  # no copy of the row until it is the negative
                        s_neg = i_s * (_dot(ur, it[j], k) + it[j, k]) + ur[k]
                    else:
                        _rep(nr, j, i_ident, i_ptr, i_ind, i_dat, it, k, i_s)
                        s_neg = _dot(ur, nr, k) + ur[k] + nr[k]
                    if s_neg > s_pos - _ONE:
                        if sorted_contains(pos_ind, pos_ptr[u], pos_ptr[u + 1], j):
                            continue  # a positive is never a negative; skipped, not counted
                        draws += 1
                        neg = j
                        break
                    draws += 1
                if neg < 0:
                    continue
                if i_ident:
                    _rep(nr, neg, i_ident, i_ptr, i_ind, i_dat, it, k, i_s)
                rank_weight = min(np.float32(math.log(max(1, (n_rank_items - 1) // draws))), _MAX_LOSS32)
                coef = w * rank_weight
                counters[3] += coef * (_ONE - s_pos + s_neg)
        # LightFM's (warp_)update: the item(s) along [user rep | 1]; the user along [neg rep - pos rep | 1]
        # for a pair (the positive item takes -coef), along [item rep | 1] for a labelled item.
        for c in range(k):
            u_dir[c] = ur[c]
            i_dir[c] = pr[c] if neg < 0 else nr[c] - pr[c]
        u_dir[k] = _ONE
        i_dir[k] = _ONE
        lr_sum, n_inc = _update_row(i, i_ident, i_ptr, i_ind, i_dat, it, k, coef if neg < 0 else -coef,
                                    u_dir, i_acc_scale, i_feature_alpha, item_alpha, adagrad, lr, rho, eps,
                                    feature_updates, True)
        if neg >= 0:
            lr_n, n_n = _update_row(neg, i_ident, i_ptr, i_ind, i_dat, it, k, coef,
                                    u_dir, i_acc_scale, i_feature_alpha, item_alpha, adagrad, lr, rho, eps,
                                    feature_updates, True)
            lr_sum, n_inc = lr_sum + lr_n, n_inc + n_n
        lr_u, n_u = _update_row(u, u_ident, u_ptr, u_ind, u_dat, ut, k, coef,
                                i_dir, u_acc_scale, u_feature_alpha, user_alpha, adagrad, lr, rho, eps,
                                feature_updates, False)
        counters[1] += 1
        lr_sum, n_inc = lr_sum + lr_u, n_inc + n_u
        if regularised and n_inc > 0:
            avg = lr_sum / ((k + 1) * n_inc)
            scales[0] *= 1.0 + user_alpha * avg
            scales[1] *= 1.0 + item_alpha * avg
            if rescale_early and (scales[0] > MAX_REG_SCALE or scales[1] > MAX_REG_SCALE):
                _rescale(ut, it, k, scales)
