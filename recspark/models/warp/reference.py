"""Slow, obvious per-sample implementation of the WARP/BPR kernel: the test oracle.

It follows LightFM's ``fit_warp`` / ``fit_bpr`` loop one positive at a time,
with Python dicts and per-feature NumPy vectors, so that each rule of
:mod:`recspark.models.warp.kernel` can be read off directly. It is far too
slow for real data.

Random-stream contract
----------------------
To compare the two implementations exactly, both consume the generator in
the same way: one ``rng.permutation(n_samples)`` for the visiting order, then
for each sample that has a possible negative, rounds of
``rng.integers(0, n_items, size=(1, candidate_chunk_size(loss, round, max_sampled,
max_sampled - n_draws)))`` until the sample is resolved (``n_draws``: counted
draws so far: WARP counts every draw except margin-violating positives, BPR
every non-positive; WARP never draws past the ``max_sampled`` cap). With ``batch_size=1`` the fast kernel makes
exactly these calls, so both see the same candidates and must produce the
same parameters up to float32 summation order.

Within one sample, gradient contributions to the same feature (e.g. the
positive and negative item sharing a tag) are summed before one optimiser
step, like the kernel does (LightFM would take two consecutive steps); the
adagrad accumulator grows by the sum of the contributions' squares, as
LightFM's two steps would add them.

This module never imports pyspark.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recspark.models.warp.kernel import (
    MAX_LOSS,
    MAX_REG_SCALE,
    EpochStats,
    KernelParams,
    candidate_chunk_size,
)
from recspark.models.warp.state import SideParams


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
        w = np.float32(weight * scale)
        rep += w * side.embeddings[feature]
        bias += w * side.biases[feature]
    return rep, bias


def _optimiser_step(side: SideParams, feature: int, grads, params, alpha, feature_alpha=0.0, count=1):
    """Update one feature row and its bias; return the sum of local learning rates.

    ``grads`` is ``[emb_grad, bias_grad, emb_grad_sq, bias_grad_sq, n]``: the
    sample's summed contributions to this feature, the sums of their squares
    (adagrad's accumulator grows by the latter, as LightFM adds each
    contribution's square) and their number (``count``, see the kernel's
    module docstring for the step it sets).
    """
    lr_sum = 0.0
    for values, accum, delta, g, g_sq in (
        (side.embeddings, side.emb_accum, side.emb_delta_accum, grads[0], grads[2]),
        (side.biases, side.bias_accum, side.bias_delta_accum, grads[1], grads[3]),
    ):
        g = np.float32(g) if np.ndim(g) == 0 else g.astype(np.float32)
        if params.optimiser == "adagrad":
            # c > 1 contributions summed into one step: the accumulator the step sees is advanced
            # by (c - 1) / (2c) of their squares, as the kernel does for a mini-batch.
            mid = np.float32((count - 1) / (2 * count))
            local_lr = np.float32(params.learning_rate) / np.sqrt(accum[feature] + mid * g_sq)
            accum[feature] = accum[feature] + g_sq
            values[feature] = values[feature] - local_lr * g
        else:
            rho = np.float32(params.rho)
            eps = np.float32(params.epsilon)
            accum[feature] = rho * accum[feature] + (np.float32(1) - rho) * g * g
            local_lr = np.sqrt(delta[feature] + eps) / np.sqrt(accum[feature] + eps)
            update = local_lr * g
            delta[feature] = rho * delta[feature] + (np.float32(1) - rho) * update * update
            values[feature] = values[feature] - update
        if alpha > 0:
            values[feature] = values[feature] * (np.float32(1) + np.float32(alpha) * local_lr)
        if feature_alpha > 0:  # per-feature sparse L2 (kernel's item_/user_feature_alpha)
            values[feature] = values[feature] * (np.float32(1) - np.float32(feature_alpha) * local_lr)
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
    item_feature_alpha: npt.NDArray[np.float32] | None = None,
    user_feature_alpha: npt.NDArray[np.float32] | None = None,
) -> EpochStats:
    """Per-sample loop with the semantics of :func:`kernel.fit_epoch`.

    Same arguments and return value as :func:`recspark.models.warp.kernel.fit_epoch`
    (``params.batch_size`` is ignored: every sample is its own step). No
    input validation and no divergence check: it is a test oracle.
    """
    users = np.asarray(user_idx, dtype=np.int64).ravel()
    items = np.asarray(item_idx, dtype=np.int64).ravel()
    weights = (
        np.ones(users.size, dtype=np.float32)
        if sample_weight is None
        else np.asarray(sample_weight, dtype=np.float32).ravel()
    )
    user_rows = _feature_rows(user_features)
    item_rows = _feature_rows(item_features)
    n_items = item_features.shape[0]
    pos_csr = sp.csr_matrix(positives)
    pos_sets = [set(pos_csr.indices[pos_csr.indptr[u] : pos_csr.indptr[u + 1]].tolist())
                for u in range(pos_csr.shape[0])]
    stats = EpochStats(item_feature_updates=np.zeros(item_side.n_features, dtype=np.int64))
    scales = {"user": 1.0, "item": 1.0}
    alphas = {"user": params.user_alpha, "item": params.item_alpha}
    regularised = params.user_alpha > 0 or params.item_alpha > 0

    def regularise():
        for name, side in (("user", user_side), ("item", item_side)):
            side.embeddings[:] = side.embeddings / np.float32(scales[name])
            side.biases[:] = side.biases / np.float32(scales[name])
            scales[name] = 1.0

    for row in rng.permutation(users.size):
        u, i, w = int(users[row]), int(items[row]), weights[row]
        stats.n_samples += 1
        if len(pos_sets[u]) >= n_items:
            stats.n_skipped += 1
            continue
        u_rep, u_bias = _representation(user_rows[u], user_side, scales["user"])
        p_rep, p_bias = _representation(item_rows[i], item_side, scales["item"])
        s_pos = np.dot(u_rep, p_rep) + u_bias + p_bias

        negative, n_draws, round_no = None, 0, 0
        while negative is None and (params.loss == "bpr" or n_draws < params.max_sampled):
            width = candidate_chunk_size(
                params.loss, round_no, params.max_sampled, params.max_sampled - n_draws
            )
            round_no += 1
            for j in rng.integers(0, n_items, size=(1, width), dtype=np.int64)[0]:
                j = int(j)
                if params.loss == "bpr":
                    if j in pos_sets[u]:
                        continue  # redrawn, not counted
                    n_draws += 1
                    negative = j
                    n_rep, n_bias = _representation(item_rows[j], item_side, scales["item"])
                    s_neg = np.dot(u_rep, n_rep) + u_bias + n_bias
                    break
                n_rep, n_bias = _representation(item_rows[j], item_side, scales["item"])
                s_neg = np.dot(u_rep, n_rep) + u_bias + n_bias
                violates = s_neg > s_pos - np.float32(1.0)
                if violates and j in pos_sets[u]:
                    continue  # a positive is never a negative; skipped, not counted
                n_draws += 1
                if violates:
                    negative = j
                    break
                if n_draws == params.max_sampled:
                    break
        if negative is None:
            continue

        stats.n_updates += 1
        if params.loss == "warp":
            rank_weight = min(math.log(max(1, (n_items - 1) // n_draws)), MAX_LOSS)
            coef = np.float32(w * np.float32(rank_weight))
            stats.loss_sum += float(coef) * float(1.0 - s_pos + s_neg)
        else:
            coef = np.float32(w / (1.0 + math.exp(float(s_pos - s_neg))))
            stats.loss_sum += float(w) * math.log1p(math.exp(float(s_neg - s_pos)))

        # Gradients per feature, summed within the sample.
        def add(grads, feature, emb, bias):
            g = grads.setdefault(
                feature,
                [np.zeros_like(u_rep), np.float32(0.0), np.zeros_like(u_rep), np.float32(0.0), 0],
            )
            g[0] = g[0] + emb
            g[1] = g[1] + bias
            g[2] = g[2] + emb * emb
            g[3] = g[3] + bias * bias
            g[4] += 1  # contributions summed into this feature's step

        item_grads: dict[int, list] = {}
        for rep_row, sign in ((item_rows[i], -1.0), (item_rows[negative], 1.0)):
            for feature, x in rep_row:
                add(item_grads, feature, np.float32(sign * x) * coef * u_rep,
                    np.float32(sign * x) * coef)
                stats.item_feature_updates[feature] += 1
        user_grads: dict[int, list] = {}
        for feature, x in user_rows[u]:
            # LightFM moves the user bias too (+coef).
            add(user_grads, feature, np.float32(x) * coef * (n_rep - p_rep), np.float32(x) * coef)

        lr = {"user": {}, "item": {}}
        for feature, grads in sorted(item_grads.items()):
            lr["item"][feature] = _optimiser_step(
                item_side, feature, grads, params, params.item_alpha,
                0.0 if item_feature_alpha is None else float(item_feature_alpha[feature]), grads[4],
            )
        for feature, grads in sorted(user_grads.items()):
            lr["user"][feature] = _optimiser_step(
                user_side, feature, grads, params, params.user_alpha,
                0.0 if user_feature_alpha is None else float(user_feature_alpha[feature]), grads[4],
            )
        if regularised:
            incidences = (
                [lr["user"][f] for f, _ in user_rows[u]]
                + [lr["item"][f] for f, _ in item_rows[i]]
                + [lr["item"][f] for f, _ in item_rows[negative]]
            )
            avg = sum(incidences) / ((user_side.no_components + 1) * len(incidences))
            for name in ("user", "item"):
                scales[name] *= 1.0 + alphas[name] * avg
            if scales["user"] > MAX_REG_SCALE or scales["item"] > MAX_REG_SCALE:
                regularise()
    if regularised:
        regularise()
    return stats
