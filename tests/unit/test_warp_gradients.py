"""Finite-difference checks of the WARP/BPR update directions, through feature sums."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recspark.models.warp.kernel import pair_coefficients, pair_gradients, score
from recspark.models.warp.state import SideParams


def _features(n_rows, n_features, rng):
    """Two or three weighted features per row, shared between rows."""
    dense = np.zeros((n_rows, n_features), dtype=np.float32)
    for row in range(n_rows):
        cols = rng.choice(n_features, size=rng.integers(2, 4), replace=False)
        dense[row, cols] = rng.uniform(0.2, 1.5, cols.size)
    return sp.csr_matrix(dense)


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    uf = _features(4, 6, rng)
    itf = _features(7, 5, rng)
    user_side = SideParams.init(6, 3, "adagrad", rng)
    item_side = SideParams.init(5, 3, "adagrad", rng)
    # Larger embeddings than the init so the BPR sigmoid is not flat.
    user_side.embeddings *= 30
    item_side.embeddings *= 30
    item_side.biases[:] = rng.normal(size=5).astype(np.float32)
    users = np.array([0, 1, 2, 3, 1])
    pos = np.array([0, 2, 4, 6, 1])
    neg = np.array([3, 5, 1, 0, 6])
    weights = rng.uniform(0.5, 2.0, users.size).astype(np.float32)
    return uf, itf, user_side, item_side, users, pos, neg, weights


def _objective(loss, uf, itf, ue, ub, ie, ib, users, pos, neg, weights, coef):
    """float64 per-batch loss written directly from the definitions."""
    u_rep, u_b = uf.toarray().astype(np.float64) @ ue, uf.toarray() @ ub
    i_rep, i_b = itf.toarray().astype(np.float64) @ ie, itf.toarray() @ ib
    s_pos = (u_rep[users] * i_rep[pos]).sum(1) + u_b[users] + i_b[pos]
    s_neg = (u_rep[users] * i_rep[neg]).sum(1) + u_b[users] + i_b[neg]
    if loss == "warp":  # active hinge piece with the rank weight held fixed
        return float(np.sum(coef * (1.0 - s_pos + s_neg)))
    return float(np.sum(weights * np.logaddexp(0.0, s_neg - s_pos)))


def _numeric_grad(f, x, eps=1e-5):
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f()
        x[idx] = old - eps
        down = f()
        x[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


def _dense(features, values, n):
    out = np.zeros((n,) + values.shape[1:])
    out[features] = values
    return out


@pytest.mark.parametrize("loss", ["warp", "bpr"])
def test_update_directions_match_finite_differences(loss):
    uf, itf, user_side, item_side, users, pos, neg, weights = _setup()
    s_pos = score(user_side, item_side, uf, itf, users, pos)
    s_neg = score(user_side, item_side, uf, itf, users, neg)
    n_draws = np.array([1, 2, 3, 1, 5])
    coef = pair_coefficients(loss, s_pos, s_neg, weights, n_draws, n_items=7)
    grads = pair_gradients(user_side, item_side, uf, itf, users, pos, neg, coef)

    params = {
        "ue": user_side.embeddings.astype(np.float64),
        "ub": user_side.biases.astype(np.float64),
        "ie": item_side.embeddings.astype(np.float64),
        "ib": item_side.biases.astype(np.float64),
    }

    def f():
        return _objective(loss, uf, itf, params["ue"], params["ub"], params["ie"], params["ib"],
                          users, pos, neg, weights, coef.astype(np.float64))

    expected = {name: _numeric_grad(f, value) for name, value in params.items()}
    got = {
        "ue": _dense(grads.user_features, grads.user_emb, 6),
        "ie": _dense(grads.item_features, grads.item_emb, 5),
        "ib": _dense(grads.item_features, grads.item_bias, 5),
    }
    for name in ("ue", "ie", "ib"):
        np.testing.assert_allclose(got[name], expected[name], rtol=2e-3, atol=2e-4, err_msg=name)
    assert np.abs(expected["ie"]).max() > 1e-2  # the check is not vacuous


def test_user_bias_moves_like_lightfm_not_like_the_gradient():
    """The pairwise loss ignores the user bias (FD gradient 0); LightFM still
    applies +coef per row, weighted by the user's features, and so do we."""
    uf, itf, user_side, item_side, users, pos, neg, weights = _setup()
    coef = np.linspace(0.5, 1.5, users.size).astype(np.float32)
    grads = pair_gradients(user_side, item_side, uf, itf, users, pos, neg, coef)
    expected = uf[users].T @ coef
    np.testing.assert_allclose(_dense(grads.user_features, grads.user_bias, 6), expected,
                               rtol=1e-6)


def test_warp_coefficient_is_lightfm_rank_weight():
    coef = pair_coefficients(
        "warp", np.zeros(4, np.float32), np.zeros(4, np.float32),
        np.array([1, 1, 2, 1], np.float32), np.array([1, 3, 3, 100]), n_items=1000,
    )
    expected = [np.log(999), np.log(333), 2 * np.log(333), np.log(9)]
    np.testing.assert_allclose(coef, expected, rtol=1e-6)
    huge = pair_coefficients("warp", np.zeros(1, np.float32), np.zeros(1, np.float32),
                             np.ones(1, np.float32), np.array([1]), n_items=10**6)
    assert huge[0] == pytest.approx(10.0)  # LightFM's MAX_LOSS clip
    tiny = pair_coefficients("warp", np.zeros(1, np.float32), np.zeros(1, np.float32),
                             np.ones(1, np.float32), np.array([10]), n_items=5)
    assert tiny[0] == 0.0  # log(max(1, floor(4 / 10))) = log(1)
