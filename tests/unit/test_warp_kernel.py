"""Unit tests of the compiled WARP/k-OS/BPR/logistic kernel: oracle equivalence, learning, guards, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recspark.errors import ConfigError, DataValidationError, ModelFitError
from recspark.config import LOSSES, KernelParams
from recspark.models.warp.kernel import (
    fit_epoch,
    representations,
    score,
)
from recspark.models.warp.reference import fit_epoch_reference
from recspark.models.warp.state import SideParams

K = 8


def identity(n: int) -> sp.csr_matrix:
    return sp.identity(n, dtype=np.float32, format="csr")


def weighted_features(n_rows: int, n_tags: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Identity plus 1-2 weighted tag features per row, so rows share features."""
    tags = rng.integers(0, n_tags, size=(n_rows, 2))
    rows = np.repeat(np.arange(n_rows), 3)
    cols = np.column_stack([np.arange(n_rows), n_rows + tags]).ravel()
    vals = np.column_stack(
        [np.ones(n_rows), rng.uniform(0.2, 1.0, size=(n_rows, 2))]
    ).ravel().astype(np.float32)
    mat = sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, n_rows + n_tags))
    mat.sum_duplicates()
    return mat


def random_interactions(n_users, n_items, nnz, rng):
    mat = sp.csr_matrix(
        (np.ones(nnz, np.float32), (rng.integers(0, n_users, nnz), rng.integers(0, n_items, nnz))),
        shape=(n_users, n_items),
    )
    mat.sum_duplicates()
    mat.data[:] = 1
    coo = mat.tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64), mat


def make_sides(n_user_features, n_item_features, optimiser="adagrad", seed=0, k=K):
    rng = np.random.default_rng(seed)
    return (
        SideParams.init(n_user_features, k, optimiser, rng),
        SideParams.init(n_item_features, k, optimiser, rng),
    )


def all_arrays(*sides):
    return [a for side in sides for a in side.to_dict().values()]


def planted_blocks(n_users=200, n_items=100, seed=0):
    """Two user groups each liking one half of the items; 80/20 train/test split."""
    rng = np.random.default_rng(seed)
    user_group = np.arange(n_users) % 2
    item_group = np.arange(n_items) % 2
    likes = user_group[:, None] == item_group[None, :]
    u, i = np.nonzero(likes)
    test = rng.random(u.size) < 0.2
    train = sp.csr_matrix(
        (np.ones((~test).sum(), np.float32), (u[~test], i[~test])), shape=(n_users, n_items)
    )
    return u[~test], i[~test], u[test], i[test], train


def precision_at_k(user_side, item_side, user_features, item_features, train, test_u, test_i, k=5):
    u_rep, u_bias = representations(user_features, user_side)
    i_rep, i_bias = representations(item_features, item_side)
    scores = u_rep @ i_rep.T + i_bias[None, :] + u_bias[:, None]
    scores[train.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    test = sp.csr_matrix((np.ones(test_u.size), (test_u, test_i)), shape=scores.shape).toarray()
    users = np.unique(test_u)
    return float(np.take_along_axis(test, top, axis=1)[users].mean())


# --------------------------------------------------------------------------
# Fast kernel vs the per-sample reference
# --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("optimiser", ["adagrad", "adadelta"])
@pytest.mark.parametrize("alpha", [0.0, 0.02])
@pytest.mark.parametrize("side_features", [False, True])
def test_kernel_matches_reference(loss, optimiser, alpha, side_features):
    """Same random stream: the compiled kernel reproduces the oracle to float32 round-off."""
    rng = np.random.default_rng(7)
    n_users, n_items = 25, 30
    users, items, positives = random_interactions(n_users, n_items, 150, rng)
    weights = rng.uniform(0.5, 2.0, users.size).astype(np.float32)
    if loss == "logistic":
        weights[::3] *= -1  # negative labels
    if side_features:
        user_features = weighted_features(n_users, 4, rng)
        item_features = weighted_features(n_items, 5, rng)
    else:
        user_features, item_features = identity(n_users), identity(n_items)
    params = KernelParams(
        loss=loss, optimiser=optimiser, learning_rate=0.1,
        user_alpha=alpha, item_alpha=alpha, max_sampled=5, k=2, n=4,
    )
    fast = make_sides(user_features.shape[1], item_features.shape[1], optimiser)
    slow = tuple(side.copy() for side in fast)
    for epoch in range(3):
        got = fit_epoch(*fast, user_features, item_features, users, items, weights,
                        positives, params, np.random.default_rng(epoch))
        want = fit_epoch_reference(*slow, user_features, item_features, users, items, weights,
                                   positives, params, np.random.default_rng(epoch))
        assert got.n_updates == want.n_updates > 0
        assert got.n_samples == want.n_samples == (n_users if loss == "warp-kos" else users.size)
        np.testing.assert_array_equal(got.item_feature_updates, want.item_feature_updates)
        assert got.loss_sum == pytest.approx(want.loss_sum, rel=1e-4)
    for a, b in zip(all_arrays(*fast), all_arrays(*slow)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("side", ["item", "user"])
@pytest.mark.parametrize("optimiser", ["adagrad", "adadelta"])
def test_per_feature_alpha_matches_reference_and_shrinks_those_features(optimiser, side):
    """Per-group L2 (item_/user_feature_alpha): same result as the oracle, and the penalised tag rows end up smaller."""
    rng = np.random.default_rng(3)
    n_users, n_items, n_tags = 25, 30, 5
    users, items, positives = random_interactions(n_users, n_items, 150, rng)
    n_rows = n_items if side == "item" else n_users
    tagged = weighted_features(n_rows, n_tags, rng)  # identity columns, then the tags
    features = (identity(n_users), tagged) if side == "item" else (tagged, identity(n_items))
    alpha = np.zeros(n_rows + n_tags, dtype=np.float32)
    alpha[n_rows:] = 0.5  # the tag group
    kwargs = {f"{side}_feature_alpha": alpha}
    params = KernelParams(optimiser=optimiser, learning_rate=0.1, max_sampled=5)
    fast = make_sides(n_users + (n_tags if side == "user" else 0), n_items + (n_tags if side == "item" else 0),
                      optimiser)
    slow = tuple(s.copy() for s in fast)
    free = tuple(s.copy() for s in fast)
    for epoch in range(3):
        fit_epoch(*fast, *features, users, items, None, positives, params, np.random.default_rng(epoch), **kwargs)
        fit_epoch_reference(*slow, *features, users, items, None, positives, params, np.random.default_rng(epoch),
                            **kwargs)
        fit_epoch(*free, *features, users, items, None, positives, params, np.random.default_rng(epoch))
    for a, b in zip(all_arrays(*fast), all_arrays(*slow)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    k = 0 if side == "user" else 1
    assert np.linalg.norm(fast[k].embeddings[n_rows:]) < np.linalg.norm(free[k].embeddings[n_rows:])
    with pytest.raises(DataValidationError, match=f"{side}_feature_alpha"):
        fit_epoch(*fast, *features, users, items, None, positives, params, np.random.default_rng(0),
                  **{f"{side}_feature_alpha": alpha[:-1]})


def test_adagrad_accumulates_squares_of_each_contribution_of_a_repeated_item():
    """Two rows share the positive item: its accumulator grows by the sum of the
    two squared contributions, one per step (LightFM's sequential steps)."""
    users = np.array([0, 1], dtype=np.int64)
    items = np.array([0, 0], dtype=np.int64)
    n_items = 5
    positives = sp.csr_matrix((np.ones(2), (users, items)), shape=(2, n_items))
    user_side, item_side = make_sides(2, n_items, k=4)
    user_side.embeddings[:] = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    item_side.embeddings[:] = 0.0  # every score 0: both rows update at draw 1
    before = item_side.emb_accum[0].copy()
    stats = fit_epoch(user_side, item_side, identity(2), identity(n_items), users, items, None,
                      positives, KernelParams(), np.random.default_rng(0))
    assert stats.n_updates == 2
    c = np.log(n_items - 1)  # rank weight at the first draw
    np.testing.assert_allclose(item_side.emb_accum[0] - before, [c * c, c * c, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(item_side.bias_accum[0], 1 + 2 * c * c, rtol=1e-5)


def test_item_accum_scale_multiplies_item_accumulator_growth_only():
    """The trainer's shard correction: item accumulators grow item_accum_scale x g^2, user ones g^2."""
    users = np.array([0], dtype=np.int64)
    items = np.array([0], dtype=np.int64)
    n_items = 5
    positives = sp.csr_matrix((np.ones(1), (users, items)), shape=(1, n_items))
    grown = {}
    for scale in (1.0, 3.0):
        user_side, item_side = make_sides(1, n_items, k=4)
        user_side.embeddings[:] = np.array([[1, 0, 0, 0]], np.float32)
        item_side.embeddings[:] = 0.0
        fit_epoch(user_side, item_side, identity(1), identity(n_items), users, items, None, positives,
                  KernelParams(), np.random.default_rng(0), item_accum_scale=scale)
        grown[scale] = (item_side.bias_accum[0] - 1.0, user_side.emb_accum.copy())
    assert grown[3.0][0] == pytest.approx(3 * grown[1.0][0], rel=1e-5)
    np.testing.assert_array_equal(grown[3.0][1], grown[1.0][1])


def test_user_accum_scale_is_per_user_feature():
    """Shared user features (scale = shards) grow their accumulators that many times; a user's own row once."""
    users = np.array([0], dtype=np.int64)
    items = np.array([0], dtype=np.int64)
    n_items = 5
    positives = sp.csr_matrix((np.ones(1), (users, items)), shape=(1, n_items))
    user_features = sp.csr_matrix(np.array([[1.0, 1.0]], dtype=np.float32))  # own row, then a shared feature
    grown = {}
    for scale in (1.0, 3.0):
        user_side, item_side = make_sides(2, n_items, k=4)
        fit_epoch(user_side, item_side, user_features, identity(n_items), users, items, None, positives,
                  KernelParams(), np.random.default_rng(0),
                  user_accum_scale=np.array([1.0, scale], dtype=np.float32))
        grown[scale] = user_side.bias_accum - 1.0
    assert grown[3.0][0] == pytest.approx(grown[1.0][0], rel=1e-6)
    assert grown[3.0][1] == pytest.approx(3 * grown[1.0][1], rel=1e-5)


def test_n_items_total_sets_the_warp_rank_estimate():
    """A block of the catalogue keeps the global rank estimate floor((n_items_total - 1) / draws)."""
    users = np.zeros(1, dtype=np.int64)
    items = np.zeros(1, dtype=np.int64)
    n_items = 10
    positives = sp.csr_matrix((np.ones(1), (users, items)), shape=(1, n_items))
    user_side, item_side = make_sides(1, n_items, k=4)
    item_side.embeddings[:] = 0.0
    user_side.embeddings[:] = 0.0  # every score 0: the first draw violates
    stats = fit_epoch(user_side, item_side, identity(1), identity(n_items), users, items, None, positives,
                      KernelParams(), np.random.default_rng(0), n_items_total=1001)
    assert stats.loss_sum == pytest.approx(np.log(1000), rel=1e-6)


# --------------------------------------------------------------------------
# Learning planted structure
# --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["warp", "bpr", "warp-kos"])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_learns_planted_blocks(loss, num_threads):
    tr_u, tr_i, te_u, te_i, train = planted_blocks()
    uf, itf = identity(train.shape[0]), identity(train.shape[1])
    user_side, item_side = make_sides(train.shape[0], train.shape[1], k=16)
    params = KernelParams(loss=loss, learning_rate=0.05, num_threads=num_threads)
    rng = np.random.default_rng(1)
    before = precision_at_k(user_side, item_side, uf, itf, train, te_u, te_i)
    for _ in range(10 if loss != "warp-kos" else 60):  # k-OS: one step per user and epoch
        fit_epoch(user_side, item_side, uf, itf, tr_u, tr_i, None, train, params, rng)
    after = precision_at_k(user_side, item_side, uf, itf, train, te_u, te_i)
    assert before < 0.7
    assert after >= 0.95


def test_logistic_learns_planted_blocks_from_signed_labels():
    """Weights > 0 are positives, < 0 negatives (LightFM's labels): logistic separates the two groups."""
    tr_u, tr_i, te_u, te_i, train = planted_blocks()
    n_users, n_items = train.shape
    rng = np.random.default_rng(2)
    neg_u = rng.integers(0, n_users, tr_u.size)
    neg_i = 2 * rng.integers(0, n_items // 2, tr_u.size) + (1 - neg_u % 2)  # an item of the other group
    users, items = np.r_[tr_u, neg_u], np.r_[tr_i, neg_i]
    weights = np.r_[np.ones(tr_u.size), -np.ones(neg_u.size)].astype(np.float32)
    uf, itf = identity(n_users), identity(n_items)
    user_side, item_side = make_sides(n_users, n_items, k=16)
    params = KernelParams(loss="logistic", learning_rate=0.05)
    losses = [fit_epoch(user_side, item_side, uf, itf, users, items, weights, train, params, rng).mean_loss
              for _ in range(10)]
    assert losses[-1] < 0.5 * losses[0]
    assert precision_at_k(user_side, item_side, uf, itf, train, te_u, te_i) >= 0.95


def test_learns_planted_blocks_through_weighted_side_features():
    """Items described only by a noisy group tag plus weighted noise tags: the tag carries it."""
    tr_u, tr_i, te_u, te_i, train = planted_blocks()
    n_items = train.shape[1]
    rng = np.random.default_rng(3)
    group = np.arange(n_items) % 2
    noise = rng.integers(2, 12, n_items)
    item_features = sp.csr_matrix(
        (np.r_[np.ones(n_items), np.full(n_items, 0.3)].astype(np.float32),
         (np.r_[np.arange(n_items), np.arange(n_items)], np.r_[group, noise])),
        shape=(n_items, 12),
    )
    uf = identity(train.shape[0])
    user_side, item_side = make_sides(train.shape[0], 12, k=16)
    params = KernelParams(loss="warp")
    for _ in range(10):
        fit_epoch(user_side, item_side, uf, item_features, tr_u, tr_i, None, train, params, rng)
    assert precision_at_k(user_side, item_side, uf, item_features, train, te_u, te_i) >= 0.95


# --------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------


def _train(seed: int, loss="warp"):
    rng = np.random.default_rng(11)
    users, items, positives = random_interactions(60, 40, 400, rng)
    sides = make_sides(60, 40)
    params = KernelParams(loss=loss)
    gen = np.random.default_rng(seed)
    for _ in range(2):
        fit_epoch(*sides, identity(60), identity(40), users, items, None, positives, params, gen)
    return sides


@pytest.mark.parametrize("loss", LOSSES)
def test_same_seed_gives_bit_identical_parameters(loss):
    for a, b in zip(all_arrays(*_train(5, loss)), all_arrays(*_train(5, loss))):
        np.testing.assert_array_equal(a, b)


def test_different_seed_gives_different_parameters():
    a, b = _train(5), _train(6)
    assert not np.array_equal(a[0].embeddings, b[0].embeddings)


# --------------------------------------------------------------------------
# Negative sampling
# --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["warp", "bpr", "warp-kos"])
def test_positives_are_never_used_as_negatives(loss):
    """One user likes 9 of 10 items: every update must pair with item 9."""
    n_items = 10
    users = np.zeros(9, dtype=np.int64)
    items = np.arange(9)
    positives = sp.csr_matrix((np.ones(9), (users, items)), shape=(1, n_items))
    sides = make_sides(1, n_items)
    # max_sampled large so WARP usually finds a violation with the one negative.
    params = KernelParams(loss=loss, max_sampled=50)
    rng = np.random.default_rng(0)
    total = 0
    counts = np.zeros(n_items, dtype=np.int64)
    for _ in range(5):
        stats = fit_epoch(*sides, identity(1), identity(n_items), users, items, None,
                          positives, params, rng)
        total += stats.n_updates
        counts += stats.item_feature_updates
    assert total > 0
    # Each update touches its positive once and item 9 once as the negative.
    assert counts[9] == total
    assert counts[:9].sum() == total


def test_bpr_negatives_are_popularity_proportional_like_lightfm():
    """BPR draws the negative from the pass's interactions, redrawing positives: items nobody
    interacted with are never negatives, and each item is one as often as its share of each
    sample's non-positive interactions predicts (uniform draws would give items 3..9 most)."""
    n_items, n_users, epochs = 10, 101, 20
    users = np.arange(n_users, dtype=np.int64)
    items = np.r_[0, np.full(90, 1), np.full(10, 2)].astype(np.int64)  # items 3..9: no interactions
    positives = sp.csr_matrix((np.ones(n_users), (users, items)), shape=(n_users, n_items))
    sides = make_sides(n_users, n_items)
    counts = np.zeros(n_items, dtype=np.int64)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        stats = fit_epoch(*sides, identity(n_users), identity(n_items), users, items, None, positives,
                          KernelParams(loss="bpr", learning_rate=0.01), rng)
        counts += stats.item_feature_updates - np.bincount(items, minlength=n_items)  # the negatives' touches
    popularity = np.bincount(items, minlength=n_items).astype(float)
    expected = np.zeros(n_items)
    for i in items:  # each sample's negative: popularity renormalised over the user's non-positives
        share = popularity.copy()
        share[i] = 0
        expected += epochs * share / share.sum()
    assert counts[3:].sum() == 0
    np.testing.assert_allclose(counts[:3], expected[:3], rtol=0.2)


def test_bpr_falls_back_to_uniform_negatives_for_a_user_holding_the_popular_items_as_the_oracle():
    """User 0 owns every item anyone interacted with but item 29: its popularity draws fail,
    and the kernel and the oracle both move on to a uniform non-positive the same way."""
    n_users, n_items = 3, 30
    users = np.r_[np.zeros(28), [1, 2]].astype(np.int64)
    items = np.r_[np.arange(28), [0, 1]].astype(np.int64)
    positives = sp.csr_matrix((np.ones(users.size), (users, items)), shape=(n_users, n_items))
    params = KernelParams(loss="bpr", learning_rate=0.1)
    fast = make_sides(n_users, n_items)
    slow = tuple(side.copy() for side in fast)
    got = fit_epoch(*fast, identity(n_users), identity(n_items), users, items, None, positives, params,
                    np.random.default_rng(3))
    want = fit_epoch_reference(*slow, identity(n_users), identity(n_items), users, items, None, positives,
                               params, np.random.default_rng(3))
    assert got.n_updates == want.n_updates == users.size
    np.testing.assert_array_equal(got.item_feature_updates, want.item_feature_updates)
    assert got.item_feature_updates[28:].sum() >= 28  # user 0's negatives: items 28 and 29 only
    for a, b in zip(all_arrays(*fast), all_arrays(*slow)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_warp_skips_violating_positives_without_counting_them():
    """A user owning 49 of 50 items, every score 0 (each draw violates the
    margin): the positives are skipped uncounted, so the negative (item 49)
    is found at counted draw 1 and the rank weight is log(49). (LightFM
    counts them: only ~18% of such samples would get an update.)"""
    n_items = 50
    positives = sp.csr_matrix(
        (np.ones(n_items - 1), (np.zeros(n_items - 1), np.arange(n_items - 1))),
        shape=(1, n_items),
    )
    user_side, item_side = make_sides(1, n_items, k=4)
    item_side.embeddings[:] = 0.0
    user_side.embeddings[:] = 0.0
    params = KernelParams(loss="warp")
    stats = fit_epoch(user_side, item_side, identity(1), identity(n_items),
                      np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                      None, positives, params, np.random.default_rng(0))
    assert stats.n_updates == 1
    assert stats.loss_sum == pytest.approx(np.log(n_items - 1), rel=1e-6)  # weight * (1 - 0 + 0)


def test_user_owning_every_item_is_skipped_without_looping():
    n_items = 6
    users = np.zeros(n_items, dtype=np.int64)
    items = np.arange(n_items)
    positives = sp.csr_matrix((np.ones(n_items), (users, items)), shape=(1, n_items))
    sides = make_sides(1, n_items)
    before = [a.copy() for a in all_arrays(*sides)]
    for loss in ("warp", "bpr", "warp-kos"):
        stats = fit_epoch(*sides, identity(1), identity(n_items), users, items, None,
                          positives, KernelParams(loss=loss), np.random.default_rng(0))
        assert stats.n_skipped == stats.n_samples == (1 if loss == "warp-kos" else n_items)
        assert stats.n_updates == 0
    for a, b in zip(before, all_arrays(*sides)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------


def test_empty_interactions_are_a_no_op():
    sides = make_sides(5, 7)
    before = [a.copy() for a in all_arrays(*sides)]
    empty = np.zeros(0, dtype=np.int64)
    stats = fit_epoch(*sides, identity(5), identity(7), empty, empty, None,
                      sp.csr_matrix((5, 7)), KernelParams(), np.random.default_rng(0))
    assert (stats.n_samples, stats.n_updates, stats.n_skipped) == (0, 0, 0)
    assert stats.mean_loss == 0.0
    np.testing.assert_array_equal(stats.item_feature_updates, np.zeros(7))
    for a, b in zip(before, all_arrays(*sides)):
        np.testing.assert_array_equal(a, b)


def test_single_interaction_user_and_items_seen_by_nobody():
    # User 0 has one interaction; items 5..9 have no interactions at all.
    users = np.array([0, 1, 1, 2], dtype=np.int64)
    items = np.array([0, 1, 2, 3], dtype=np.int64)
    positives = sp.csr_matrix((np.ones(4), (users, items)), shape=(3, 10))
    sides = make_sides(3, 10)
    rng = np.random.default_rng(0)
    for loss in ("warp", "bpr", "logistic"):
        stats = fit_epoch(*sides, identity(3), identity(10), users, items, None, positives,
                          KernelParams(loss=loss), rng)
        assert stats.n_samples == 4
        assert stats.item_feature_updates.shape == (10,)
        assert stats.item_feature_updates[:4].sum() >= stats.n_updates
    for a in all_arrays(*sides):
        assert np.isfinite(a).all()


def test_sample_weight_zero_changes_embeddings_only_through_nothing():
    users, items, positives = random_interactions(10, 12, 40, np.random.default_rng(2))
    sides = make_sides(10, 12)
    before = [s.embeddings.copy() for s in sides]
    fit_epoch(*sides, identity(10), identity(12), users, items, np.zeros(users.size), positives,
              KernelParams(loss="bpr"), np.random.default_rng(0))
    for side, old in zip(sides, before):
        np.testing.assert_array_equal(side.embeddings, old)


def test_score_matches_representations():
    rng = np.random.default_rng(4)
    uf, itf = weighted_features(6, 3, rng), weighted_features(8, 2, rng)
    user_side, item_side = make_sides(uf.shape[1], itf.shape[1])
    item_side.biases[:] = rng.normal(size=item_side.n_features).astype(np.float32)
    u_rep, u_bias = representations(uf, user_side)
    i_rep, i_bias = representations(itf, item_side)
    u, i = np.array([0, 5, 3]), np.array([7, 0, 2])
    expected = (u_rep[u] * i_rep[i]).sum(1) + u_bias[u] + i_bias[i]
    np.testing.assert_allclose(score(user_side, item_side, uf, itf, u, i), expected, rtol=1e-6)


# --------------------------------------------------------------------------
# Guards
# --------------------------------------------------------------------------


def test_divergence_raises_model_fit_error_naming_learning_rate():
    users, items, positives = random_interactions(20, 30, 200, np.random.default_rng(0))
    sides = make_sides(20, 30)
    params = KernelParams(learning_rate=1e30)
    with pytest.raises(ModelFitError, match="learning_rate"):
        for _ in range(3):
            fit_epoch(*sides, identity(20), identity(30), users, items, None, positives,
                      params, np.random.default_rng(0))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"loss": "hinge"}, "loss"),
        ({"optimiser": "sgd"}, "optimiser"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"rho": 1.0}, "rho"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"user_alpha": -0.1}, "user_alpha"),
        ({"item_alpha": float("inf")}, "item_alpha"),
        ({"max_sampled": 0}, "max_sampled"),
        ({"max_sampled": 2.5}, "max_sampled"),
        ({"k": 0}, "k"),
        ({"n": True}, "n"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_invalid_params_raise_config_error_naming_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        KernelParams(**kwargs)


def test_all_param_problems_reported_at_once():
    with pytest.raises(ConfigError, match="learning_rate.*max_sampled"):
        KernelParams(learning_rate=-1, max_sampled=0)


def test_optimiser_mismatch_with_side_accumulators_is_a_config_error():
    sides = make_sides(3, 4, optimiser="adagrad")
    with pytest.raises(ConfigError, match="optimiser"):
        fit_epoch(*sides, identity(3), identity(4), np.array([0]), np.array([1]), None,
                  sp.csr_matrix((3, 4)), KernelParams(optimiser="adadelta"),
                  np.random.default_rng(0))


@pytest.mark.parametrize(
    "users, items, match",
    [([0, 3], [1, 1], "user_idx"), ([0, 1], [1, -1], "item_idx"), ([0], [1, 2], "parallel")],
)
def test_bad_indices_raise_data_validation_error(users, items, match):
    sides = make_sides(3, 4)
    with pytest.raises(DataValidationError, match=match):
        fit_epoch(*sides, identity(3), identity(4), np.array(users), np.array(items), None,
                  sp.csr_matrix((3, 4)), KernelParams(), np.random.default_rng(0))


def test_positives_shape_mismatch_is_reported():
    sides = make_sides(3, 4)
    with pytest.raises(DataValidationError, match="positives"):
        fit_epoch(*sides, identity(3), identity(4), np.array([0]), np.array([1]), None,
                  sp.csr_matrix((3, 5)), KernelParams(), np.random.default_rng(0))
