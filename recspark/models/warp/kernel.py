"""Vectorised NumPy kernel for WARP and BPR training with LightFM 1.17 semantics.

One call to :func:`fit_epoch` is one shuffled pass over a set of positive
(user, item) interactions. It is what the Spark trainer runs per shard: the
user side lives in the shard, the item side is a broadcast copy whose changes
are merged afterwards.

How it maps onto LightFM (``lightfm/_lightfm_fast.pyx.template``)
----------------------------------------------------------------
* Representations: ``rep = scale * features[row] @ embeddings`` and
  ``bias = scale * features[row] @ biases``; ``score = user_rep . item_rep +
  user_bias + item_bias`` (``compute_representation``). ``scale`` is the lazy
  L2 factor below, 1.0 when the alphas are 0.
* WARP: for a positive (u, i), draw items uniformly; a draw that is a known
  positive of ``u`` is skipped without counting, every other draw counts
  towards ``max_sampled``. The first counted draw ``j`` with
  ``score(j) > score(i) - 1`` is the negative, and the update is weighted by
  ``w * min(log(max(1, floor((n_items - 1) / n_draws))), 10)``. No violation in
  ``max_sampled`` counted draws means no update.
* BPR: one uniformly drawn item that is not a positive; the update is weighted
  by ``w * (1 - sigmoid(score(i) - score(j)))``.
* Update directions are LightFM's ``warp_update``: with coefficient ``c``,
  positive item ``-c * user_rep``, negative item ``+c * user_rep``, user
  ``c * (neg_rep - pos_rep)``, item biases ``-c``/``+c`` and the user bias
  ``+c`` (LightFM's choice: the user bias does not affect the pairwise loss,
  so its true gradient is 0; LightFM still moves it, and so do we). Each
  feature of a row receives its weight times the row's gradient.
* adagrad: ``p -= lr / sqrt(acc) * g`` with the accumulator *before* adding
  ``g**2`` (accumulators start at 1). adadelta: LightFM's ``update_features``
  formulas with ``rho`` and ``epsilon``.
* L2 (``user_alpha`` / ``item_alpha``) is LightFM's lazy scheme, reproduced
  step for step: each touched parameter is multiplied by
  ``1 + alpha * local_lr`` after its step, the side's ``scale`` is multiplied
  by ``1 + alpha * mean(local_lr of the parameters touched by the sample)``,
  representations are multiplied by ``scale``, and every parameter of the
  side is divided by ``scale`` (which is reset to 1) when ``scale`` exceeds
  1e6 and at the end of the epoch. With alpha 0 all of this is skipped.

Where it differs (on purpose, for vectorisation)
------------------------------------------------
* Mini-batches: ``batch_size`` positives are scored against the same
  parameter snapshot and their gradients are summed per feature before one
  optimiser step (Hogwild-like, as LightFM with several threads). Inside a
  sample, a feature shared by the positive and the negative item also gets one
  summed step, where LightFM takes two consecutive ones. With
  ``batch_size=1`` and identity item features this *is* LightFM's sequential
  algorithm.
* Negatives are drawn in rounds: every unresolved row of the batch draws a
  chunk of candidates at once (sizes from :func:`candidate_chunk_size`), and
  the first qualifying candidate per row wins. Draws are i.i.d. uniform, so
  this is distributionally identical to LightFM's one-at-a-time loop and gives
  the same ``n_draws``; only the random stream differs (NumPy Generator
  instead of LightFM's ``rand_r``).
* BPR negatives are uniform over items (as WARP's), while LightFM draws them
  from the interactions' item column (popularity-proportional).
* A user whose positives cover every item has no valid negative; LightFM would
  loop forever, here the sample is skipped and counted in
  ``EpochStats.n_skipped``.
* Arithmetic is float32 throughout (LightFM mixes float and double).

This module never imports pyspark.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recspark.errors import ConfigError, DataValidationError, ModelFitError
from recspark.models.warp.state import OPTIMISERS, SideParams

log = logging.getLogger(__name__)

LOSSES = ("warp", "bpr")
#: LightFM clips the WARP rank weight at this value for numerical stability.
MAX_LOSS = 10.0
#: LightFM applies the lazy L2 rescaling early once a side's scale passes this.
MAX_REG_SCALE = 1_000_000.0
#: BPR rounds never draw more candidates per row than this.
_BPR_MAX_CHUNK = 8


@dataclass(frozen=True)
class KernelParams:
    """Hyperparameters of one kernel pass; validated on construction.

    Parameters
    ----------
    loss : {'warp', 'bpr'}
        'warp' optimises the top of the ranking (precision@k) by weighting
        each update by the estimated rank of the positive; 'bpr' optimises
        pairwise AUC.
    learning_rate : float
        adagrad step size (unused by adadelta, as in LightFM). Lower it if
        training diverges.
    optimiser : {'adagrad', 'adadelta'}
        Must match the accumulators the sides were initialised with.
    rho, epsilon : float
        adadelta decay and conditioning constants.
    user_alpha, item_alpha : float
        L2 penalties, applied with LightFM's lazy scaling (module docstring).
    max_sampled : int
        WARP: counted negative draws per positive before giving up.
    batch_size : int
        Positives per vectorised step. Larger is faster; 1 reproduces the
        sequential algorithm. Gradients of a batch are summed per feature.
    """

    loss: str = "warp"
    learning_rate: float = 0.05
    optimiser: str = "adagrad"
    rho: float = 0.95
    epsilon: float = 1e-6
    user_alpha: float = 0.0
    item_alpha: float = 0.0
    max_sampled: int = 10
    batch_size: int = 2048

    def __post_init__(self) -> None:
        problems = []
        if self.loss not in LOSSES:
            problems.append(f"loss: got {self.loss!r}; expected one of {LOSSES}")
        if self.optimiser not in OPTIMISERS:
            problems.append(f"optimiser: got {self.optimiser!r}; expected one of {OPTIMISERS}")
        if not _is_finite_number(self.learning_rate) or self.learning_rate <= 0:
            problems.append(f"learning_rate: got {self.learning_rate!r}; expected a number > 0")
        if not _is_finite_number(self.rho) or not 0 < self.rho < 1:
            problems.append(f"rho: got {self.rho!r}; expected 0 < rho < 1")
        if not _is_finite_number(self.epsilon) or self.epsilon < 0:
            problems.append(f"epsilon: got {self.epsilon!r}; expected a number >= 0")
        for name in ("user_alpha", "item_alpha"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value < 0:
                problems.append(f"{name}: got {value!r}; expected a number >= 0")
        for name in ("max_sampled", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                problems.append(f"{name}: got {value!r}; expected an integer >= 1")
        if problems:
            raise ConfigError("Invalid kernel parameters: " + "; ".join(problems) + ".")


@dataclass
class EpochStats:
    """What one :func:`fit_epoch` call did.

    Attributes
    ----------
    n_samples : int
        Positives visited.
    n_updates : int
        Positives that produced an update (WARP: a violating negative was
        found; BPR: a negative was drawn).
    n_skipped : int
        Positives whose user has no item left to use as a negative.
    loss_sum : float
        Sum over samples of the pre-update loss: WARP ``weight * rank_weight *
        (1 - s_pos + s_neg)`` for updated samples (0 otherwise), BPR
        ``-weight * log(sigmoid(s_pos - s_neg))``. A monitoring signal,
        comparable across epochs of the same loss.
    item_feature_updates : np.ndarray of int64, shape [n_item_features]
        How many (sample, feature) gradient contributions each item feature
        received; the trainer weights shard deltas by it.
    """

    n_samples: int = 0
    n_updates: int = 0
    n_skipped: int = 0
    loss_sum: float = 0.0
    item_feature_updates: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )

    @property
    def mean_loss(self) -> float:
        """``loss_sum / n_samples`` (0.0 for an empty pass)."""
        return self.loss_sum / self.n_samples if self.n_samples else 0.0


def candidate_chunk_size(loss: str, round_no: int, max_sampled: int) -> int:
    """Number of negative candidates each unresolved row draws in a round.

    Rounds start small because most rows resolve on the first draw early in
    training, and double so that rows needing many draws (WARP late in
    training) take few rounds. The schedule is part of the random-stream
    contract shared with :mod:`recspark.models.warp.reference`.

    Examples
    --------
    >>> [candidate_chunk_size("warp", r, 10) for r in range(5)]
    [1, 2, 4, 8, 10]
    """
    cap = max_sampled if loss == "warp" else _BPR_MAX_CHUNK
    return int(min(cap, 1 << min(round_no, 30)))


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
    fmap = _FeatureMap(features, side, "features")
    rows = np.arange(features.shape[0], dtype=np.int64)
    return fmap.gather(rows, side, np.float32(scale))


def score(
    user_side: SideParams,
    item_side: SideParams,
    user_features: sp.csr_matrix,
    item_features: sp.csr_matrix,
    user_idx: npt.ArrayLike,
    item_idx: npt.ArrayLike,
) -> npt.NDArray[np.float32]:
    """Scores of (user, item) pairs, as LightFM's ``predict``.

    Parameters
    ----------
    user_side, item_side : SideParams
    user_features : csr_matrix of float32, shape [n_users, n_user_features]
    item_features : csr_matrix of float32, shape [n_items, n_item_features]
    user_idx, item_idx : array-like of int, shape [n_pairs]
        Row indices into the feature matrices.

    Returns
    -------
    np.ndarray of float32, shape [n_pairs]
        ``user_rep . item_rep + user_bias + item_bias``.
    """
    users = np.asarray(user_idx, dtype=np.int64)
    items = np.asarray(item_idx, dtype=np.int64)
    umap = _FeatureMap(user_features, user_side, "user_features")
    imap = _FeatureMap(item_features, item_side, "item_features")
    _check_index(users, umap.n_rows, "user_idx")
    _check_index(items, imap.n_rows, "item_idx")
    if users.shape != items.shape:
        raise DataValidationError(
            f"score: user_idx has shape {users.shape} but item_idx {items.shape}; "
            "pass one item per user."
        )
    one = np.float32(1.0)
    u_rep, u_bias = umap.gather(users, user_side, one)
    i_rep, i_bias = imap.gather(items, item_side, one)
    return _rowdot(u_rep, i_rep) + u_bias + i_bias


def pair_coefficients(
    loss: str,
    pos_scores: npt.NDArray[np.float32],
    neg_scores: npt.NDArray[np.float32],
    sample_weight: npt.NDArray[np.float32],
    n_draws: npt.NDArray[np.int64],
    n_items: int,
) -> npt.NDArray[np.float32]:
    """Update coefficient ``c`` of each (positive, negative) pair.

    ``c`` is the derivative of the per-sample loss with respect to
    ``s_neg - s_pos`` (LightFM's ``loss`` argument to ``warp_update``).

    Parameters
    ----------
    loss : {'warp', 'bpr'}
    pos_scores, neg_scores : np.ndarray of float32, shape [m]
    sample_weight : np.ndarray of float32, shape [m]
    n_draws : np.ndarray of int64, shape [m]
        WARP: counted draws up to and including the violating negative.
    n_items : int
        Number of items of the pass (LightFM's ``item_features.rows``).

    Returns
    -------
    np.ndarray of float32, shape [m]
        WARP: ``w * min(log(max(1, floor((n_items - 1) / n_draws))), 10)``
        (the hinge is active by construction). BPR: ``w * sigmoid(s_neg -
        s_pos)``.
    """
    if loss == "warp":
        ratio = np.maximum((n_items - 1) // np.maximum(n_draws, 1), 1).astype(np.float32)
        return sample_weight * np.minimum(np.log(ratio), np.float32(MAX_LOSS))
    diff = (neg_scores - pos_scores).astype(np.float32, copy=False)
    return sample_weight * _sigmoid(diff)


@dataclass
class PairGradients:
    """Per-feature update directions of a batch of (user, positive, negative) triples.

    ``*_features`` are the touched feature rows (ascending); the other arrays
    are aligned with them. Contributions of rows sharing a feature are
    summed, weighted by the feature values.
    """

    user_features: npt.NDArray[np.int64]
    user_emb: npt.NDArray[np.float32]
    user_bias: npt.NDArray[np.float32]
    item_features: npt.NDArray[np.int64]
    item_emb: npt.NDArray[np.float32]
    item_bias: npt.NDArray[np.float32]
    item_counts: npt.NDArray[np.int64]
    user_matrix: sp.csc_matrix = field(repr=False)
    item_matrix: sp.csc_matrix = field(repr=False)


def pair_gradients(
    user_side: SideParams,
    item_side: SideParams,
    user_features: sp.csr_matrix,
    item_features: sp.csr_matrix,
    user_idx: npt.ArrayLike,
    pos_idx: npt.ArrayLike,
    neg_idx: npt.ArrayLike,
    coef: npt.ArrayLike,
) -> PairGradients:
    """LightFM's ``warp_update`` directions, as feature-level gradients.

    With ``c = coef`` the per-row gradients are ``c * (neg_rep - pos_rep)``
    for the user, ``-c * user_rep`` / ``+c * user_rep`` for the positive /
    negative item, ``-c`` / ``+c`` for their biases and ``+c`` for the user
    bias (LightFM's rule; the true gradient of a pairwise loss w.r.t. the
    user bias is 0). For embeddings and item biases these are exactly the
    gradients of ``sum(c * (s_neg - s_pos))`` with ``c`` held fixed, which is
    what the finite-difference tests check.

    Parameters
    ----------
    user_side, item_side : SideParams
    user_features, item_features : csr_matrix of float32
        As in :func:`fit_epoch`.
    user_idx, pos_idx, neg_idx : array-like of int, shape [m]
        Rows of the triples.
    coef : array-like of float32, shape [m]
        From :func:`pair_coefficients`.

    Returns
    -------
    PairGradients
    """
    umap = _FeatureMap(user_features, user_side, "user_features")
    imap = _FeatureMap(item_features, item_side, "item_features")
    users = np.asarray(user_idx, dtype=np.int64)
    pos = np.asarray(pos_idx, dtype=np.int64)
    neg = np.asarray(neg_idx, dtype=np.int64)
    one = np.float32(1.0)
    u_rep, _ = umap.gather(users, user_side, one)
    p_rep, _ = imap.gather(pos, item_side, one)
    n_rep, _ = imap.gather(neg, item_side, one)
    return _pair_gradients(
        umap, imap, users, pos, neg, u_rep, p_rep, n_rep, np.asarray(coef, dtype=np.float32)
    )


def _pair_gradients(umap, imap, users, items, negs, u_rep, p_rep, n_rep, coef):
    """Implementation of :func:`pair_gradients`; ``n_rep`` is overwritten."""
    c = coef[:, None]
    g_user = n_rep
    g_user -= p_rep
    g_user *= c
    m = users.size
    g_items = np.empty((2 * m, u_rep.shape[1]), dtype=np.float32)
    np.multiply(u_rep, c, out=g_items[m:])
    np.negative(g_items[m:], out=g_items[:m])
    gb_items = np.concatenate([-coef, coef])
    u_feats, u_mat, _ = umap.incidence(users)
    i_feats, i_mat, i_counts = imap.incidence(np.concatenate([items, negs]))
    return PairGradients(
        user_features=u_feats,
        user_emb=np.asarray(u_mat @ g_user, dtype=np.float32),
        user_bias=np.asarray(u_mat @ coef, dtype=np.float32),
        item_features=i_feats,
        item_emb=np.asarray(i_mat @ g_items, dtype=np.float32),
        item_bias=np.asarray(i_mat @ gb_items, dtype=np.float32),
        item_counts=i_counts,
        user_matrix=u_mat,
        item_matrix=i_mat,
    )


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
) -> EpochStats:
    """One shuffled pass of WARP/BPR updates over the given positives, in place.

    Parameters
    ----------
    user_side, item_side : SideParams
        Mutated in place. Their optimiser must be ``params.optimiser``.
    user_features : csr_matrix of float32, shape [n_users, user_side.n_features]
        Row ``u`` holds user ``u``'s feature weights; ``scipy.sparse.identity``
        for plain collaborative filtering (detected and special-cased).
    item_features : csr_matrix of float32, shape [n_items, item_side.n_features]
        Same for items. Negatives are drawn uniformly from its rows.
    user_idx, item_idx : array-like of int, shape [n_samples]
        The positives to visit, as row indices into the feature matrices.
    sample_weight : array-like of float, shape [n_samples], or None
        Per-interaction weights multiplying the update (None: all 1).
    positives : csr_matrix, shape [n_users, n_items]
        Every known positive of each user (usually a superset of the pairs
        above), so that none is ever used as a negative.
    params : KernelParams
    rng : np.random.Generator
        Drives the shuffle and the negative draws; same inputs and same
        generator state give bit-identical results.

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
    umap = _FeatureMap(user_features, user_side, "user_features")
    imap = _FeatureMap(item_features, item_side, "item_features")
    users = np.asarray(user_idx, dtype=np.int64).ravel()
    items = np.asarray(item_idx, dtype=np.int64).ravel()
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
        weights = np.asarray(sample_weight, dtype=np.float32).ravel()
        if weights.shape != users.shape:
            raise DataValidationError(
                f"sample_weight: {weights.size} entries for {users.size} interactions; "
                "pass one weight per interaction or None."
            )
        if not np.isfinite(weights).all():
            raise DataValidationError("sample_weight: contains NaN or infinite values.")
    index = _PositiveIndex(positives, umap.n_rows, imap.n_rows)

    run = _EpochRun(user_side, item_side, umap, imap, index, params, rng)
    order = rng.permutation(users.size)
    # Overflow is how divergence shows up; it is reported by check_finite
    # below with advice, instead of as NumPy warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, users.size, params.batch_size):
            chunk = order[start : start + params.batch_size]
            if chunk.size > 1:
                # Rows of a batch share one parameter snapshot, so their order
                # inside it does not change the update; visiting them by user
                # keeps user-table accesses ascending.
                chunk = chunk[np.argsort(users[chunk], kind="stable")]
            run.step(users[chunk], items[chunk], weights[chunk])
        run.finish()
    check_finite(user_side, "user")
    check_finite(item_side, "item")
    return run.stats


# --------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _check_index(idx: np.ndarray, n: int, name: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)]
        raise DataValidationError(
            f"{name}: {bad.size} indices outside [0, {n}) (first: {int(bad[0])}); "
            "indices must be local rows of the feature matrix."
        )


def check_finite(side: SideParams, name: str) -> None:
    if not (np.isfinite(side.embeddings).all() and np.isfinite(side.biases).all()):
        raise ModelFitError(
            f"Training diverged: the {name} embeddings or biases contain NaN or "
            "infinite values. Lower learning_rate (or raise the alphas' "
            "regularisation if you use large sample weights)."
        )


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out = np.negative(x)
    np.exp(out, out=out)
    out += np.float32(1.0)
    return np.reciprocal(out, out=out)


def _unique_inverse(idx: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(idx, return_inverse=True, return_counts=True)`` for ints in [0, n).

    Uses a counting pass instead of a sort when ``n`` is small relative to
    the batch, which is the common case for the item side.
    """
    if n <= 8 * idx.size:
        counts = np.bincount(idx, minlength=n)
        uniq = np.flatnonzero(counts)
        lookup = np.empty(n, dtype=np.int32)
        lookup[uniq] = np.arange(uniq.size, dtype=np.int32)
        return uniq, lookup[idx], counts[uniq]
    uniq, inverse, counts = np.unique(idx, return_inverse=True, return_counts=True)
    return uniq, inverse.astype(np.int32, copy=False), counts


class _FeatureMap:
    """Maps rows (users or items) onto feature rows: gathers and scatters."""

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
        self.n_rows = csr.shape[0]
        self.n_features = csr.shape[1]
        n = self.n_rows
        self.identity = (
            n == self.n_features
            and csr.nnz == n
            and np.array_equal(csr.indptr, np.arange(n + 1))
            and np.array_equal(csr.indices, np.arange(n))
            and bool((csr.data == 1).all())
        )

    def gather(self, rows: np.ndarray, side: SideParams, scale: np.float32):
        if self.identity:
            reps = np.take(side.embeddings, rows, axis=0)
            biases = np.take(side.biases, rows)
        else:
            sub = self.csr[rows]
            reps = np.asarray(sub @ side.embeddings, dtype=np.float32)
            biases = np.asarray(sub @ side.biases, dtype=np.float32)
        if scale != 1:
            reps *= scale
            biases *= scale
        return reps, biases

    def incidence(self, rows: np.ndarray):
        """Touched features and the [n_touched, n_rows] weight matrix (CSC).

        Multiplying it by per-row gradients sums them per feature, weighted by
        the feature values, which is the chain rule through the representation.
        """
        if self.identity:
            indptr = np.arange(rows.size + 1, dtype=np.int32)
            flat, data = rows, None
        else:
            sub = self.csr[rows]
            indptr, flat, data = sub.indptr, sub.indices, sub.data
        uniq, inverse, counts = _unique_inverse(flat, self.n_features)
        if data is None:
            data = np.ones(inverse.size, dtype=np.float32)
        matrix = sp.csc_matrix((data, inverse, indptr), shape=(uniq.size, rows.size))
        return uniq, matrix, counts


class _PositiveIndex:
    """Vectorised "is item j a positive of user u" over keys ``u * n_items + j``.

    An exact test is a binary search in the sorted keys, but that array is
    usually far larger than the CPU caches and every search step misses. So a
    packed-bit Bloom-style filter (one hash, about 16 bits per key, a few MB at
    most) answers "certainly not a positive" for nearly every candidate, and
    only the few flagged ones are searched.
    """

    _HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier
    _MAX_LOG_BITS = 27  # 16 MiB filter

    def __init__(self, positives: sp.spmatrix, n_users: int, n_items: int):
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
        counts = np.diff(csr.indptr)
        self.keys = np.repeat(np.arange(n_users, dtype=np.int64) * n_items, counts)
        self.keys += csr.indices
        self.has_negative = counts < n_items
        log_bits = int(min(self._MAX_LOG_BITS, max(10, math.ceil(math.log2(16 * self.keys.size + 1)))))
        self._shift = np.uint64(64 - log_bits)
        flags = np.zeros(1 << log_bits, dtype=bool)
        flags[self._hash(self.keys)] = True
        self._bits = np.packbits(flags, bitorder="little")

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        h = keys.view(np.uint64) * self._HASH
        h >>= self._shift
        return h.view(np.int64)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Boolean array, same shape as ``keys`` (int64), True where a key is a positive."""
        h = self._hash(keys)
        flagged = np.take(self._bits, h >> 3)
        flagged >>= (h & 7).astype(np.uint8)
        flagged &= np.uint8(1)
        result = flagged.view(bool)
        maybe = np.flatnonzero(result)
        if maybe.size:
            query = keys.ravel()[maybe]
            pos = np.searchsorted(self.keys, query)
            np.minimum(pos, self.keys.size - 1, out=pos)
            result.ravel()[maybe] = self.keys[pos] == query
        return result


class _EpochRun:
    """Mutable state of one pass: lazy-L2 scales and the statistics."""

    def __init__(self, user_side, item_side, umap, imap, index, params, rng):
        self.user_side = user_side
        self.item_side = item_side
        self.umap = umap
        self.imap = imap
        self.index = index
        self.params = params
        self.rng = rng
        self.n_items = imap.n_rows
        self.user_scale = 1.0
        self.item_scale = 1.0
        self.regularised = params.user_alpha > 0 or params.item_alpha > 0
        self.lr = np.float32(params.learning_rate)
        self.stats = EpochStats(item_feature_updates=np.zeros(imap.n_features, dtype=np.int64))

    # -- one mini-batch ------------------------------------------------------

    def step(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray) -> None:
        """One mini-batch; ``users`` must be sorted ascending (see :func:`fit_epoch`)."""
        stats = self.stats
        stats.n_samples += users.size
        usable = self.index.has_negative[users]
        if not usable.all():
            stats.n_skipped += int(users.size - usable.sum())
            users, items, weights = users[usable], items[usable], weights[usable]
        if users.size == 0:
            return
        u_scale = np.float32(self.user_scale)
        i_scale = np.float32(self.item_scale)
        u_rep, u_bias = self.umap.gather(users, self.user_side, u_scale)
        p_rep, p_bias = self.imap.gather(items, self.item_side, i_scale)
        pos_scores = _rowdot(u_rep, p_rep)
        pos_scores += u_bias
        pos_scores += p_bias

        rows, negs, n_rep, neg_scores, n_draws = self._find_negatives(
            users, u_rep, u_bias, pos_scores, i_scale
        )
        if rows.size == 0:
            return
        stats.n_updates += rows.size
        if rows.size != users.size:
            users, items, weights = users[rows], items[rows], weights[rows]
            u_rep, p_rep, pos_scores = u_rep[rows], p_rep[rows], pos_scores[rows]
        coef = pair_coefficients(
            self.params.loss, pos_scores, neg_scores, weights, n_draws, self.n_items
        )
        if self.params.loss == "warp":
            margin = np.float32(1.0) - pos_scores + neg_scores
            stats.loss_sum += float(np.sum(coef * margin, dtype=np.float64))
        else:
            softplus = np.logaddexp(np.float32(0.0), neg_scores - pos_scores)
            stats.loss_sum += float(np.sum(weights * softplus, dtype=np.float64))

        grads = _pair_gradients(
            self.umap, self.imap, users, items, negs, u_rep, p_rep, n_rep, coef
        )
        stats.item_feature_updates[grads.item_features] += grads.item_counts
        u_mat, i_mat = grads.user_matrix, grads.item_matrix
        u_lr = self._apply(
            self.user_side, grads.user_features, grads.user_emb, grads.user_bias,
            self.params.user_alpha,
        )
        i_lr = self._apply(
            self.item_side, grads.item_features, grads.item_emb, grads.item_bias,
            self.params.item_alpha,
        )
        if self.regularised:
            self._advance_scales(u_mat, u_lr, i_mat, i_lr, users.size)

    def _find_negatives(self, users, u_rep, u_bias, pos_scores, i_scale):
        """First qualifying negative per row, drawing candidates in rounds.

        Returns, for the batch rows that got a negative (ascending): the rows,
        the negatives, their representations and scores, and the counted draws
        (LightFM's ``sampled``).
        """
        warp = self.params.loss == "warp"
        max_sampled = self.params.max_sampled
        n_items = self.n_items
        user_keys = users * n_items
        pending = np.arange(users.size)
        drawn = np.zeros(users.size, dtype=np.int64)
        found = []
        round_no = 0
        while pending.size:
            width = candidate_chunk_size(self.params.loss, round_no, max_sampled)
            round_no += 1
            cand = self.rng.integers(0, n_items, size=(pending.size, width), dtype=np.int64)
            keys = cand + user_keys[pending][:, None]
            valid = self.index.contains(keys)
            np.logical_not(valid, out=valid)
            count = np.cumsum(valid, axis=1, dtype=np.int64)
            count += drawn[pending][:, None]
            use = valid & ((count <= max_sampled) if warp else (count == 1))
            flat = np.flatnonzero(use)
            if flat.size == users.size and width == 1:
                rows = loc_r = pending  # round 0 with no positive drawn: every row
                user_rep = u_rep
            else:
                loc_r = flat // width
                rows = pending[loc_r]
                user_rep = np.take(u_rep, rows, axis=0)
            cand_items = cand.ravel()[flat]
            n_rep, n_bias = self.imap.gather(cand_items, self.item_side, i_scale)
            scores = _rowdot(user_rep, n_rep)
            scores += u_bias[rows]
            scores += n_bias
            if warp:
                hit = np.flatnonzero(scores > pos_scores[rows] - np.float32(1.0))
                if hit.size and width > 1:
                    # Entries are row-major, so the first hit of each row is
                    # the first qualifying draw in that row's order.
                    hit_rows = loc_r[hit]
                    first = np.ones(hit.size, dtype=bool)
                    first[1:] = hit_rows[1:] != hit_rows[:-1]
                    hit = hit[first]
            else:
                hit = np.arange(rows.size)
            if hit.size:
                found.append(
                    (rows[hit], cand_items[hit], n_rep[hit], scores[hit], count.ravel()[flat[hit]])
                )
            drawn[pending] = count[:, -1]
            done = drawn[pending] >= (max_sampled if warp else 1)
            done[loc_r[hit]] = True
            pending = pending[~done]
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            no_rep = np.zeros((0, u_rep.shape[1]), dtype=np.float32)
            return empty, empty, no_rep, np.zeros(0, dtype=np.float32), empty
        if len(found) == 1:
            return found[0]
        rows, negs, n_rep, scores, draws = (np.concatenate(part) for part in zip(*found))
        order = np.argsort(rows, kind="stable")
        return rows[order], negs[order], n_rep[order], scores[order], draws[order]

    # -- optimiser -----------------------------------------------------------

    def _apply(self, side, feats, grad, grad_bias, alpha):
        """One optimiser step on the touched features; returns per-feature lr sums.

        The returned array (sum of local learning rates over the k components
        and the bias of each feature) feeds the lazy-L2 scale update; it is
        None when the model is unregularised.
        """
        emb_lr = self._step(
            side.embeddings, side.emb_accum, side.emb_delta_accum, feats, grad, alpha
        )
        bias_lr = self._step(
            side.biases, side.bias_accum, side.bias_delta_accum, feats, grad_bias, alpha
        )
        if not self.regularised:
            return None
        return emb_lr.sum(axis=1, dtype=np.float64) + bias_lr

    def _step(self, values, accum, delta_accum, feats, grad, alpha):
        """Optimiser step on ``values[feats]``; ``grad`` is overwritten."""
        params = self.params
        acc = np.take(accum, feats, axis=0)
        if delta_accum is None:
            # adagrad: the step uses the accumulator before this gradient.
            local_lr = np.sqrt(acc)
            np.divide(self.lr, local_lr, out=local_lr)
            acc += np.square(grad)
            accum[feats] = acc
            update = np.multiply(grad, local_lr, out=grad)
        else:
            rho = np.float32(params.rho)
            one_minus_rho = np.float32(1.0 - params.rho)
            eps = np.float32(params.epsilon)
            acc *= rho
            acc += one_minus_rho * np.square(grad)
            accum[feats] = acc
            dacc = np.take(delta_accum, feats, axis=0)
            local_lr = np.sqrt(dacc + eps)
            local_lr /= np.sqrt(acc + eps)
            update = np.multiply(grad, local_lr, out=grad)
            dacc *= rho
            dacc += one_minus_rho * np.square(update)
            delta_accum[feats] = dacc
        new = np.take(values, feats, axis=0)
        new -= update
        if alpha > 0:
            new *= np.float32(1.0) + np.float32(alpha) * local_lr
        values[feats] = new
        return local_lr

    def _advance_scales(self, u_mat, u_lr, i_mat, i_lr, n_rows):
        """LightFM's per-sample scale factors ``1 + alpha * mean local lr``."""
        k1 = self.user_side.no_components + 1
        # Per sample: sum of lr sums over its (row, feature) incidences.
        u_ones = sp.csr_matrix(
            (np.ones(u_mat.nnz), u_mat.indices, u_mat.indptr), shape=u_mat.shape[::-1]
        )
        i_ones = sp.csr_matrix(
            (np.ones(i_mat.nnz), i_mat.indices, i_mat.indptr), shape=i_mat.shape[::-1]
        )
        u_sum = u_ones @ u_lr
        u_cnt = np.diff(u_mat.indptr)
        i_row_sum = i_ones @ i_lr
        i_cnt = np.diff(i_mat.indptr)
        total = u_sum + i_row_sum[:n_rows] + i_row_sum[n_rows:]
        count = k1 * (u_cnt + i_cnt[:n_rows] + i_cnt[n_rows:])
        avg = total / count
        params = self.params
        self.user_scale *= float(np.prod(1.0 + params.user_alpha * avg))
        self.item_scale *= float(np.prod(1.0 + params.item_alpha * avg))
        if self.user_scale > MAX_REG_SCALE or self.item_scale > MAX_REG_SCALE:
            self._regularise()

    def _regularise(self) -> None:
        """Apply the pending lazy L2 shrinkage to every parameter (LightFM's ``regularize``)."""
        for side, scale in ((self.user_side, self.user_scale), (self.item_side, self.item_scale)):
            if scale != 1.0:
                side.embeddings /= np.float32(scale)
                side.biases /= np.float32(scale)
        self.user_scale = 1.0
        self.item_scale = 1.0

    def finish(self) -> None:
        if self.regularised:
            self._regularise()
        log.debug(
            "kernel pass: %d samples, %d updates, %d skipped, mean loss %.4f",
            self.stats.n_samples,
            self.stats.n_updates,
            self.stats.n_skipped,
            self.stats.mean_loss,
        )
