"""Scoring throughput of top-k recommendation and exact evaluation against a plain GEMM of the same shape.

Scoring every user against every item is the O(users x items) part of a run
(``recommend`` and ``evaluate``). Its floor is the float32 matrix product
``user_vectors @ item_vectors.T``; everything else (excluding train items,
top-k selection, ranking the held-out items, metrics, Arrow in and out)
should cost less than the product itself. This benchmark runs the executor-side
code of :func:`recspark.models.topk.recommend` and
:func:`recspark.evaluation.ranking.evaluate` on one core (BLAS limited to one
thread, as :func:`recspark.models.blocks.task_blas_threads` sets in a task) on
an Arrow batch like the one Spark hands them, and reports scored (user, item)
pairs per CPU-second beside NumPy's GEMM of the same shape: the issue's target
is >= 50% of it.

Top-k of a factor model skips pairs by two bounds
(:mod:`recspark.models.pruning`); "pairs bounded" and "pairs scored exactly"
say how many of the users x items pairs each stage of it reached. Random
factors (the default) are the worst case for those bounds; ``--model``
scores a trained model of a job's output (its item factors, the first
``--users`` users with their train items).

``--block-rows`` compares users per GEMM block (default: the library's
choice, ``rows_per_block``). A local SparkSession is started only to build the
:class:`~recspark.models.scoring.FactorScorer` (its item side is a broadcast).

Run::

    python benchmarks/bench_scoring.py                         # 100k items x 64 factors, ~1 minute
    python benchmarks/bench_scoring.py --items 10000 --block-rows 64 256 1024 --json /tmp/scoring.json
    python benchmarks/bench_scoring.py --users 20000 --model /tmp/recspark-scale/runs/20m/out/models/warp
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from threadpoolctl import threadpool_info, threadpool_limits

from recspark.data.columns import FEATURES, ITEM_IDX, USER_IDX
from recspark.evaluation.ranking import _evaluate_batches
from recspark.models.blocks import TEST_ITEMS, TRAIN_ITEMS, rows_per_block
from recspark.models.scoring import FactorScorer
from recspark.models.topk import _recommend_batches

log = logging.getLogger("bench_scoring")


def user_batch(n_users: int, n_items: int, n_factors: int, n_train: int, n_test: int, seed: int) -> pa.RecordBatch:
    """An Arrow batch as ``user_table`` builds it: user_idx, train and test items (disjoint, Zipf-popular), factors."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity /= popularity.sum()
    train, test = [], []
    for _ in range(n_users):
        items = np.unique(rng.choice(n_items, n_train + n_test, p=popularity))
        rng.shuffle(items)
        test.append(np.sort(items[:n_test]).astype(np.int32))
        train.append(np.sort(items[n_test:]).astype(np.int32))
    vectors = rng.standard_normal((n_users, n_factors)).astype(np.float32)
    return pa.RecordBatch.from_arrays(
        [pa.array(np.arange(n_users, dtype=np.int32)), pa.array(train, type=pa.list_(pa.int32())),
         pa.array(test, type=pa.list_(pa.int32())),
         pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), n_factors).cast(pa.list_(pa.float32()))],
        names=[USER_IDX, TRAIN_ITEMS, TEST_ITEMS, FEATURES])


def model_case(folder: Path, n_users: int) -> tuple[np.ndarray, np.ndarray | None, pa.RecordBatch]:
    """A trained model's item side and the first ``n_users`` users (factors, train items) as one Arrow batch."""
    items = pd.read_parquet(folder / "item_factors")
    n_items = int(items[ITEM_IDX].max()) + 1
    item_vectors = np.zeros((n_items, len(items[FEATURES].iloc[0])), dtype=np.float32)
    item_vectors[items[ITEM_IDX]] = np.stack(items[FEATURES].to_numpy())
    item_bias = None
    if "bias" in items:
        item_bias = np.zeros(n_items, dtype=np.float32)
        item_bias[items[ITEM_IDX]] = items["bias"].fillna(0.0).to_numpy(np.float32)
    users = pd.read_parquet(folder / "user_factors").sort_values(USER_IDX).head(n_users)
    train = pd.read_parquet(folder.parents[1] / "matrix" / "train", columns=[USER_IDX, ITEM_IDX])
    train = train[train[USER_IDX].isin(users[USER_IDX])].groupby(USER_IDX)[ITEM_IDX].apply(np.sort)
    lists = [train.get(u, np.empty(0, dtype=np.int32)).astype(np.int32) for u in users[USER_IDX]]
    vectors = np.stack(users[FEATURES].to_numpy()).astype(np.float32)
    batch = pa.RecordBatch.from_arrays(
        [pa.array(users[USER_IDX].to_numpy(np.int32)), pa.array(lists, type=pa.list_(pa.int32())),
         pa.array([lst[:0] for lst in lists], type=pa.list_(pa.int32())),
         pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]).cast(pa.list_(pa.float32()))],
        names=[USER_IDX, TRAIN_ITEMS, TEST_ITEMS, FEATURES])
    return item_vectors, item_bias, batch


def cpu_seconds(run: Callable[[], object], repeats: int) -> list[float]:
    """CPU seconds of each of ``repeats`` calls (the fair clock on a shared machine)."""
    out = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        out.append(time.process_time() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000, help="users in the scored batch")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--train-items", type=int, default=20, help="train items per user (excluded)")
    parser.add_argument("--test-items", type=int, default=5, help="held-out items per user (ranked)")
    parser.add_argument("--k", type=int, default=10, help="top-k of recommend")
    parser.add_argument("--block-rows", type=int, nargs="*", default=[], help="users per GEMM block; default: the library's")
    parser.add_argument("--model", metavar="OUT/models/NAME",
                        help="score a trained model instead of random vectors: a job output's model folder "
                             "(item_factors, user_factors); train items from OUT/matrix/train, --users of its users")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[1]").appName("bench_scoring")
             .config("spark.ui.enabled", "false").getOrCreate())
    if args.model:
        item_vectors, item_bias, batch = model_case(Path(args.model), args.users)
        args.items, args.factors = item_vectors.shape
    else:
        rng = np.random.default_rng(1)
        item_vectors = (rng.standard_normal((args.items, args.factors)) / np.sqrt(args.factors)).astype(np.float32)
        item_bias = rng.standard_normal(args.items).astype(np.float32)
        batch = user_batch(args.users, args.items, args.factors, args.train_items, args.test_items, seed=0)
    no_users = spark.createDataFrame([], f"{USER_IDX} int, {FEATURES} array<float>")
    scorer = FactorScorer(item_vectors, no_users, item_bias=item_bias)
    vectors = np.asarray(batch.column(FEATURES).flatten(), dtype=np.float32).reshape(args.users, args.factors)
    pairs = args.users * args.items
    blas = [(i["internal_api"], i["version"], i.get("architecture")) for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"# {args.users} users x {args.items} items x {args.factors} factors ({args.model or 'random'}); "
          f"BLAS {blas}, 1 thread; CPU-seconds, median of {args.repeats}")

    rows = []
    with threadpool_limits(limits=1, user_api="blas"):
        for block in args.block_rows or [rows_per_block(args.items, None)]:
            def gemm() -> None:
                for start in range(0, args.users, block):
                    scores = vectors[start:start + block] @ item_vectors.T
                    if item_bias is not None:
                        scores += item_bias

            def recommend() -> None:
                for _ in _recommend_batches(iter([batch]), scorer, args.k, True, block if args.block_rows else None):
                    pass

            def evaluate() -> None:
                for _ in _evaluate_batches(iter([batch]), scorer, (5, 10), True, block):
                    pass

            recommend(), evaluate()  # compile and warm up
            index = scorer.bound_index()
            index.bounded_pairs = index.exact_pairs = 0
            recommend()
            bounded, exact = index.bounded_pairs / pairs, index.exact_pairs / pairs
            base = float(np.median(cpu_seconds(gemm, args.repeats)))
            for name, run in (("numpy GEMM", gemm), ("recommend", recommend), ("evaluate", evaluate)):
                seconds = base if run is gemm else float(np.median(cpu_seconds(run, args.repeats)))
                rows.append({"block_rows": block, "stage": name, "cpu_seconds": seconds,
                             "mpairs_per_cpu_s": pairs / seconds / 1e6, "of_gemm": base / seconds,
                             "pairs_bounded": bounded if run is recommend else None,
                             "pairs_exact": exact if run is recommend else 1.0})

    print("| users per block | stage | CPU s | M pairs / CPU-s | share of GEMM | pairs bounded | pairs scored exactly |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        bounded = "" if row["pairs_bounded"] is None else f"{row['pairs_bounded']:.1%}"
        print(f"| {row['block_rows']} | {row['stage']} | {row['cpu_seconds']:.3f} | "
              f"{row['mpairs_per_cpu_s']:.0f} | {row['of_gemm']:.0%} | {bounded} | {row['pairs_exact']:.1%} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "blas": blas, "rows": rows}, fh, indent=1)
    scorer.unpersist()
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
