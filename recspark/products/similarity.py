"""Cosine neighbours between item and feature embeddings, computed in Spark.

Every product here is one of two shapes:

* **queries x candidates top-k with exclusions** (similar items, items per
  tag, tag suggestions, similar tags). That is exactly what
  :func:`recspark.models.topk.recommend` computes for users x items,
  so :func:`top_k_cosine` reuses it instead of duplicating it: the
  L2-normalised candidate vectors become a :class:`FactorScorer`'s item matrix
  (one broadcast), the normalised query vectors its ``user_factors`` (keyed by
  ``user_idx`` = query row) and the exclusions its ``train`` frame. Executors
  score blocks of queries with one GEMM each and keep an exact top-k (ties by
  candidate row), so no all-pairs matrix exists anywhere and only
  O(rows x dim) vectors are held on the driver.
* **per-pair candidate sets** (explanations: a user's training items for each
  recommended item): :func:`explanations` joins recommendations to training
  interactions by user, scores each pair with a vectorised pandas UDF against
  the broadcast item vectors, and ranks per (user, item) with a window.

Similarity is the cosine of the representations (biases ignored): vectors are
L2-normalised on the driver, so a dot product is the cosine. Rows whose vector
is zero (an item id without factors) have no direction: they never appear as
a neighbour and get no neighbours.

Results keep the original ids and feature names (``item_id``, ``feature``).
The frames are lazy; the broadcasts they use are freed by Spark's context
cleaner once the frame is no longer referenced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recspark.data.columns import FEATURE, FEATURES, ITEM_ID, ITEM_IDX, RANK, SCORE, USER_ID, USER_IDX
from recspark.errors import DataValidationError
from recspark.models.scoring import FactorScorer
from recspark.models.topk import recommend

log = logging.getLogger(__name__)

__all__ = [
    "CANDIDATE_IDX",
    "QUERY_IDX",
    "Embeddings",
    "explanations",
    "feature_items",
    "feature_suggestions",
    "group_rows",
    "normalize_rows",
    "similar_features",
    "similar_items",
    "top_k_cosine",
]

#: Columns of :func:`top_k_cosine`: row numbers of the query and candidate arrays.
QUERY_IDX = "query_idx"
CANDIDATE_IDX = "candidate_idx"
SIMILAR_ITEM_ID = "similar_item_id"
SIMILAR_FEATURE = "similar_feature"
BECAUSE_ITEM_ID = "because_item_id"
_BECAUSE_IDX = "_because_idx"


@dataclass(frozen=True)
class Embeddings:
    """Vectors of one kind of object with their external keys: row ``i`` is ``keys[i]``.

    Keys are item ids or feature names (strings); a ``None`` key marks a row
    without an external id (it is left out, like a zero vector). Items are
    kept with rows = ``item_idx`` so the training interactions index them.
    """

    keys: npt.NDArray[np.object_]
    vectors: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        keys = np.asarray(self.keys, dtype=object)
        vectors = np.asarray(self.vectors, dtype=np.float32)
        if vectors.ndim != 2 or keys.shape != (vectors.shape[0],):
            raise DataValidationError(f"Embeddings: {keys.shape[0]} keys for vectors of shape {vectors.shape}; "
                                      "expected one key per row")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "vectors", vectors)

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, rows: npt.NDArray[np.integer]) -> Embeddings:
        """The given rows only (e.g. one feature group), renumbered from 0."""
        return Embeddings(self.keys[rows], self.vectors[rows])

    def usable(self) -> npt.NDArray[np.bool_]:
        """Rows that can take part: a key and a non-zero vector."""
        return np.array([k is not None for k in self.keys], dtype=bool) & (np.abs(self.vectors).sum(axis=1) > 0)


def normalize_rows(vectors: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Unit-length rows (float32) and the mask of rows that had a direction (non-zero norm).

    Normalising once on the driver turns every GEMM on the executors into a
    cosine. Zero rows stay zero and are reported so callers can drop them.

    Raises
    ------
    DataValidationError
        Not 2-D, or NaN/inf values (a diverged model).
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise DataValidationError(f"expected a 2-D array of vectors, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise DataValidationError("vectors contain NaN or inf; the model diverged -- retrain it")
    norms = np.linalg.norm(v, axis=1)
    valid = norms > 0
    out = np.zeros(v.shape, dtype=np.float32)
    out[valid] = v[valid] / norms[valid, None]
    return out, valid


def _factor_frame(spark: SparkSession, rows: np.ndarray, vectors: np.ndarray) -> DataFrame:
    pdf = pd.DataFrame({USER_IDX: rows.astype(np.int32), FEATURES: list(vectors[rows])})
    return spark.createDataFrame(pdf, f"{USER_IDX} int, {FEATURES} array<float>")


def _index_frame(spark: SparkSession, left: str, right: str, values: np.ndarray) -> DataFrame:
    """Small ``left`` -> ``right`` int lookup (row ``i`` -> ``values[i]``) for broadcast joins."""
    pdf = pd.DataFrame({left: np.arange(len(values), dtype=np.int32), right: values.astype(np.int32)})
    return spark.createDataFrame(pdf, f"{left} int, {right} int")


def top_k_cosine(
    spark: SparkSession,
    queries: npt.ArrayLike,
    candidates: npt.ArrayLike,
    k: int,
    *,
    exclude: DataFrame | None = None,
    exclude_same_row: bool = False,
    block_size: int | None = None,
) -> DataFrame:
    """Exact top-``k`` candidates by cosine similarity for every query row, on executors.

    A thin adapter over :func:`~recspark.models.topk.recommend`, so the
    blocked, broadcast, exactly-tie-broken top-k code exists once.

    Parameters
    ----------
    queries, candidates : array [n_queries, dim], [n_candidates, dim]
        Raw vectors (normalised here). Zero rows are left out on both sides.
    k : int
        Neighbours per query; fewer when fewer candidates are eligible.
    exclude : DataFrame, optional
        ``query_idx``, ``candidate_idx`` pairs never returned (e.g. features an
        item already has).
    exclude_same_row : bool
        Also exclude candidate ``i`` for query ``i`` (queries and candidates
        are the same objects: no self-matches).
    block_size : int, optional
        Queries per GEMM (default: ~32 MiB of scores, as in ``recommend``).

    Returns
    -------
    DataFrame
        ``query_idx`` int, ``rank`` int (1..k), ``candidate_idx`` int,
        ``score`` float (cosine), ordered per query by score descending then
        ``candidate_idx`` ascending.
    """
    q, q_valid = normalize_rows(queries)
    c, c_valid = normalize_rows(candidates)
    if q.shape[1] != c.shape[1]:
        raise DataValidationError(f"queries have dimension {q.shape[1]} but candidates {c.shape[1]}")
    schema = f"{QUERY_IDX} int, {RANK} int, {CANDIDATE_IDX} int, {SCORE} float"
    query_rows = np.flatnonzero(q_valid)
    cand_rows = np.flatnonzero(c_valid)  # scorer item p is candidate row cand_rows[p]
    if not len(query_rows) or not len(cand_rows):
        log.warning("top_k_cosine: %d usable queries, %d usable candidates: no neighbours",
                    len(query_rows), len(cand_rows))
        return spark.createDataFrame([], schema)
    compact = len(cand_rows) < len(c)

    pairs = []
    if exclude is not None:
        missing = [col for col in (QUERY_IDX, CANDIDATE_IDX) if col not in exclude.columns]
        if missing:
            raise DataValidationError(f"exclude: missing column(s) {missing}; found {exclude.columns}")
        pairs.append(exclude.select(F.col(QUERY_IDX).cast("int"), F.col(CANDIDATE_IDX).cast("int")))
    if exclude_same_row:
        same = spark.range(min(len(q), len(c))).select(F.col("id").cast("int").alias(QUERY_IDX))
        pairs.append(same.withColumn(CANDIDATE_IDX, F.col(QUERY_IDX)))
    if pairs:
        excluded = pairs[0]
        for part in pairs[1:]:
            excluded = excluded.unionByName(part)
        if compact:  # candidate rows -> scorer positions; pairs with unusable candidates drop out
            positions = _index_frame(spark, "_pos", CANDIDATE_IDX, cand_rows)
            excluded = excluded.join(F.broadcast(positions), CANDIDATE_IDX).drop(CANDIDATE_IDX) \
                .withColumnRenamed("_pos", CANDIDATE_IDX)
        train = excluded.select(F.col(QUERY_IDX).alias(USER_IDX), F.col(CANDIDATE_IDX).alias(ITEM_IDX))
    else:
        train = spark.createDataFrame([], f"{USER_IDX} int, {ITEM_IDX} int")

    users = _factor_frame(spark, query_rows, q)
    scorer = FactorScorer(c[cand_rows], users)
    recs = recommend(scorer, train, k=k, users=users.select(USER_IDX), exclude_train=True,
                     block_size=block_size)
    recs = recs.select(F.col(USER_IDX).alias(QUERY_IDX), RANK, F.col(ITEM_IDX).alias("_pos"), SCORE)
    if compact:
        positions = _index_frame(spark, "_pos", CANDIDATE_IDX, cand_rows)
        recs = recs.join(F.broadcast(positions), "_pos")
    else:
        recs = recs.withColumnRenamed("_pos", CANDIDATE_IDX)
    return recs.select(QUERY_IDX, RANK, CANDIDATE_IDX, SCORE)


def _keys_frame(spark: SparkSession, idx_col: str, key_col: str, keys: np.ndarray) -> DataFrame:
    pdf = pd.DataFrame({idx_col: np.arange(len(keys), dtype=np.int32), key_col: pd.Series(keys, dtype=object)})
    return spark.createDataFrame(pdf, f"{idx_col} int, {key_col} string")


def _labelled(spark: SparkSession, pairs: DataFrame, query_keys: np.ndarray, query_col: str,
              candidate_keys: np.ndarray, candidate_col: str) -> DataFrame:
    """Replace row numbers by external keys (both lookups are O(rows): broadcast joins)."""
    queries = _keys_frame(spark, QUERY_IDX, query_col, query_keys)
    cands = _keys_frame(spark, CANDIDATE_IDX, candidate_col, candidate_keys)
    return (pairs.join(F.broadcast(queries), QUERY_IDX).join(F.broadcast(cands), CANDIDATE_IDX)
            .select(query_col, RANK, candidate_col, SCORE))


def _masked(emb: Embeddings) -> np.ndarray:
    """Vectors with unusable rows (no key) zeroed, so :func:`top_k_cosine` leaves them out."""
    return np.where(emb.usable()[:, None], emb.vectors, 0.0).astype(np.float32)


def similar_items(spark: SparkSession, items: Embeddings, k: int, *, block_size: int | None = None) -> DataFrame:
    """``item_id, rank, similar_item_id, score``: each item's k most similar other items.

    "More like this" lists: neighbours in the model's item space, self excluded.
    """
    vectors = _masked(items)
    pairs = top_k_cosine(spark, vectors, vectors, k, exclude_same_row=True, block_size=block_size)
    return _labelled(spark, pairs, items.keys, ITEM_ID, items.keys, SIMILAR_ITEM_ID)


def feature_items(spark: SparkSession, features: Embeddings, items: Embeddings, k: int, *,
                  block_size: int | None = None) -> DataFrame:
    """``feature, rank, item_id, score``: the k items closest to each feature's embedding.

    Sorts the catalogue by a tag ("the most *rock* items"), whether or not the
    items carry the tag: the embedding says what the tag means to users.
    """
    pairs = top_k_cosine(spark, _masked(features), _masked(items), k, block_size=block_size)
    return _labelled(spark, pairs, features.keys, FEATURE, items.keys, ITEM_ID)


def feature_suggestions(spark: SparkSession, items: Embeddings, features: Embeddings,
                        item_has: sp.spmatrix, k: int, *, block_size: int | None = None) -> DataFrame:
    """``item_id, rank, feature, score``: the k features closest to each item that it does not have.

    Tag suggestions for editors: what the item behaves like but is not tagged
    with. ``item_has`` is [n_items, n_features] (rows as ``items``, columns as
    ``features``); its non-zero entries are excluded.
    """
    item_has = sp.coo_matrix(item_has)
    if item_has.shape != (len(items), len(features)):
        raise DataValidationError(f"item_has has shape {item_has.shape}, expected ({len(items)}, {len(features)})")
    nz = item_has.data != 0
    has = pd.DataFrame({QUERY_IDX: item_has.row[nz].astype(np.int32), CANDIDATE_IDX: item_has.col[nz].astype(np.int32)})
    exclude = spark.createDataFrame(has, f"{QUERY_IDX} int, {CANDIDATE_IDX} int")
    pairs = top_k_cosine(spark, _masked(items), _masked(features), k, exclude=exclude, block_size=block_size)
    return _labelled(spark, pairs, items.keys, ITEM_ID, features.keys, FEATURE)


def similar_features(spark: SparkSession, features: Embeddings, k: int, *,
                     block_size: int | None = None) -> DataFrame:
    """``feature, rank, similar_feature, score``: each feature's k most similar features (self excluded).

    Related tags, e.g. to merge synonyms or build tag clouds.
    """
    vectors = _masked(features)
    pairs = top_k_cosine(spark, vectors, vectors, k, exclude_same_row=True, block_size=block_size)
    return _labelled(spark, pairs, features.keys, FEATURE, features.keys, SIMILAR_FEATURE)


def explanations(recs: DataFrame, train: DataFrame, user_map: DataFrame, items: Embeddings, n: int) -> DataFrame:
    """``user_id, item_id, rank, because_item_id, score``: why each item was recommended.

    For each (user, recommended item) the user's ``n`` training items most
    similar to it ("because you liked ..."). Each pair has its own candidate
    set (that user's history), so this is a join rather than a top-k GEMM:
    recommendations join the training interactions by user, a pandas UDF
    computes the cosines against the broadcast item vectors, and a window
    keeps the best ``n`` per pair (ties by item index). The recommended item
    itself is never its own explanation.

    Parameters
    ----------
    recs : DataFrame
        ``user_id``, ``item_id`` (a recommendations output; other columns ignored).
    train : DataFrame
        ``user_idx``, ``item_idx``: the training interactions.
    user_map : DataFrame
        ``user_id``, ``user_idx``.
    items : Embeddings
        Rows = ``item_idx``, keys = ``item_id``.
    n : int
        Explanations per (user, item); fewer when the user has fewer usable items.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataValidationError(f"n must be an integer >= 1, got {n!r}")
    for df, name, cols in ((recs, "recs", (USER_ID, ITEM_ID)), (train, "train", (USER_IDX, ITEM_IDX)),
                           (user_map, "user_map", (USER_ID, USER_IDX))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataValidationError(f"{name}: missing column(s) {missing}; found {df.columns}")
    spark = recs.sparkSession
    vectors, valid = normalize_rows(_masked(items))
    rows = np.flatnonzero(valid)
    lookup = spark.createDataFrame(
        pd.DataFrame({ITEM_ID: pd.Series(items.keys[rows], dtype=object), ITEM_IDX: rows.astype(np.int32)}),
        f"{ITEM_ID} string, {ITEM_IDX} int")
    vectors_bc = spark.sparkContext.broadcast(vectors)

    @F.pandas_udf("float")
    def cosine(a: pd.Series, b: pd.Series) -> pd.Series:
        v = vectors_bc.value
        return pd.Series(np.einsum("ij,ij->i", v[a.to_numpy()], v[b.to_numpy()]), dtype=np.float32)

    recommended = (recs.select(USER_ID, ITEM_ID)
                   .join(user_map.select(USER_ID, F.col(USER_IDX).cast("int").alias(USER_IDX)), USER_ID)
                   .join(F.broadcast(lookup), ITEM_ID))  # drops items without a vector
    history = (train.select(F.col(USER_IDX).cast("int").alias(USER_IDX), F.col(ITEM_IDX).cast("int"))
               .join(F.broadcast(lookup.select(F.col(ITEM_IDX), F.col(ITEM_ID).alias(BECAUSE_ITEM_ID))), ITEM_IDX)
               .withColumnRenamed(ITEM_IDX, _BECAUSE_IDX))
    pairs = recommended.join(history, USER_IDX).where(F.col(ITEM_IDX) != F.col(_BECAUSE_IDX))
    scored = pairs.withColumn(SCORE, cosine(F.col(ITEM_IDX), F.col(_BECAUSE_IDX)))
    order = Window.partitionBy(USER_IDX, ITEM_IDX).orderBy(F.col(SCORE).desc(), F.col(_BECAUSE_IDX).asc())
    return (scored.withColumn(RANK, F.row_number().over(order)).where(F.col(RANK) <= n)
            .select(USER_ID, ITEM_ID, F.col(RANK).cast("int").alias(RANK), BECAUSE_ITEM_ID, SCORE))


def group_rows(names: Sequence[str], group: str) -> np.ndarray:
    """Indices of ``names`` in feature group ``group`` (names prefixed ``<group>_``, e.g. ``tag_rock``)."""
    prefix = f"{group}_"
    return np.array([j for j, name in enumerate(names) if name.startswith(prefix)], dtype=np.int64)
