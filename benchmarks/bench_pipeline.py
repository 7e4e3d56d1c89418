"""Pipeline benchmark: per-stage wall time and p@5 (ALS vs popularity) on real and generated data.

    .venv/bin/python benchmarks/bench_pipeline.py [--datasets synthetic-2m ml-100k ...] [--json out.json]

The target it checks: on the generated 2M-row set, everything that is not
training (ingest -> matrix, evaluation of all test users, recommendations for
all users, saving, MLflow logging) takes no longer than the ALS fit itself.
Generated data is cached under ``--cache`` (outside the repo); the public
datasets are read from ``$RECSPARK_DATA_DIR`` or ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench_scale import parse_size  # beside this file: the benchmarks folder is the first import path
from recspark.config import SyntheticSpec, TrainConfig, load_config
from recspark.data.synthetic import generate_if_missing
from recspark.pipeline.train import run_training
from recspark.session import build_session

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECSPARK_DATA_DIR", REPO.parent / "shared" / "data"))
TRAINING_STAGES = ("als_fit", "als_learning_curve")


def _likes_ml100k(tmp: Path) -> tuple[str, list[str]] | None:
    src = DATA / "ml-100k" / "u.data"
    if not src.exists():
        return None
    df = pd.read_csv(src, sep="\t", names=["user", "item", "rating", "ts"])
    df[df.rating >= 4][["user", "item"]].to_parquet(tmp / "ml-100k.parquet", index=False)
    return str(tmp / "ml-100k.parquet"), ["data.weight_col=null"]


def _likes_ml_latest_small(tmp: Path) -> tuple[str, list[str]] | None:
    src = DATA / "ml-latest-small" / "ratings.csv"
    if not src.exists():
        return None
    df = pd.read_csv(src)
    df[df.rating >= 4].rename(columns={"userId": "user", "movieId": "item"})[["user", "item"]].to_parquet(
        tmp / "ml-latest-small.parquet", index=False)
    return str(tmp / "ml-latest-small.parquet"), ["data.weight_col=null"]


def _plays_lastfm(tmp: Path) -> tuple[str, list[str]] | None:
    src = DATA / "hetrec2011-lastfm-2k" / "user_artists.dat"
    if not src.exists():
        return None
    df = pd.read_csv(src, sep="\t").rename(columns={"userID": "user", "artistID": "item", "weight": "plays"})
    df.to_parquet(tmp / "lastfm.parquet", index=False)
    return str(tmp / "lastfm.parquet"), ["data.weight_col=plays", "als.confidence=log1p"]


def _synthetic(spark, cache: Path, n: int) -> tuple[str, list[str]]:
    spec = SyntheticSpec(n_users=n // 20, n_items=max(n // 100, 2000), n_interactions=n, seed=42)
    root = cache / f"synthetic-{n}"
    generate_if_missing(spark, spec, str(root))
    return str(root / "interactions"), ["data.weight_col=weight", "data.timestamp_col=timestamp"]


def run(spark, name: str, path: str, overrides: list[str], work: Path) -> dict:
    conf = load_config(None, TrainConfig, [
        f"data.path={path}", "data.user_col=user_id" if name.startswith("synthetic") else "data.user_col=user",
        "data.item_col=item_id" if name.startswith("synthetic") else "data.item_col=item",
        "data.timestamp_col=null", f"output.dir={work}/{name}", f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db",
        "mlflow.experiment=bench-pipeline", f"mlflow.artifact_location={work}/mlruns", "als.rank=64", "als.max_iter=10", "als.learning_curve=[]",
        "warp.enabled=false", "spark.master=null", *overrides,
    ])
    start = time.perf_counter()
    summary = run_training(spark, conf)
    total = time.perf_counter() - start
    training = sum(summary.timings.get(s, 0.0) for s in TRAINING_STAGES)
    return {
        "dataset": name, "rows_read": summary.counts["rows_read"], "n_users": summary.counts["n_users"],
        "n_items": summary.counts["n_items"], "train_rows": summary.counts["train_rows"],
        "test_users": summary.counts["test_users"], "total_s": round(total, 1), "als_fit_s": round(training, 1),
        "non_training_s": round(total - training, 1), "ratio_non_training_to_fit": round((total - training) / training, 2),
        "stages_s": {k: round(v, 1) for k, v in summary.timings.items()},
        "als_p_at_5": round(summary.metrics["als"]["precision_at_5"], 4),
        "popularity_p_at_5": round(summary.metrics["popularity"]["precision_at_5"], 4),
        "random_p_at_5": round(summary.metrics["random"]["precision_at_5"], 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+",
                        default=["ml-100k", "ml-latest-small", "lastfm", "synthetic-2m"])
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "recspark-bench-pipeline"))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    spark = build_session("local[*]", "recspark-bench-pipeline",
                          {"spark.driver.memory": "8g", "spark.sql.shuffle.partitions": "8"},
                          checkpoint_dir=str(cache / "checkpoints"))
    loaders = {"ml-100k": _likes_ml100k, "ml-latest-small": _likes_ml_latest_small, "lastfm": _plays_lastfm}
    results, load = [], {"start": os.getloadavg()}
    for name in args.datasets:
        if name.startswith("synthetic-"):
            path, overrides = _synthetic(spark, cache, parse_size(name.split("-", 1)[1]))
        else:
            found = loaders[name](cache)
            if found is None:
                print(f"skip {name}: not found under {DATA}", file=sys.stderr)
                continue
            path, overrides = found
        results.append(run(spark, name, path, overrides, cache / "runs"))
        print(json.dumps(results[-1]), flush=True)
    load["end"] = os.getloadavg()
    spark.stop()
    header = f"{'dataset':<16}{'rows':>10}{'users':>8}{'items':>8}{'ALS fit s':>10}{'other s':>9}{'ratio':>7}" \
             f"{'p@5 ALS':>9}{'p@5 pop':>9}{'p@5 rnd':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        print(f"{r['dataset']:<16}{int(r['rows_read']):>10,}{int(r['n_users']):>8,}{int(r['n_items']):>8,}"
              f"{r['als_fit_s']:>10.1f}{r['non_training_s']:>9.1f}{r['ratio_non_training_to_fit']:>7.2f}"
              f"{r['als_p_at_5']:>9.4f}{r['popularity_p_at_5']:>9.4f}{r['random_p_at_5']:>9.4f}")
    print(f"\nload average (1, 5, 15 min): start {load['start']}, end {load['end']}; 'other' = everything but the ALS "
          "fit (ingest -> matrix, evaluation, recommendations, saving, MLflow)")
    for r in results:
        print(f"{r['dataset']}: " + ", ".join(f"{k} {v}s" for k, v in r["stages_s"].items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "load_average": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
