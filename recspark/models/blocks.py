"""Scoring users in blocks on executors: the machinery top-k and evaluation share.

:func:`user_table` gathers each target user's train items, test items and
factors into one row with a single shuffle; ``mapInArrow`` code then walks the
Arrow batches in blocks of :func:`rows_per_block` users, decodes them with
:func:`list_csr` / :func:`user_vectors` / :func:`block_keys` and scores each
block with one :func:`checked_scores` call. It lives under ``models`` because
top-k (:mod:`recspark.models.topk`) is a model operation; evaluation
(:mod:`recspark.evaluation.ranking`) builds on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from threadpoolctl import threadpool_limits

from recspark.data.columns import FEATURES, ITEM_IDX, USER_IDX
from recspark.errors import ConfigError, DataValidationError, ModelFitError
from recspark.models.scoring import Scorer

#: Float32 scores held per block (2**23 values = 32 MiB): block rows are
#: ``max(1, budget // n_items)`` unless ``block_size`` is given.
BLOCK_BUDGET_ELEMENTS = 2**23

#: Columns of :func:`user_table`'s rows.
TRAIN_ITEMS = "train_items"
TEST_ITEMS = "test_items"
N_FACTOR_ROWS = "_n_factor_rows"


def require_columns(df: DataFrame, name: str, cols: Sequence[str]) -> None:
    """Fail early, naming the frame, when an input lacks the indexed interaction columns."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{name}: missing column(s) {missing}; found {df.columns}. Expected the "
            f"indexed interaction schema ({USER_IDX} int, {ITEM_IDX} int, ...)."
        )


def rows_per_block(n_items: int, block_size: int | None) -> int:
    """Users per scored block: ``block_size``, or as many as fit `BLOCK_BUDGET_ELEMENTS`."""
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ConfigError(f"block_size must be an integer >= 1 or None, got {block_size!r}")
        return block_size
    return max(1, BLOCK_BUDGET_ELEMENTS // max(n_items, 1))


def user_table(
    scorer: Scorer,
    train: DataFrame,
    test: DataFrame | None = None,
    users: DataFrame | None = None,
) -> DataFrame:
    """One row per target user with item arrays and factors, built with a single shuffle.

    Train rows, test rows, the scorer's user factors and the requested users are
    unioned with a source tag and grouped once by ``user_idx`` (rather than
    grouping each side and joining), because every shuffle costs a stage.
    ``collect_list`` skips the nulls that ``when`` produces for other sources.

    Target users: those with test items when ``test`` is given, else ``users``
    when given, else the users of ``train``.
    """
    src, item = "_src", ITEM_IDX
    null_vec = F.lit(None).cast("array<float>").alias(FEATURES)

    def tagged(df: DataFrame, tag: int, with_items: bool = True) -> DataFrame:
        return df.select(
            F.col(USER_IDX).cast("int").alias(USER_IDX),
            (F.col(ITEM_IDX).cast("int") if with_items else F.lit(None).cast("int")).alias(item),
            F.lit(tag).alias(src),
            null_vec,
        )

    parts = [tagged(train, 0)]
    if test is not None:
        parts.append(tagged(test, 1))
    if users is not None:
        parts.append(tagged(users, 2, with_items=False))
    if scorer.user_factors is not None:
        parts.append(
            scorer.user_factors.select(
                F.col(USER_IDX).cast("int").alias(USER_IDX),
                F.lit(None).cast("int").alias(item),
                F.lit(3).alias(src),
                F.col(FEATURES).cast("array<float>").alias(FEATURES),
            )
        )
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    aggs = [
        F.collect_list(F.when(F.col(src) == 0, F.col(item))).alias(TRAIN_ITEMS),
        F.collect_list(F.when(F.col(src) == 1, F.col(item))).alias(TEST_ITEMS),
        F.max((F.col(src) == 2).cast("int")).alias("_requested"),
    ]
    if scorer.user_factors is not None:
        aggs += [
            F.first(F.col(FEATURES), ignorenulls=True).alias(FEATURES),
            F.count(F.col(FEATURES)).alias(N_FACTOR_ROWS),
        ]
    grouped = union.groupBy(USER_IDX).agg(*aggs)
    if test is not None:
        grouped = grouped.filter(F.size(TEST_ITEMS) > 0)
    elif users is not None:
        grouped = grouped.filter(F.col("_requested") == 1)
    else:
        grouped = grouped.filter(F.size(TRAIN_ITEMS) > 0)
    return grouped.drop("_requested")


# --------------------------------------------------------------------------- #
# Executor-side helpers (Arrow batch -> NumPy)
# --------------------------------------------------------------------------- #


def list_csr(arr: pa.Array, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """A list Arrow column as (flat values of ``dtype``, int64 indptr); null lists are empty."""
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    values = arr.flatten()
    if values.null_count:
        raise DataValidationError(f"{values.null_count} null value(s) inside list column")
    indptr = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False), indptr


def user_vectors(arr: pa.Array, n_factors: int) -> tuple[np.ndarray, np.ndarray]:
    """Features column as float32 [n, n_factors]; null rows become zeros (returned mask)."""
    values, indptr = list_csr(arr.cast(pa.list_(pa.float32())), np.float32)
    lengths = np.diff(indptr)
    missing = lengths == 0
    if np.any(lengths[~missing] != n_factors):
        bad = int(lengths[~missing][lengths[~missing] != n_factors][0])
        raise DataValidationError(
            f"user_factors: a features vector has length {bad}, expected {n_factors} "
            "(the item factors' rank)"
        )
    out = np.zeros((len(arr), n_factors), dtype=np.float32)
    out[~missing] = values.reshape(-1, n_factors) if n_factors else 0.0
    return out, missing


def block_keys(
    items: np.ndarray, indptr: np.ndarray, start: int, stop: int, n_items: int
) -> tuple[np.ndarray, int]:
    """Unique ``row * n_items + item`` keys of a block, plus the count of out-of-range items."""
    flat = items[indptr[start] : indptr[stop]]
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(indptr[start : stop + 1]))
    valid = (flat >= 0) & (flat < n_items)
    keys = np.unique(rows[valid] * n_items + flat[valid])
    return keys, int(np.count_nonzero(~valid))


@contextmanager
def task_blas_threads() -> Iterator[None]:
    """Inside a Spark task, let BLAS use the task's CPUs (``spark.task.cpus``, usually 1), no more.

    Spark already runs one task per core, and a Python worker's OpenBLAS
    starts a thread per core of the machine; with both, 2 tasks on 2 cores
    run 4 GEMM threads that preempt each other. Spark sets
    ``OMP_NUM_THREADS`` only when ``spark.executor.cores`` is set (not on
    local masters) and the variable cannot help a worker whose BLAS is
    already loaded, so the limit is set here at run time (threadpoolctl)
    and restored when the task's iterator ends. Outside a task it does nothing.
    """
    context = TaskContext.get()
    if context is None:
        yield
        return
    with threadpool_limits(limits=max(1, int(context.cpus())), user_api="blas"):
        yield


def checked_scores(scorer: Scorer, users: np.ndarray, vectors: np.ndarray | None) -> np.ndarray:
    """``scorer.score_block`` as a writable C-contiguous float32 matrix, its shape checked."""
    scores = scorer.score_block(users, vectors)
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape != (len(users), scorer.n_items):
        raise ModelFitError(
            f"{type(scorer).__name__}.score_block returned shape {scores.shape}, expected "
            f"({len(users)}, {scorer.n_items})"
        )
    if not (scores.flags.c_contiguous and scores.flags.writeable):
        scores = np.array(scores, dtype=np.float32, order="C")
    return scores
