"""The registered nightly pyfunc on planted factors: known users, new users by features, popularity (no Spark)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from recspark.tracking import registry

# Items point along +x, +y, -x, -y; "likes_x" is a user feature pointing along +x, "likes_y" along +y.
ARRAYS = {
    "item_ids": np.array(["ix", "iy", "i-x", "i-y"], dtype=object),
    "item_vectors": np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32),
    "item_bias": np.zeros(4, np.float32),
    "popularity": np.array([1, 5, 3, 2], np.float32),
    "user_feature_names": ["likes_x", "likes_y"],
    "user_feature_vectors": np.array([[2, 0], [0, 2]], np.float32),
}
# The per-user folder as Spark writes it: part files (any order), a _SUCCESS marker.
USER_PARTS = {
    "part-00000.parquet": {"user_id": ["u1"], "vector": [[1.0, 0.1]], "seen": [[0]]},  # u1 already has "ix"
    "part-00001.parquet": {"user_id": ["u2", "u3"], "vector": [[0.0, 1.0], [0.0, -1.0]],
                           "seen": [[1, 3], []]},  # u2 has "iy" and "i-y", u3 nothing
}


def write_users(folder: Path) -> str:
    folder.mkdir()
    for name, columns in USER_PARTS.items():
        pd.DataFrame({"user_id": columns["user_id"],
                      "vector": [np.array(v, np.float32) for v in columns["vector"]],
                      "seen": [np.array(s, np.int32) for s in columns["seen"]]}).to_parquet(folder / name)
    (folder / "_SUCCESS").touch()
    return str(folder)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pyfunc")
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    experiment = mlflow.create_experiment("pyfunc", artifact_location=str(tmp / "mlruns"))
    with mlflow.start_run(experiment_id=experiment):
        version = registry.register_candidate("planted", ARRAYS, write_users(tmp / "users"), k=3,
                                              date="2026-11-22", run_dir="runs/x")
    assert version.tags[registry.DATE_TAG] == "2026-11-22"
    return mlflow.pyfunc.load_model(f"models:/planted/{version.version}")


def test_known_user_gets_the_model_ranking_without_items_they_have(model):
    out = model.predict(pd.DataFrame({"user_id": ["u1"]}))
    assert out["item_id"].tolist() == ["iy", "i-y", "i-x"]
    assert (out["source"] == "model").all() and out["rank"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(out["score"], [0.1, -0.1, -1.0], rtol=1e-6)


def test_users_from_every_part_file_keep_their_own_vector_and_items(model):
    out = model.predict(pd.DataFrame({"user_id": ["u3", "u2"]}), params={"k": 4})
    assert out["user_id"].tolist() == ["u3"] * 4 + ["u2"] * 2  # input order; u2 has 2 of the 4 items
    assert out["item_id"].tolist() == ["i-y", "ix", "i-x", "iy", "ix", "i-x"]  # ties by catalogue position
    np.testing.assert_allclose(out["score"], [1, 0, 0, -1, 0, 0])


def test_new_user_is_placed_by_their_features_and_others_fall_back_to_popularity(model):
    users = pd.DataFrame({"user_id": ["new", "stranger", "nobody"],
                          "features": [["likes_x", "likes_y"], ["unknown_feature"], None]})
    out = model.predict(users, params={"k": 2})
    new = out[out["user_id"] == "new"]
    assert new["item_id"].tolist() == ["ix", "iy"] and (new["source"] == "features").all()
    np.testing.assert_allclose(new["score"], [1.0, 1.0])  # the mean of the two feature vectors: (1, 1)
    for user in ("stranger", "nobody"):
        rows = out[out["user_id"] == user]
        assert rows["item_id"].tolist() == ["iy", "i-x"] and (rows["source"] == "popularity").all()
