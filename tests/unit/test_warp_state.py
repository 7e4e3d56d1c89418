"""Tests of SideParams: LightFM-style init, copies and dict round trips."""

from __future__ import annotations

import numpy as np
import pytest

from recspark.errors import ConfigError, DataValidationError
from recspark.models.warp.state import SideParams


@pytest.mark.parametrize("optimiser, accum", [("adagrad", 1.0), ("adadelta", 0.0)])
def test_init_follows_lightfm(optimiser, accum):
    side = SideParams.init(50, 8, optimiser, np.random.default_rng(0))
    assert side.embeddings.dtype == np.float32 and side.embeddings.shape == (50, 8)
    assert np.abs(side.embeddings).max() <= 0.5 / 8
    assert side.embeddings.std() > 0.01
    np.testing.assert_array_equal(side.biases, 0.0)
    np.testing.assert_array_equal(side.emb_accum, accum)
    np.testing.assert_array_equal(side.bias_accum, accum)
    assert side.optimiser == optimiser
    assert (side.emb_delta_accum is None) == (optimiser == "adagrad")


def test_init_is_seeded():
    a = SideParams.init(5, 3, "adagrad", np.random.default_rng(1))
    b = SideParams.init(5, 3, "adagrad", np.random.default_rng(1))
    np.testing.assert_array_equal(a.embeddings, b.embeddings)


@pytest.mark.parametrize("optimiser", ["adagrad", "adadelta"])
def test_dict_round_trip_and_copy_are_independent(optimiser):
    side = SideParams.init(4, 2, optimiser, np.random.default_rng(0))
    clone = SideParams.from_dict({k: v.copy() for k, v in side.to_dict().items()})
    snapshot = side.copy()
    side.embeddings += 1
    np.testing.assert_array_equal(clone.embeddings, snapshot.embeddings)
    assert clone.optimiser == optimiser
    assert set(side.to_dict()) == set(clone.to_dict())


def test_from_dict_rejects_bad_shapes_and_keys():
    side = SideParams.init(4, 2, "adagrad", np.random.default_rng(0)).to_dict()
    with pytest.raises(DataValidationError, match="biases"):
        SideParams.from_dict({**side, "biases": np.zeros(3)})
    with pytest.raises(DataValidationError, match="unknown"):
        SideParams.from_dict({**side, "momentum": np.zeros(4)})
    with pytest.raises(DataValidationError, match="missing"):
        SideParams.from_dict({"embeddings": side["embeddings"]})


@pytest.mark.parametrize(
    "args, name", [((0, 0, "adagrad"), "no_components"), ((3, 2, "sgd"), "optimiser")]
)
def test_init_validates(args, name):
    with pytest.raises(ConfigError, match=name):
        SideParams.init(*args, rng=np.random.default_rng(0))
