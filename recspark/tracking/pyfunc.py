"""The served model as an MLflow pyfunc: top-k for a user with NumPy, no Spark.

The nightly registers it; every training run logs one per model (``runs:/<id>/warp_pyfunc``).

Logged as MLflow "models from code": this file is stored with the model and
executed when it is loaded, so serving needs numpy, pandas and pyarrow but
neither Spark nor recspark. It must not import recspark.

``predict(pd.DataFrame({"user_id": [...]}), params={"k": 10})`` returns one
row per recommendation, ``user_id``, ``rank`` (1-based), ``item_id``,
``score``, ``source``, in input order:

- a user the model was trained on (``source="model"``): every catalogue item
  scored ``user . item + item bias`` (one GEMM per block of users), the items
  the user already has (train and held-out interactions) excluded, ties
  broken by catalogue position as in the batch recommendations;
- a new user with an optional ``features`` column (a list of user feature
  names, e.g. ``["country_de", "age_q3"]``) when the model was trained with
  user side features (``source="features"``): the user is the sum of those
  features' embeddings (weights 1/n when the features were normalised), as
  LightFM represents a cold user; unknown names are ignored;
- any other user (``source="popularity"``): the most popular items (distinct
  training users per item).

Artifacts (logged by :func:`recspark.tracking.registry.log_pyfunc`):
``arrays.npz`` (``item_vectors`` [n_items, k], ``item_bias`` [n_items],
``popularity`` [n_items], ``user_feature_vectors`` [n_user_features, k]),
``items.parquet`` (``item_id`` in column order), ``user_features.parquet``
(``feature`` in row order), all O(items) and built on the Spark driver, and
``users``: a Parquet folder written by Spark's executors, one row per user
with factors, ``user_id``, ``vector`` (array<float>, length k) and ``seen``
(array<int>: the catalogue columns of the user's train and held-out items),
in any number of part files in any order. The per-user index (user id ->
row, vectors, seen items as CSR) is rebuilt from it when the model is
loaded, on the serving host. The catalogue is the items of the snapshot the
model was trained on (a training run's: the items the model has factors for).
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

#: Users scored per GEMM: bounds the score block to ~32 MiB of float32 for 2k items x 4k users.
_BLOCK_ELEMENTS = 2**23


class NightlyRecommender(mlflow.pyfunc.PythonModel):
    """Top-k recommendations from stored factors; popularity for users the model does not know."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        arrays = np.load(context.artifacts["arrays"])
        self.item_vectors = arrays["item_vectors"]
        self.item_bias = arrays["item_bias"]
        self.popularity = arrays["popularity"]
        self.feature_vectors = arrays["user_feature_vectors"]
        self.item_ids = pd.read_parquet(context.artifacts["items"])["item_id"].to_numpy()
        self.feature_rows = pd.Index(pd.read_parquet(context.artifacts["user_features"])["feature"])
        self._load_users(context.artifacts["users"])
        config = context.model_config or {}
        self.k = int(config.get("k", 10))
        self.normalize_features = bool(config.get("normalize_user_features", True))
        # Popular items in rank order (score desc, position asc), shared by every user without a vector.
        self.popular = np.lexsort((np.arange(len(self.popularity)), -self.popularity))

    def _load_users(self, path: str) -> None:
        """Index the per-user folder: rows follow the table as read, so part file order does not matter.

        Read with Arrow and flattened column-wise (no Python object per user):
        ``user_rows`` maps a user id to its row of ``user_vectors`` and of the
        seen CSR (``seen_indptr``/``seen_indices``).
        """
        table = pq.read_table(path, columns=["user_id", "vector", "seen"])  # every part file; skips _SUCCESS
        self.user_rows = pd.Index(table["user_id"].to_pandas())
        vectors, seen = table["vector"].combine_chunks(), table["seen"].combine_chunks()
        flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        self.user_vectors = flat.reshape(len(table), self.item_vectors.shape[1])
        offsets = seen.offsets.to_numpy().astype(np.int64)
        self.seen_indptr = offsets - offsets[0]
        self.seen_indices = seen.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        """Top ``params["k"]`` (default: the model's ``recommend_k``) items per input ``user_id``."""
        k = int((params or {}).get("k") or self.k)
        user_ids = model_input["user_id"].astype(str).to_numpy()
        n = len(user_ids)
        rows = self.user_rows.get_indexer(user_ids)
        vectors = np.zeros((n, self.item_vectors.shape[1]), dtype=np.float32)
        source = np.where(rows >= 0, "model", "popularity").astype(object)
        vectors[rows >= 0] = self.user_vectors[rows[rows >= 0]]
        if "features" in model_input.columns and len(self.feature_rows):
            for i in np.flatnonzero(rows < 0):
                vector = self._from_features(model_input["features"].iloc[i])
                if vector is not None:
                    vectors[i], source[i] = vector, "features"
        items = np.zeros((n, k), dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        top_popular = self.popular[:k]
        fallback = source == "popularity"
        items[fallback, :len(top_popular)] = top_popular
        scores[fallback, :len(top_popular)] = self.popularity[top_popular]
        scored = np.flatnonzero(~fallback)
        block = max(1, _BLOCK_ELEMENTS // max(len(self.item_bias), 1))
        for start in range(0, len(scored), block):
            positions = scored[start:start + block]
            items[positions], scores[positions] = self._top_k(vectors[positions], rows[positions], k)
        out = pd.DataFrame({"user_id": np.repeat(user_ids, k), "rank": np.tile(np.arange(1, k + 1), n),
                            "item_id": self.item_ids[items.ravel()], "score": scores.ravel(),
                            "source": np.repeat(source, k)})
        return out[np.isfinite(out["score"].to_numpy())].reset_index(drop=True)

    def _from_features(self, names: object) -> np.ndarray | None:
        """A new user's vector: the sum of their known features' embeddings (mean when normalised)."""
        if names is None or (isinstance(names, float) and np.isnan(names)):
            return None
        cols = self.feature_rows.get_indexer([str(name) for name in names])
        cols = cols[cols >= 0]
        if not len(cols):
            return None
        vector = self.feature_vectors[cols].sum(axis=0)
        return vector / len(cols) if self.normalize_features else vector

    def _top_k(self, vectors: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top k per vector; a known user's (``row >= 0``) own items are excluded."""
        scores = vectors @ self.item_vectors.T + self.item_bias
        for i, row in enumerate(rows):
            if row >= 0:
                scores[i, self.seen_indices[self.seen_indptr[row]:self.seen_indptr[row + 1]]] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # stable: ties by catalogue position
        top = np.take_along_axis(scores, order, axis=1)
        if order.shape[1] < k:  # catalogue smaller than k
            pad = k - order.shape[1]
            order = np.pad(order, ((0, 0), (0, pad)))
            top = np.pad(top, ((0, 0), (0, pad)), constant_values=-np.inf)
        return order, top


mlflow.models.set_model(NightlyRecommender())
