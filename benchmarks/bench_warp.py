"""recspark WARP (``RankingFM`` on Spark) vs LightFM WARP: quality and speed on the same split.

For every dataset and seed, both models train on the *same* train split and are
scored by the *same* code (:func:`recspark.evaluation.ranking.evaluate`,
precision@5, train items excluded), next to the popularity baseline:

1. likes ``(user, item)`` -> Spark -> :func:`deduplicate` (binary) ->
   :func:`apply_min_counts` 5/5 -> id maps -> :func:`holdout_split` (20% of
   eligible users, 5 items each, ``seed``);
2. recspark: ``RankingFM(...).fit_indexed`` on ``local[2]`` with its default
   shard count (resolved values are in the JSON; ``synth-2m`` trains on 2
   shards, the small sets on 1, all epochs between evaluations in one Spark
   task) and ``--threads`` kernel threads per shard; per-epoch wall time and
   samples/s come from ``on_epoch``, and the whole fit's wall time (without
   the evaluations) divided by the epochs is reported too;
3. LightFM 1.17: ``fit_partial(epochs=1, num_threads=2)`` per epoch (``--lightfm-threads``), timed,
   on the binary train matrix; evaluated through a ``FactorScorer`` built
   from ``get_item_representations()`` (embeddings + item biases) and
   ``get_user_representations()`` (the user bias does not change a user's
   ranking, so it is dropped);
4. optionally ("best settings"), a small grid per model, selected on a
   validation split carved from train (``holdout_split`` again, seed
   ``seed + 1000``), then retrained on the full train split and scored on test.

Epoch times: recspark's first epoch also builds the user shards (one shuffle),
so the tables report the *median* epoch time, and the JSON keeps every epoch.
LightFM samples/s is train rows / epoch seconds (one positive per row per
epoch, as recspark counts them). The machine may be shared, so the load
average is recorded at start and end (and per dataset).

Datasets (``$RECSPARK_DATA_DIR``, else ``../shared/data`` next to the repo; a
missing one is skipped with a note): ``ml-100k`` and ``ml-latest-small``
(ratings >= 4), ``lastfm`` (hetrec2011-lastfm-2k, every played artist),
``epinions`` (ratings >= 4) and ``synth-2m`` (``SyntheticSpec(n_users=100_000,
n_items=20_000, n_interactions=2_000_000, seed=42)``, every row a like,
generated once under ``--cache-dir``, default ``/tmp/recspark-bench``).

LightFM is a benchmark-only dependency (never in ``install_requires``)::

    pip install --no-build-isolation lightfm   # 1.17

Run::

    python benchmarks/bench_warp.py --quick --datasets ml-100k      # smoke test, ~1 min
    python benchmarks/bench_warp.py                                  # everything, 3 seeds
    python benchmarks/bench_warp.py --search-datasets ml-100k synth-2m --json /tmp/warp.json
"""

from __future__ import annotations

import os

# One BLAS thread per process: Spark runs two Python workers on two cores, and
# LightFM's own OpenMP threads are set by ``num_threads``.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger("bench_warp")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "warp_vs_lightfm.json"
DATASETS = ("ml-100k", "ml-latest-small", "lastfm", "epinions", "synth-2m")
SYNTH_SPEC = {"n_users": 100_000, "n_items": 20_000, "n_interactions": 2_000_000, "seed": 42}
VALIDATION_SEED_OFFSET = 1000


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """One training configuration; ``strategy``/``n_shards``/``num_threads`` only apply to recspark,
    ``lightfm_threads`` only to LightFM (1 makes it deterministic)."""

    loss: str = "warp"  # or "bpr": the same loss for both libraries
    epochs: int = 10
    learning_rate: float = 0.05
    no_components: int = 64
    max_sampled: int = 10
    user_alpha: float = 0.0
    item_alpha: float = 0.0
    strategy: str = "hogwild"
    n_shards: int = 0  # 0: recspark's default (parallelism, >= 200k rows per shard)
    num_threads: int = 1  # recspark kernel threads per shard (1: deterministic)
    lightfm_threads: int = 2

    def label(self, model: str) -> str:
        text = f"{self.loss} ep={self.epochs} lr={self.learning_rate}"
        if model == "recspark":
            text += f" {self.strategy} shards={self.n_shards or 'auto'}"
            text += f" threads={self.num_threads}"
        return text


#: recspark distribution variants of the search: (strategy, n_shards).
VARIANTS = {"hogwild2": ("hogwild", 2), "stratified2": ("stratified", 2), "hogwild1": ("hogwild", 1)}


@dataclass(frozen=True)
class Grid:
    """The best-settings search space (kept small: every point is a full fit)."""

    learning_rates: tuple[float, ...] = (0.02, 0.05)
    checkpoints: tuple[int, ...] = (10, 30)  # epochs at which a run is validated
    variants: tuple[str, ...] = tuple(VARIANTS)  # recspark only


def search_grid(base: Settings, model: str, grid: Grid) -> list[tuple[Settings, tuple[int, ...]]]:
    """(settings trained for the largest checkpoint, epochs at which to validate) per grid point.

    Both models: each learning rate, validated at each checkpoint epoch of one
    run. recspark also: each distribution variant (hogwild or stratified on 2
    shards, or 1 shard: no merging at all).
    """
    variants: list[dict] = [{}]
    if model == "recspark":
        variants = [{"strategy": VARIANTS[v][0], "n_shards": VARIANTS[v][1]} for v in grid.variants]
    return [(replace(base, epochs=max(grid.checkpoints), learning_rate=lr, **variant), grid.checkpoints)
            for lr in grid.learning_rates for variant in variants]


# --------------------------------------------------------------------------- data


def data_dir() -> Path:
    env = os.environ.get("RECSPARK_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load_likes(name: str, root: Path, spark, cache_dir: Path) -> tuple[pd.DataFrame | None, str]:
    """``(user_id, item_id)`` string pairs (``None`` plus a note when the files are missing)."""
    if name == "ml-100k":
        path = root / "ml-100k" / "u.data"
        if not path.exists():
            return None, f"missing {path}"
        df = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "ts"])
        return df.loc[df.rating >= 4, ["user", "item"]], "ratings >= 4"
    if name == "ml-latest-small":
        path = root / "ml-latest-small" / "ratings.csv"
        if not path.exists():
            return None, f"missing {path}"
        df = pd.read_csv(path)
        return df.loc[df.rating >= 4, ["userId", "movieId"]].set_axis(["user", "item"], axis=1), "ratings >= 4"
    if name == "lastfm":
        path = root / "hetrec2011-lastfm-2k" / "user_artists.dat"
        if not path.exists():
            return None, f"missing {path}"
        df = pd.read_csv(path, sep="\t")
        return df.loc[df.weight > 0, ["userID", "artistID"]].set_axis(["user", "item"], axis=1), "plays > 0"
    if name == "epinions":
        path = root / "epinions-tang2012" / "rating.mat"
        if not path.exists():
            return None, f"missing {path}"
        from scipy.io import loadmat

        rating = loadmat(path)["rating"]
        df = pd.DataFrame(rating[:, [0, 1, 3]], columns=["user", "item", "rating"])
        return df.loc[df.rating >= 4, ["user", "item"]], "ratings >= 4"
    if name == "synth-2m":
        from recspark.config import SyntheticSpec
        from recspark.data.synthetic import generate

        out = cache_dir / "synth-2m"
        if not (out / "interactions" / "_SUCCESS").exists():
            log.info("generating %s under %s (once)", SYNTH_SPEC, out)
            generate(spark, SyntheticSpec(**SYNTH_SPEC), str(out))
        return spark.read.parquet(str(out / "interactions")).select("user_id", "item_id"), (
            f"SyntheticSpec({SYNTH_SPEC}), every row a like")
    raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")


def prepare(spark, likes) -> tuple:
    """Likes -> dedupe (binary) -> 5/5 thresholds -> id maps; returns the cached indexed frame and sizes."""
    from pyspark.sql import functions as F

    from recspark.data.columns import ITEM_ID, USER_ID, WEIGHT
    from recspark.data.filtering import apply_min_counts, deduplicate
    from recspark.data.indexing import apply_id_maps, build_id_map, map_size

    if isinstance(likes, pd.DataFrame):
        pdf = pd.DataFrame({USER_ID: likes.iloc[:, 0].astype(str), ITEM_ID: likes.iloc[:, 1].astype(str)})
        df = spark.createDataFrame(pdf, f"{USER_ID} string, {ITEM_ID} string")
    else:
        df = likes.select(F.col(USER_ID).cast("string"), F.col(ITEM_ID).cast("string"))
    df = deduplicate(df.withColumn(WEIGHT, F.lit(1.0)), "binary")
    filtered, passes = apply_min_counts(df, min_user_interactions=5, min_item_interactions=5)
    user_map = build_id_map(filtered, USER_ID, "user_idx").cache()
    item_map = build_id_map(filtered, ITEM_ID, "item_idx").cache()
    indexed = apply_id_maps(filtered, user_map, item_map).select("user_idx", "item_idx", WEIGHT).cache()
    last = passes[-1]
    info = {"raw_likes": passes[0].rows, "rows": last.rows, "users": last.users, "items": last.items,
            "n_users": map_size(user_map), "n_items": map_size(item_map)}
    return indexed, user_map, item_map, info


def split(df, seed: int):
    from recspark.data.split import holdout_split

    result = holdout_split(df, test_user_fraction=0.2, k=5, seed=seed)
    train, test = result.train.cache(), result.test.cache()
    return train, test, {"train_rows": train.count(), "test_rows": test.count(),
                         "test_users": test.select("user_idx").distinct().count()}


# --------------------------------------------------------------------------- models


def p_at_5(scorer, train, test) -> float:
    from recspark.evaluation.ranking import evaluate

    return float(evaluate(scorer, train, test, ks=(5,), exclude_train=True)["precision_at_5"])


def run_recspark(spark, train, maps, n_users, n_items, settings: Settings, seed: int,
                 evals: dict[int, tuple]) -> dict:
    """Fit RankingFM; at each epoch in ``evals`` score p@5 on ``(eval_train, eval_test)``."""
    from recspark.models.scoring import FactorScorer
    from recspark.models.warp.estimator import RankingFM

    epochs, scores, eval_seconds = [], {}, [0.0]

    def on_epoch(epoch, stats, state):
        epochs.append(stats)
        if epoch in evals and state is not None:
            started = time.perf_counter()
            reps, biases = state.item_representations()
            scorer = FactorScorer(reps, state.user_factors(spark), item_bias=biases)
            scores[epoch] = p_at_5(scorer, *evals[epoch])
            scorer.unpersist()
            eval_seconds[0] += time.perf_counter() - started
            log.info("  recspark %s epoch %d: p@5 %.4f", settings.label("recspark"), epoch, scores[epoch])

    estimator = RankingFM(loss=settings.loss, noComponents=settings.no_components, learningRate=settings.learning_rate,
                          learningSchedule="adagrad", maxSampled=settings.max_sampled,
                          userAlpha=settings.user_alpha, itemAlpha=settings.item_alpha, maxIter=settings.epochs,
                          numShards=settings.n_shards, strategy=settings.strategy,
                          numThreads=settings.num_threads, seed=seed)
    start = time.perf_counter()
    model = estimator.fit_indexed(train, *maps, n_users=n_users, n_items=n_items, on_epoch=on_epoch,
                                  state_every=math.gcd(*evals) if evals else 0)
    total = time.perf_counter() - start
    model.state.unpersist()
    seconds = [e["epoch_seconds"] for e in epochs]
    return {"n_shards": model.getOrDefault("numShards"), "num_threads": settings.num_threads,
            "fit_seconds_per_epoch": (total - eval_seconds[0]) / settings.epochs,
            "kernel_cpu_seconds": [e["kernel_cpu_seconds"] for e in epochs],
            "p_at_5": scores, "epoch_seconds": seconds, "samples_per_s": [e["samples_per_s"] for e in epochs],
            "median_epoch_seconds": statistics.median(seconds),
            "median_samples_per_s": statistics.median(e["samples_per_s"] for e in epochs),
            "fit_seconds_incl_evals": total}


def run_lightfm(spark, interactions: sp.coo_matrix, settings: Settings, seed: int, evals: dict[int, tuple]) -> dict:
    """LightFM one epoch at a time (``num_threads`` from the settings), scored like recspark at ``evals``."""
    from lightfm import LightFM

    from recspark.models.scoring import FactorScorer

    model = LightFM(no_components=settings.no_components, learning_schedule="adagrad", loss=settings.loss,
                    learning_rate=settings.learning_rate, item_alpha=settings.item_alpha,
                    user_alpha=settings.user_alpha, max_sampled=settings.max_sampled, random_state=seed)
    seconds, cpu, scores = [], [], {}
    for epoch in range(1, settings.epochs + 1):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        model.fit_partial(interactions, epochs=1, num_threads=settings.lightfm_threads)
        seconds.append(time.perf_counter() - wall0)
        cpu.append(time.process_time() - cpu0)
        if epoch in evals:
            item_bias, item_emb = model.get_item_representations()
            _, user_emb = model.get_user_representations()
            users = pd.DataFrame({"user_idx": np.arange(user_emb.shape[0], dtype=np.int32),
                                  "features": list(user_emb.astype(np.float32))})
            user_df = spark.createDataFrame(users, "user_idx int, features array<float>")
            scorer = FactorScorer(item_emb, user_df, item_bias=item_bias)
            scores[epoch] = p_at_5(scorer, *evals[epoch])
            scorer.unpersist()
            log.info("  lightfm  %s epoch %d: p@5 %.4f", settings.label("lightfm"), epoch, scores[epoch])
    rate = [interactions.nnz / s for s in seconds]
    return {"p_at_5": scores, "epoch_seconds": seconds, "epoch_cpu_seconds": cpu, "samples_per_s": rate,
            "median_epoch_seconds": statistics.median(seconds), "median_samples_per_s": statistics.median(rate)}


def train_matrix(train, n_users: int, n_items: int) -> sp.coo_matrix:
    pdf = train.select("user_idx", "item_idx").toPandas()
    data = np.ones(len(pdf), dtype=np.float32)
    return sp.coo_matrix((data, (pdf.user_idx.to_numpy(), pdf.item_idx.to_numpy())), shape=(n_users, n_items))


def fit(model: str, spark, train, matrix_of, maps, sizes, settings, seed, evals) -> dict:
    if model == "recspark":
        return run_recspark(spark, train, maps, *sizes, settings, seed, evals)
    return run_lightfm(spark, matrix_of(train), settings, seed, evals)


# --------------------------------------------------------------------------- per dataset


def run_dataset(spark, name: str, args, base: Settings, do_search: bool, cache_dir: Path) -> dict:
    from recspark.models.baselines import PopularityScorer

    likes, note = load_likes(name, data_dir(), spark, cache_dir)
    if likes is None:
        log.warning("skipping %s: %s", name, note)
        return {"skipped": note}
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    indexed, user_map, item_map, info = prepare(spark, likes)
    sizes = (info["n_users"], info["n_items"])
    log.info("%s: %s", name, info)
    matrices: dict[int, sp.coo_matrix] = {}

    def matrix_of(frame):
        key = id(frame)
        if key not in matrices:
            matrices.clear()
            matrices[key] = train_matrix(frame, *sizes)
        return matrices[key]

    seeds = []
    for seed in range(args.seeds):
        train, test, counts = split(indexed, seed)
        log.info("%s seed %d: %s", name, seed, counts)
        pop = PopularityScorer.fit(train, sizes[1])
        record = {"seed": seed, **counts, "popularity_p_at_5": p_at_5(pop, train, test)}
        pop.unpersist()
        evals = {base.epochs: (train, test)}
        for model in ("recspark", "lightfm"):
            out = fit(model, spark, train, matrix_of, (user_map, item_map), sizes, base, seed, evals)
            out["p_at_5"] = out["p_at_5"][base.epochs]
            record[model] = out
            log.info("%s seed %d %s: p@5 %.4f, median %.2f s/epoch, %.0f samples/s", name, seed, model,
                     out["p_at_5"], out["median_epoch_seconds"], out["median_samples_per_s"])
        if do_search and seed < args.search_seeds:
            record["search"] = search(spark, train, test, matrix_of, (user_map, item_map), sizes, base, seed,
                                      record, args.grid)
        seeds.append(record)
        train.unpersist()
        test.unpersist()
    indexed.unpersist()
    return {"note": note, **info, "seeds": seeds, "seconds": time.perf_counter() - t0,
            "loadavg_start": load_start, "loadavg_end": os.getloadavg()}


def search(spark, train, test, matrix_of, maps, sizes, base: Settings, seed: int, same_hp: dict,
           grid: Grid) -> dict:
    """Grid on a validation split carved from ``train``; best per model retrained on ``train``, scored on test."""
    val_train, val_test, counts = split(train, seed + VALIDATION_SEED_OFFSET)
    log.info("  validation split (seed %d): %s", seed + VALIDATION_SEED_OFFSET, counts)
    out = {"validation": counts}
    for model in ("recspark", "lightfm"):
        trials = []
        for settings, checkpoints in search_grid(base, model, grid):
            res = fit(model, spark, val_train, matrix_of, maps, sizes, settings, seed,
                      {e: (val_train, val_test) for e in checkpoints})
            for epochs, score in res["p_at_5"].items():
                trials.append({"settings": asdict(replace(settings, epochs=epochs)), "val_p_at_5": score,
                               "median_epoch_seconds": res["median_epoch_seconds"]})
        best = max(trials, key=lambda t: t["val_p_at_5"])
        best_settings = Settings(**best["settings"])
        if model == "lightfm":
            best_settings = replace(best_settings, strategy=base.strategy, n_shards=base.n_shards,
                                    num_threads=base.num_threads)
        if best_settings == base:
            test_score = same_hp[model]["p_at_5"]  # the same-hyperparameter run is this fit
        else:
            res = fit(model, spark, train, matrix_of, maps, sizes, best_settings, seed,
                      {best_settings.epochs: (train, test)})
            test_score = res["p_at_5"][best_settings.epochs]
        log.info("  best %s: %s (val p@5 %.4f) -> test p@5 %.4f", model, best_settings.label(model),
                 best["val_p_at_5"], test_score)
        out[model] = {"trials": trials, "best": asdict(best_settings), "best_label": best_settings.label(model),
                      "val_p_at_5": best["val_p_at_5"], "test_p_at_5": test_score}
    val_train.unpersist()
    val_test.unpersist()
    return out


# --------------------------------------------------------------------------- report


def mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(results: dict) -> dict:
    summary = {}
    for name, res in results.items():
        if "seeds" not in res:
            continue
        seeds = res["seeds"]
        row = {"n_seeds": len(seeds), "popularity_p_at_5": mean_sd([s["popularity_p_at_5"] for s in seeds])}
        for model in ("recspark", "lightfm"):
            row[f"{model}_p_at_5"] = mean_sd([s[model]["p_at_5"] for s in seeds])
            row[f"{model}_epoch_seconds"] = statistics.median(s[model]["median_epoch_seconds"] for s in seeds)
            row[f"{model}_samples_per_s"] = statistics.median(s[model]["median_samples_per_s"] for s in seeds)
        row["quality_ratio"] = row["recspark_p_at_5"][0] / row["lightfm_p_at_5"][0]
        diffs = [s["recspark"]["p_at_5"] - s["lightfm"]["p_at_5"] for s in seeds]
        row["paired_diff"] = (float(np.mean(diffs)),
                              float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0)
        row["time_ratio"] = row["recspark_epoch_seconds"] / row["lightfm_epoch_seconds"]
        row["recspark_fit_seconds_per_epoch"] = statistics.median(s["recspark"]["fit_seconds_per_epoch"]
                                                                  for s in seeds)
        row["fit_ratio"] = row["recspark_fit_seconds_per_epoch"] / row["lightfm_epoch_seconds"]
        searched = [s["search"] for s in seeds if "search" in s]
        if searched:
            row["search"] = {"n_seeds": len(searched)}
            for model in ("recspark", "lightfm"):
                row["search"][model] = {"test_p_at_5": mean_sd([s[model]["test_p_at_5"] for s in searched]),
                                        "best": [s[model]["best_label"] for s in searched]}
            row["search"]["quality_ratio"] = (row["search"]["recspark"]["test_p_at_5"][0]
                                              / row["search"]["lightfm"]["test_p_at_5"][0])
        summary[name] = row
    return summary


def print_tables(summary: dict, results: dict, meta: dict) -> None:
    print(f"\nload average (1/5/15 min): start {fmt_load(meta['loadavg_start'])}, "
          f"end {fmt_load(meta['loadavg_end'])}; {meta['cpu_count']} CPUs")
    print(f"same hyperparameters: {meta['same_hyperparameters']}")
    header = (f"{'dataset':<16} {'seeds':>5} {'pop p@5':>7} {'recspark p@5':>15} {'LightFM p@5':>15} "
              f"{'rs - lfm (se)':>16} | {'rs s/ep':>7} {'rs fit/ep':>9} {'lfm s/ep':>8} {'t ratio':>7} {'fit ratio':>9}")
    print(header)
    print("-" * len(header))
    for name, res in results.items():
        if "skipped" in res:
            print(f"{name:<16} skipped: {res['skipped']}")
            continue
        r = summary[name]
        print(f"{name:<16} {r['n_seeds']:>5} {r['popularity_p_at_5'][0]:>7.4f} "
              f"{pm(r['recspark_p_at_5']):>15} {pm(r['lightfm_p_at_5']):>15} "
              f"{r['paired_diff'][0]:>+8.4f} ({r['paired_diff'][1]:.4f}) | "
              f"{r['recspark_epoch_seconds']:>7.2f} {r['recspark_fit_seconds_per_epoch']:>9.2f} "
              f"{r['lightfm_epoch_seconds']:>8.2f} {r['time_ratio']:>7.2f} {r['fit_ratio']:>9.2f}")
    print("rs - lfm = paired p@5 difference over seeds (standard error); t ratio = recspark median epoch / "
          "LightFM median epoch (target <= 1 on synth-2m); fit ratio = recspark whole fit (evaluations "
          "excluded) / epochs / LightFM median epoch (target <= 3 on the small sets).")
    searched = {n: r["search"] for n, r in summary.items() if "search" in r}
    if searched:
        print("\nbest settings (grid selected on a validation split carved from train, scored on test)")
        header = f"{'dataset':<16} {'seeds':>5} {'recspark p@5':>15} {'LightFM p@5':>15} {'ratio':>5}  best settings"
        print(header)
        print("-" * 110)
        for name, s in searched.items():
            print(f"{name:<16} {s['n_seeds']:>5} {pm(s['recspark']['test_p_at_5']):>15} "
                  f"{pm(s['lightfm']['test_p_at_5']):>15} {s['quality_ratio']:>5.2f}  "
                  f"recspark: {'; '.join(s['recspark']['best'])} | LightFM: {'; '.join(s['lightfm']['best'])}")


def pm(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.4f}±{ms[1]:.4f}"


def fmt_load(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--loss", choices=["warp", "bpr"], default="warp", help="both libraries' loss (default warp)")
    parser.add_argument("--epochs", type=int, default=None, help="same-hyperparameter epochs (default 10, quick 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="recspark kernel threads per shard (default 1: deterministic)")
    parser.add_argument("--shards", type=int, default=0,
                        help="recspark shards for the same-hyperparameter runs (default 0: its automatic choice)")
    parser.add_argument("--lightfm-threads", type=int, default=2,
                        help="LightFM num_threads (default 2, the cores recspark gets; 1 is deterministic)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, no search (smoke test)")
    parser.add_argument("--no-search", action="store_true", help="skip the best-settings search")
    parser.add_argument("--search-datasets", nargs="+", default=None, choices=DATASETS,
                        help="run the search only on these (default: all selected)")
    parser.add_argument("--search-seeds", type=int, default=None,
                        help="run the search on the first N seeds only (default: all)")
    parser.add_argument("--search-epochs", nargs="+", type=int, default=list(Grid.checkpoints),
                        help="epochs at which each search run is validated (default 10 30)")
    parser.add_argument("--search-lrs", nargs="+", type=float, default=list(Grid.learning_rates))
    parser.add_argument("--search-variants", nargs="+", default=list(Grid.variants), choices=VARIANTS,
                        help="recspark strategy/shards variants in the search (default all)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/recspark-bench"),
                        help="where the synthetic set is generated (outside the repo)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1 if args.seeds == 3 else args.seeds
        args.no_search = True
    args.epochs = args.epochs or (3 if args.quick else 10)
    args.search_seeds = args.seeds if args.search_seeds is None else args.search_seeds
    args.grid = Grid(tuple(args.search_lrs), tuple(sorted(args.search_epochs)), tuple(args.search_variants))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("py4j", "recspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import lightfm
    except ImportError:
        log.error("LightFM is not installed: pip install --no-build-isolation lightfm  (benchmark-only)")
        return 2
    from recspark.session import build_session

    loadavg_start = os.getloadavg()
    started = time.time()
    log.info("load average at start: %s", fmt_load(loadavg_start))
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    spark = build_session("local[2]", "bench_warp", conf={
        "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "4g",
        "spark.local.dir": str(args.cache_dir / "spark-local")})
    base = Settings(loss=args.loss, epochs=args.epochs, n_shards=args.shards, num_threads=args.threads,
                    lightfm_threads=args.lightfm_threads)
    search_sets = set(args.search_datasets or args.datasets)
    results = {}
    try:
        for name in args.datasets:
            results[name] = run_dataset(spark, name, args, base,
                                        not args.no_search and name in search_sets, args.cache_dir)
    finally:
        spark.stop()
    meta = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "seconds": time.time() - started, "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "lightfm": lightfm.__version__, "spark_master": "local[2]", "lightfm_threads": args.lightfm_threads,
            "same_hyperparameters": asdict(base), "split": {"test_user_fraction": 0.2, "k": 5, "min_counts": 5},
            "search_grid": {m: [g[0].label(m) + f" eval@{list(g[1])}" for g in search_grid(base, m, args.grid)]
                            for m in ("recspark", "lightfm")} if not args.no_search else None}
    summary = summarise(results)
    print_tables(summary, results, meta)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "summary": summary, "datasets": results}, indent=1,
                                    default=str))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
