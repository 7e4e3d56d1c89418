"""Single-process throughput and quality of the compiled WARP/BPR/k-OS kernel vs LightFM.

Both run on one core (``num_threads=1``, or ``--threads N`` for both; BLAS/OpenMP
pinned to one thread) with the same hyperparameters, alternating epochs so that machine load
hits both alike. Reported per epoch: CPU seconds (``time.process_time``, the
fair number on a shared machine), wall seconds and samples per CPU second;
after the last epoch: precision@5 on a held-out 20% split (train items
excluded), so speed is not bought with worse learning.

Datasets: a planted synthetic set (clustered preferences, Zipf popularity,
~1.5M interactions by default) and MovieLens 100k (ratings >= 4).

LightFM is a benchmark-only dependency (never in ``install_requires``)::

    pip install --no-build-isolation lightfm   # 1.17

Run::

    python benchmarks/bench_kernel.py                      # ~1 minute
    python benchmarks/bench_kernel.py --repeats 5          # medians, for reports
    python benchmarks/bench_kernel.py --loss bpr --json /tmp/bench.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from recspark.config import KernelParams  # noqa: E402
from recspark.models.warp.kernel import fit_epoch, representations  # noqa: E402
from recspark.models.warp.state import SideParams  # noqa: E402

log = logging.getLogger("bench_kernel")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ML100K = REPO.parent / "shared" / "data" / "ml-100k" / "u.data"


def synthetic(n_users, n_items, n_interactions, n_clusters=20, in_cluster=0.8, seed=0):
    """Clustered users and items, Zipf popularity; returns unique (user, item) pairs.

    A user draws ``in_cluster`` of their interactions from their cluster's
    items and the rest from all items, both Zipf(0.9)-weighted by popularity,
    so there is learnable structure and a long tail.
    """
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, n_clusters, n_items)
    user_cluster = rng.integers(0, n_clusters, n_users)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity = popularity[rng.permutation(n_items)]
    # Users' activity is itself skewed (lognormal).
    activity = rng.lognormal(0.0, 1.0, n_users)
    users = rng.choice(n_users, n_interactions, p=activity / activity.sum())
    own = rng.random(n_interactions) < in_cluster
    items = np.empty(n_interactions, dtype=np.int64)
    global_p = popularity / popularity.sum()
    items[~own] = rng.choice(n_items, int((~own).sum()), p=global_p)
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(n_clusters)]
    own_idx = np.flatnonzero(own)
    clusters = user_cluster[users[own_idx]]
    for c in range(n_clusters):
        sel = own_idx[clusters == c]
        p = popularity[by_cluster[c]]
        items[sel] = by_cluster[c][rng.choice(p.size, sel.size, p=p / p.sum())]
    keys = np.unique(users.astype(np.int64) * n_items + items)
    return keys // n_items, keys % n_items, n_users, n_items


def movielens(path: Path):
    data = np.loadtxt(path, dtype=np.int64, usecols=(0, 1, 2))
    data = data[data[:, 2] >= 4]
    users, items = data[:, 0] - 1, data[:, 1] - 1
    return users, items, int(users.max()) + 1, int(items.max()) + 1


def split(users, items, n_users, n_items, seed=0):
    rng = np.random.default_rng(seed)
    test = rng.random(users.size) < 0.2

    def mat(mask):
        return sp.csr_matrix(
            (np.ones(int(mask.sum()), np.float32), (users[mask], items[mask])),
            shape=(n_users, n_items),
        )

    return mat(~test), mat(test)


def precision_at_k(u_rep, u_bias, i_rep, i_bias, train, test, k=5, max_users=3000, seed=0):
    """Mean precision@k over (a sample of) users with held-out items."""
    users = np.flatnonzero(np.diff(test.indptr))
    if users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    hits = 0.0
    for start in range(0, users.size, 500):
        block = users[start : start + 500]
        scores = u_rep[block] @ i_rep.T + i_bias[None, :] + u_bias[block, None]
        seen = train[block]
        scores[np.repeat(np.arange(block.size), np.diff(seen.indptr)), seen.indices] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        truth = test[block]
        hits += float(np.take_along_axis(truth.toarray(), top, axis=1).sum())
    return hits / (users.size * k)


def warm_up(loss: str) -> float:
    """Seconds of the kernel's first call on a tiny problem: JIT compile, or loading numba's on-disk cache."""
    start = time.perf_counter()
    sides = [SideParams.init(3, 4, "adagrad", np.random.default_rng(0)) for _ in range(2)]
    eye = sp.identity(3, dtype=np.float32, format="csr")
    fit_epoch(*sides, eye, eye, [0, 1], [1, 2], None, sp.csr_matrix(eye), KernelParams(loss=loss),
              np.random.default_rng(0))
    return time.perf_counter() - start


def run_dataset(name, users, items, n_users, n_items, args):
    train, test = split(users, items, n_users, n_items)
    coo = train.tocoo()
    n = coo.nnz
    log.info("%s: %d users, %d items, %d train / %d test", name, n_users, n_items, n, test.nnz)
    rows = []

    # recspark kernel
    rng = np.random.default_rng(args.seed)
    uf = sp.identity(n_users, dtype=np.float32, format="csr")
    itf = sp.identity(n_items, dtype=np.float32, format="csr")
    user_side = SideParams.init(n_users, args.components, "adagrad", rng)
    item_side = SideParams.init(n_items, args.components, "adagrad", rng)
    params = KernelParams(loss=args.loss, learning_rate=args.lr, max_sampled=args.max_sampled,
                          num_threads=args.threads)
    u_idx, i_idx = coo.row.astype(np.int64), coo.col.astype(np.int64)

    lfm = None
    if not args.no_lightfm:
        from lightfm import LightFM

        lfm = LightFM(no_components=args.components, learning_rate=args.lr, loss=args.loss,
                      learning_schedule="adagrad", max_sampled=args.max_sampled,
                      random_state=args.seed)

    for epoch in range(1, args.epochs + 1):
        c0, w0 = time.process_time(), time.perf_counter()
        stats = fit_epoch(user_side, item_side, uf, itf, u_idx, i_idx, None, train, params, rng)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        rows.append(dict(dataset=name, model="recspark", epoch=epoch, cpu_s=cpu, wall_s=wall,
                         samples_per_cpu_s=n / cpu, n_updates=stats.n_updates))
        if lfm is not None:
            c0, w0 = time.process_time(), time.perf_counter()
            lfm.fit_partial(coo, epochs=1, num_threads=args.threads)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            rows.append(dict(dataset=name, model="lightfm", epoch=epoch, cpu_s=cpu, wall_s=wall,
                             samples_per_cpu_s=n / cpu, n_updates=None))
        log.info("%s epoch %d done", name, epoch)

    quality = {}
    u_rep, u_bias = representations(uf, user_side)
    i_rep, i_bias = representations(itf, item_side)
    quality["recspark"] = precision_at_k(u_rep, u_bias, i_rep, i_bias, train, test)
    if lfm is not None:
        ub, ur = lfm.get_user_representations()
        ib, ir = lfm.get_item_representations()
        quality["lightfm"] = precision_at_k(ur, ub, ir, ib, train, test)
    for row in rows:
        row["precision_at_5"] = quality[row["model"]] if row["epoch"] == args.epochs else None
    return rows, n


def print_table(rows):
    header = f"{'dataset':<10} {'model':<9} {'ep':>3} {'cpu s':>7} {'wall s':>7} " \
             f"{'samples/cpu-s':>14} {'updates':>9} {'p@5':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        upd = "" if r["n_updates"] is None else str(r["n_updates"])
        p5 = "" if r["precision_at_5"] is None else f"{r['precision_at_5']:.3f}"
        print(f"{r['dataset']:<10} {r['model']:<9} {r['epoch']:>3} {r['cpu_s']:>7.2f} "
              f"{r['wall_s']:>7.2f} {r['samples_per_cpu_s']:>14,.0f} {upd:>9} {p5:>6}")


def print_summary(rows, repeats):
    """Medians over epochs and repeats (speed) and over repeats (final p@5)."""
    print(f"\nmedians over {repeats} repeat(s)")
    header = f"{'dataset':<10} {'model':<9} {'samples/cpu-s':>14} {'p@5':>6}  {'p@5 per repeat'}"
    print(header)
    print("-" * len(header))
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows if r["dataset"] == dataset):
            sel = [r for r in rows if r["dataset"] == dataset and r["model"] == model]
            speed = float(np.median([r["samples_per_cpu_s"] for r in sel]))
            p5 = [r["precision_at_5"] for r in sel if r["precision_at_5"] is not None]
            print(f"{dataset:<10} {model:<9} {speed:>14,.0f} {float(np.median(p5)):>6.3f}  "
                  + " ".join(f"{v:.3f}" for v in p5))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loss", choices=["warp", "bpr", "warp-kos"], default="warp")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--components", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--max-sampled", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for both (recspark num_threads, LightFM num_threads); 1: one core each")
    parser.add_argument("--n-users", type=int, default=50_000)
    parser.add_argument("--n-items", type=int, default=20_000)
    parser.add_argument("--n-interactions", type=int, default=2_200_000,
                        help="draws before de-duplication")
    parser.add_argument("--ml100k", type=Path, default=DEFAULT_ML100K)
    parser.add_argument("--datasets", default="synthetic,ml100k")
    parser.add_argument("--no-lightfm", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run everything this many times (seeds seed, seed+1, ...) and "
                             "print medians; the machine is shared, so use >= 3")
    parser.add_argument("--json", type=Path, help="write the rows here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    rows = []
    log.info("kernel first call (compile or cache load): %.2fs", warm_up(args.loss))
    base_seed = args.seed
    for repeat in range(args.repeats):
        # The data set stays fixed; the model seed (init, shuffles, draws) varies.
        args.seed = base_seed + repeat
        for name in args.datasets.split(","):
            if name == "synthetic":
                data = synthetic(args.n_users, args.n_items, args.n_interactions, seed=base_seed)
            elif name == "ml100k":
                if not args.ml100k.is_file():
                    log.warning("ml100k: %s not found; skipping", args.ml100k)
                    continue
                data = movielens(args.ml100k)
            else:
                log.error("unknown dataset %r (expected synthetic, ml100k)", name)
                return 2
            dataset_rows, _ = run_dataset(name, *data, args)
            for row in dataset_rows:
                row["repeat"] = repeat
            rows.extend(dataset_rows)
    args.seed = base_seed
    if args.repeats == 1:
        print_table(rows)
    print_summary(rows, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
