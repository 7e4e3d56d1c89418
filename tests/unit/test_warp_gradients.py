"""Finite-difference checks of the compiled kernel's updates, through weighted feature sums.

One sample is trained with adagrad accumulators so large that a step is
``-lr / sqrt(acc) * gradient`` to float32 precision, so the change of every
parameter divided by ``-lr / sqrt(acc)`` is the gradient the kernel applied.
It is compared with a float64 finite-difference gradient of the loss written
directly from its definition (WARP and k-OS: the active hinge with the rank
weight held fixed; BPR and logistic: the loss itself). The positive and the
negative item share a weighted tag, so their two steps on it must add up.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recspark.config import KernelParams
from recspark.models.warp.kernel import fit_epoch
from recspark.models.warp.state import SideParams

ACCUM = 1e6  # adagrad accumulator: step = lr / 1000 * gradient
LR = 1.0
N_RANK = 1001  # n_items_total: WARP's rank weight is log(1000) at the first counted draw

USER_FEATURES = sp.csr_matrix(np.array([[1.0, 0.7]], dtype=np.float32))  # own id + a weighted group
ITEM_FEATURES = sp.csr_matrix(np.array([[1.0, 0.0, 0.6], [0.0, 1.0, 0.9]], dtype=np.float32))  # ids + a tag


def _sides(rng):
    user = SideParams.init(2, 3, "adagrad", rng)
    item = SideParams.init(3, 3, "adagrad", rng)
    user.embeddings[:] = rng.normal(size=(2, 3)).astype(np.float32)
    item.embeddings[:] = rng.normal(size=(3, 3)).astype(np.float32)
    item.biases[:] = rng.normal(size=3).astype(np.float32)
    user.biases[:] = rng.normal(size=2).astype(np.float32)
    item.embeddings[1] += 2 * user.embeddings.sum(0)  # the negative (item 1) outscores the positive: WARP fires
    for side in (user, item):
        side.emb_accum[:] = ACCUM
        side.bias_accum[:] = ACCUM
    return user, item


def _scores(p):
    u = USER_FEATURES.toarray().astype(np.float64)
    i = ITEM_FEATURES.toarray().astype(np.float64)
    u_rep, u_bias = u @ p["ue"], u @ p["ub"]
    i_rep, i_bias = i @ p["ie"], i @ p["ib"]
    return (i_rep @ u_rep[0]) + u_bias[0] + i_bias  # [score of item 0, score of item 1]


def _loss(loss, p, weight):
    s = _scores(p)
    if loss in ("warp", "warp-kos"):
        return weight * np.log(N_RANK - 1) * (1.0 - s[0] + s[1])
    if loss == "bpr":
        return weight * np.logaddexp(0.0, s[1] - s[0])
    y = 1.0 if weight > 0 else 0.0  # logistic on the one interaction (user 0, item 0)
    return abs(weight) * (np.logaddexp(0.0, s[0]) - y * s[0])


def _numeric(f, params, eps=1e-6):
    grads = {}
    for name, x in params.items():
        g = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            old = x[idx]
            x[idx] = old + eps
            up = f()
            x[idx] = old - eps
            down = f()
            x[idx] = old
            g[idx] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("loss, weight", [("warp", 1.5), ("warp-kos", 1.0), ("bpr", 1.5), ("logistic", 1.5),
                                          ("logistic", -0.5)])
def test_kernel_updates_are_the_loss_gradient(loss, weight):
    user, item = _sides(np.random.default_rng(0))
    before = {"ue": user.embeddings.astype(np.float64), "ub": user.biases.astype(np.float64),
              "ie": item.embeddings.astype(np.float64), "ib": item.biases.astype(np.float64)}
    positives = sp.csr_matrix(np.array([[1.0, 0.0]]))  # item 1 is the only possible negative
    stats = fit_epoch(user, item, USER_FEATURES, ITEM_FEATURES, [0], [0], [weight], positives,
                      KernelParams(loss=loss, learning_rate=LR, max_sampled=50, k=1, n=1),
                      np.random.default_rng(1), n_items_total=N_RANK)
    assert stats.n_updates == 1
    applied = {name: (before[name] - arr.astype(np.float64)) * np.sqrt(ACCUM) / LR
               for name, arr in (("ue", user.embeddings), ("ub", user.biases), ("ie", item.embeddings),
                                 ("ib", item.biases))}
    params = {name: value.copy() for name, value in before.items()}
    expected = _numeric(lambda: _loss(loss, params, weight), params)
    names = ("ue", "ub", "ie", "ib") if loss == "logistic" else ("ue", "ie", "ib")
    for name in names:
        np.testing.assert_allclose(applied[name], expected[name], rtol=3e-3, atol=3e-3, err_msg=name)
    assert np.abs(expected["ie"][2]).max() > 0.1  # the shared tag got a real gradient: not vacuous


@pytest.mark.parametrize("loss", ["warp", "bpr"])
def test_user_bias_moves_like_lightfm_not_like_the_gradient(loss):
    """A pairwise loss ignores the user bias (its gradient is 0); LightFM still applies +coef,
    weighted by the user's features, and so does the kernel."""
    user, item = _sides(np.random.default_rng(0))
    before = user.biases.copy()
    positives = sp.csr_matrix(np.array([[1.0, 0.0]]))
    fit_epoch(user, item, USER_FEATURES, ITEM_FEATURES, [0], [0], None, positives,
              KernelParams(loss=loss, learning_rate=LR, max_sampled=50), np.random.default_rng(1),
              n_items_total=N_RANK)
    moved = (before - user.biases) * np.sqrt(ACCUM) / LR
    coef = moved[0]  # own id, weight 1
    assert coef > 0
    np.testing.assert_allclose(moved, coef * USER_FEATURES.toarray()[0], rtol=1e-3)
    if loss == "warp":
        assert coef == pytest.approx(np.log(N_RANK - 1), rel=1e-3)  # LightFM's rank weight, first draw


def test_warp_rank_weight_is_clipped_and_floored():
    """``min(log(max(1, floor((n - 1) / draws))), 10)``: the clip at LightFM's MAX_LOSS, and log(1) = 0."""
    for n_rank, expected in ((10**6, 10.0), (2, 0.0)):
        user, item = _sides(np.random.default_rng(0))
        scores = _scores({"ue": user.embeddings.astype(np.float64), "ub": user.biases.astype(np.float64),
                          "ie": item.embeddings.astype(np.float64), "ib": item.biases.astype(np.float64)})
        positives = sp.csr_matrix(np.array([[1.0, 0.0]]))
        stats = fit_epoch(user, item, USER_FEATURES, ITEM_FEATURES, [0], [0], None, positives,
                          KernelParams(learning_rate=LR, max_sampled=50), np.random.default_rng(1),
                          n_items_total=n_rank)
        assert stats.n_updates == 1
        assert stats.loss_sum == pytest.approx(expected * (1 - scores[0] + scores[1]), rel=1e-2, abs=1e-6)
