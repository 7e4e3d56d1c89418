"""Slow, obvious per-sample implementation of the WARP/k-OS/BPR/logistic kernel: the test oracle.

It follows LightFM's ``fit_warp`` / ``fit_warp_kos`` / ``fit_bpr`` /
``fit_logistic`` loops one sample at a time, with Python lists and per-feature
NumPy vectors, so that each rule of :mod:`recspark.models.warp.kernel` can be
read off directly. It shares no code with the compiled kernel (only its
constants) and is far too slow for real data.

Random-stream contract
----------------------
Both implementations consume randomness in the same way, so that they can be
compared exactly:

1. ``order = rng.permutation(n)``: the visiting order, over the interactions
   (``n = len(user_idx)``), or for 'warp-kos' over the distinct users of the
   pass in ascending order;
2. ``seed = rng.integers(0, 2**63 - 1)``: the start of a SplitMix64 stream
   (:class:`SplitMix64`);
3. every random integer in ``[0, n)`` the pass needs is ``(z >> 32) * n >>
   32`` for the stream's next output ``z``: WARP negatives (one per draw, in
   draw order); BPR's draws, first up to ``BPR_POPULAR_DRAWS`` rows of the
   pass (``n`` = its interactions; the row's item is the candidate), then
   items (``n = n_items``); and for 'warp-kos' first the ``min(n, m)``
   positions among the user's ``m`` interactions of the pass (in interaction
   order), then the negatives.

With ``num_threads > 1`` the kernel splits the order into contiguous chunks,
thread ``t`` starting its stream at ``seed + t * THREAD_STRIDE``; that mode is
not deterministic and not compared.

This module never imports pyspark.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recspark.config import KernelParams
from recspark.models.warp.kernel import BPR_POPULAR_DRAWS, MAX_LOSS, MAX_REG_SCALE, EpochStats
from recspark.models.warp.state import SideParams

_MASK = (1 << 64) - 1


class SplitMix64:
    """The kernel's random stream, in plain Python integers."""

    def __init__(self, seed: int):
        self.state = seed & _MASK

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` from the next output."""
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        z ^= z >> 31
        return ((z >> 32) * n) >> 32


def _feature_rows(features: sp.csr_matrix) -> list[list[tuple[int, float]]]:
    csr = sp.csr_matrix(features, dtype=np.float32)
    csr.sum_duplicates()
    return [
        list(zip(csr.indices[csr.indptr[r] : csr.indptr[r + 1]].tolist(),
                 csr.data[csr.indptr[r] : csr.indptr[r + 1]].tolist()))
        for r in range(csr.shape[0])
    ]


def _representation(row, side: SideParams, scale: float):
    rep = np.zeros(side.no_components, dtype=np.float32)
    bias = np.float32(0.0)
    for feature, weight in row:
        w = np.float32(np.float32(scale) * np.float32(weight))
        rep += w * side.embeddings[feature]
        bias += w * side.biases[feature]
    return rep, bias


def _step(side: SideParams, feature: int, emb_grad, bias_grad, params: KernelParams, alpha: float,
          feature_alpha: float, accum_scale: float) -> float:
    """LightFM's ``update_features`` + ``update_biases`` for one feature; returns the sum of local rates."""
    lr_sum = 0.0
    f32 = np.float32
    for values, accum, delta, g in (
        (side.embeddings, side.emb_accum, side.emb_delta_accum, np.asarray(emb_grad, np.float32)),
        (side.biases, side.bias_accum, side.bias_delta_accum, f32(bias_grad)),
    ):
        if params.optimiser == "adagrad":
            local_lr = f32(params.learning_rate) / np.sqrt(accum[feature])
            values[feature] = values[feature] - local_lr * g
            accum[feature] = accum[feature] + f32(accum_scale) * g * g
        else:
            rho, eps = f32(params.rho), f32(params.epsilon)
            accum[feature] = rho * accum[feature] + (f32(1) - rho) * f32(accum_scale) * g * g
            local_lr = np.sqrt(delta[feature] + eps) / np.sqrt(accum[feature] + eps)
            update = local_lr * g
            delta[feature] = rho * delta[feature] + (f32(1) - rho) * update * update
            values[feature] = values[feature] - update
        if alpha > 0:
            values[feature] = values[feature] * (f32(1) + f32(alpha) * local_lr)
        if feature_alpha > 0:
            values[feature] = values[feature] * (f32(1) - f32(feature_alpha) * local_lr)
        lr_sum += float(np.sum(local_lr, dtype=np.float64))
    return lr_sum


def fit_epoch_reference(
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
    """Per-sample loop with the semantics of :func:`recspark.models.warp.kernel.fit_epoch`.

    Same arguments and return value (``params.num_threads`` is ignored). No
    input validation and no divergence check: it is a test oracle.
    """
    users = np.asarray(user_idx, dtype=np.int64).ravel()
    items = np.asarray(item_idx, dtype=np.int64).ravel()
    weights = (np.ones(users.size, dtype=np.float32) if sample_weight is None
               else np.asarray(sample_weight, dtype=np.float32).ravel())
    user_rows, item_rows = _feature_rows(user_features), _feature_rows(item_features)
    n_items = item_features.shape[0]
    n_rank = n_items_total or n_items
    pos_csr = sp.csr_matrix(positives)
    pos_sets = [set(pos_csr.indices[pos_csr.indptr[u] : pos_csr.indptr[u + 1]].tolist())
                for u in range(pos_csr.shape[0])]
    i_alpha_f = np.zeros(item_side.n_features) if item_feature_alpha is None else item_feature_alpha
    u_alpha_f = np.zeros(user_side.n_features) if user_feature_alpha is None else user_feature_alpha
    u_acc = np.ones(user_side.n_features) if user_accum_scale is None else user_accum_scale
    stats = EpochStats(item_feature_updates=np.zeros(item_side.n_features, dtype=np.int64))
    scales = {"user": 1.0, "item": 1.0}
    regularised = params.user_alpha > 0 or params.item_alpha > 0

    def regularise():
        for name, side in (("user", user_side), ("item", item_side)):
            side.embeddings[:] = side.embeddings / np.float32(scales[name])
            side.biases[:] = side.biases / np.float32(scales[name])
            scales[name] = 1.0

    def predict(u_rep, u_bias, item):
        rep, bias = _representation(item_rows[item], item_side, scales["item"])
        return rep, np.float32(np.dot(u_rep, rep) + u_bias + bias)

    def update_item(item, direction, coef):
        lr = 0.0
        for feature, x in item_rows[item]:
            cw = np.float32(coef) * np.float32(x)
            lr += _step(item_side, feature, cw * direction, cw, params, params.item_alpha,
                        float(i_alpha_f[feature]), item_accum_scale)
            stats.item_feature_updates[feature] += 1
        return lr, len(item_rows[item])

    def update_user(u, direction, coef):
        lr = 0.0
        for feature, x in user_rows[u]:
            cw = np.float32(coef) * np.float32(x)
            lr += _step(user_side, feature, cw * direction, cw, params, params.user_alpha,
                        float(u_alpha_f[feature]), float(u_acc[feature]))
        return lr, len(user_rows[u])

    if params.loss == "warp-kos":
        by_user = np.argsort(users, kind="stable")
        group_users, starts = np.unique(users[by_user], return_index=True)
        bounds = np.append(starts, users.size)
        order = rng.permutation(group_users.size)
    else:
        order = rng.permutation(users.size)
    stream = SplitMix64(int(rng.integers(0, 2**63 - 1, dtype=np.int64)))

    for sample in order:
        stats.n_samples += 1
        u = int(group_users[sample]) if params.loss == "warp-kos" else int(users[sample])
        if params.loss != "logistic" and len(pos_sets[u]) >= n_items:
            stats.n_skipped += 1
            continue
        u_rep, u_bias = _representation(user_rows[u], user_side, scales["user"])
        row = int(sample)
        if params.loss == "warp-kos":  # the k-th best of n positives drawn with replacement
            rows = by_user[bounds[sample]:bounds[sample + 1]]
            drawn = [int(rows[stream.below(len(rows))]) for _ in range(min(params.n, len(rows)))]
            drawn_scores = np.array([predict(u_rep, u_bias, int(items[r]))[1] for r in drawn], dtype=np.float32)
            row = drawn[np.argsort(-drawn_scores, kind="mergesort")[min(params.k, len(drawn)) - 1]]
        i, w = int(items[row]), np.float32(weights[row])
        if params.loss != "logistic" and w <= 0:
            stats.n_skipped += 1
            continue
        p_rep, s_pos = predict(u_rep, u_bias, i)

        if params.loss == "logistic":
            y = 1.0 if w > 0 else 0.0
            prob = 1.0 / (1.0 + math.exp(-float(s_pos)))
            coef = np.float32(abs(w) * np.float32(prob - y))
            stats.loss_sum += abs(float(w)) * (math.log1p(math.exp(-abs(float(s_pos)))) + max(float(s_pos), 0.0)
                                               - y * float(s_pos))
            lr_i, n_i = update_item(i, u_rep, coef)
            lr_u, n_u = update_user(u, p_rep, coef)
            stats.n_updates += 1
            lr_sum, n_inc = lr_i + lr_u, n_i + n_u
        else:
            negative = None
            if params.loss == "bpr":
                for _ in range(BPR_POPULAR_DRAWS):  # the item of a random interaction of the pass
                    j = int(items[stream.below(len(items))])
                    if j not in pos_sets[u]:
                        negative = j
                        break
                while negative is None:  # then uniform over the catalogue
                    j = stream.below(n_items)
                    if j not in pos_sets[u]:
                        negative = j
                n_rep, s_neg = predict(u_rep, u_bias, negative)
                coef = np.float32(w / (1.0 + math.exp(float(s_pos - s_neg))))
                stats.loss_sum += float(w) * math.log1p(math.exp(float(s_neg - s_pos)))
            else:
                n_draws = 0
                while n_draws < params.max_sampled:
                    j = stream.below(n_items)
                    n_rep, s_neg = predict(u_rep, u_bias, j)
                    if s_neg > s_pos - np.float32(1.0):
                        if j in pos_sets[u]:
                            continue  # a positive is never a negative; skipped, not counted
                        n_draws += 1
                        negative = j
                        break
                    n_draws += 1
                if negative is None:
                    continue
                rank_weight = min(math.log(max(1, (n_rank - 1) // n_draws)), MAX_LOSS)
                coef = np.float32(w * np.float32(rank_weight))
                stats.loss_sum += float(coef) * float(1.0 - s_pos + s_neg)
            # LightFM's warp_update: positive item, negative item, then the user (+coef on its bias too).
            lr_p, n_p = update_item(i, u_rep, -coef)
            lr_n, n_n = update_item(negative, u_rep, coef)
            lr_u, n_u = update_user(u, n_rep - p_rep, coef)
            stats.n_updates += 1
            lr_sum, n_inc = lr_p + lr_n + lr_u, n_p + n_n + n_u
        if regularised and n_inc:
            avg = lr_sum / ((user_side.no_components + 1) * n_inc)
            scales["user"] *= 1.0 + params.user_alpha * avg
            scales["item"] *= 1.0 + params.item_alpha * avg
            if scales["user"] > MAX_REG_SCALE or scales["item"] > MAX_REG_SCALE:
                regularise()
    if regularised:
        regularise()
    return stats
