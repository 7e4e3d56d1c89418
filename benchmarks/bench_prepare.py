"""Data-stage benchmark: seconds and Spark jobs of ingest -> filter -> index -> split vs the ALS fit (issue 18.5).

    .venv/bin/python benchmarks/bench_prepare.py [--datasets ml-100k synthetic-200k synthetic-2m] [--json out.json]

Runs :func:`recspark.pipeline.prepare.prepare_matrix` as the training job does
(inside an MLflow run, sqlite store under ``--cache``) and then the ALS fit of
``bench_pipeline.py`` (rank 64, 10 iterations) on the matrix it wrote. Per
stage it reports wall seconds, the Spark jobs the stage started and the Spark
stages they ran (skipped ones excluded): jobs and stages are deterministic,
seconds depend on the machine's load (printed at start and end).

The target: data stages <= 1.0x the ALS fit on ml-100k, <= 0.5x on the 2M set.
ml-100k is read as likes (rating >= 4) from ``$RECSPARK_DATA_DIR`` or
``../shared/data``; generated sets are cached under ``--cache``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd

from bench_scale import parse_size  # beside this file: the benchmarks folder is the first import path
from recspark.config import AlsConfig, DataConfig, SplitConfig, SyntheticSpec
from recspark.data.synthetic import generate_if_missing
from recspark.models.fit import fit_als
from recspark.pipeline.prepare import prepare_matrix
from recspark.runs.timing import StageTimer
from recspark.session import build_session

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RECSPARK_DATA_DIR", REPO.parent / "shared" / "data"))
DATA_STAGES = ("ingest", "filter", "index", "split")


def _jobs(spark) -> dict[int, tuple[int, str | None]]:
    """Every job the status store holds: ``id -> (stages run, description)``."""
    listed = spark.sparkContext._jsc.sc().statusStore().jobsList(None)
    found = {}
    for i in range(listed.size()):
        job = listed.apply(i)
        description = job.description().get() if job.description().isDefined() else None
        found[job.jobId()] = (job.numCompletedStages(), description)
    return found


class CountingTimer(StageTimer):
    """A StageTimer that also records the Spark jobs (and their stages) each stage started."""

    def __init__(self, spark) -> None:
        super().__init__()
        self.spark = spark
        self.jobs: dict[str, int] = {}
        self.stages: dict[str, int] = {}
        self.descriptions: dict[str, dict[str, int]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        before = set(_jobs(self.spark))
        with super().stage(name):
            yield
        new = {k: v for k, v in _jobs(self.spark).items() if k not in before}
        self.jobs[name] = self.jobs.get(name, 0) + len(new)
        self.stages[name] = self.stages.get(name, 0) + sum(n for n, _ in new.values())
        per = self.descriptions.setdefault(name, {})
        for _, description in new.values():
            per[str(description)] = per.get(str(description), 0) + 1


def _ml100k(cache: Path) -> tuple[str, dict]:
    src = DATA / "ml-100k" / "u.data"
    if not src.exists():
        raise FileNotFoundError(src)
    out = cache / "ml-100k-likes.parquet"
    if not out.exists():
        df = pd.read_csv(src, sep="\t", names=["user", "item", "rating", "ts"])
        df[df.rating >= 4][["user", "item"]].to_parquet(out, index=False)
    return str(out), {"user_col": "user", "item_col": "item", "weight_col": None, "timestamp_col": None}


def _synthetic(spark, cache: Path, n: int) -> tuple[str, dict]:
    spec = SyntheticSpec(n_users=n // 20, n_items=max(n // 100, 2000), n_interactions=n, seed=42)
    root = cache / f"synthetic-{n}"
    generate_if_missing(spark, spec, str(root))
    return str(root / "interactions"), {"weight_col": "weight", "timestamp_col": None}


def run(spark, name: str, path: str, data_kw: dict, work: Path) -> dict:
    data = DataConfig(path=path, **data_kw)
    timer = CountingTimer(spark)
    with mlflow.start_run(run_name=name):
        prepared = prepare_matrix(spark, data, SplitConfig(), str(work / name), timer)
        with timer.stage("als_fit"):
            start = time.perf_counter()
            fit = fit_als(prepared.matrix.train, AlsConfig(rank=64, max_iter=10), prepared.matrix.n_items)
            fit_s = time.perf_counter() - start
        with fit:  # unpersists the factors
            pass
    data_s = sum(timer.seconds[s] for s in DATA_STAGES)
    return {
        "dataset": name, "rows_read": prepared.counts["rows_read"], "n_users": prepared.counts["n_users"],
        "n_items": prepared.counts["n_items"], "train_rows": prepared.matrix.train_rows,
        "threshold_passes": prepared.counts["threshold_passes"],
        "seconds": {s: round(timer.seconds[s], 2) for s in (*DATA_STAGES, "als_fit")},
        "jobs": {s: timer.jobs[s] for s in (*DATA_STAGES, "als_fit")},
        "stages": {s: timer.stages[s] for s in (*DATA_STAGES, "als_fit")},
        "jobs_by_description": {s: timer.descriptions[s] for s in DATA_STAGES},
        "data_s": round(data_s, 2), "als_fit_s": round(fit_s, 2), "ratio_data_to_fit": round(data_s / fit_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "synthetic-200k"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per dataset (the table shows each)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "recspark-bench-prepare"))
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    spark = build_session("local[*]", "recspark-bench-prepare",
                          {"spark.driver.memory": "4g", "spark.sql.shuffle.partitions": "8"},
                          checkpoint_dir=str(cache / "checkpoints"))
    mlflow.set_tracking_uri(f"sqlite:///{cache}/mlflow.db")
    mlflow.set_experiment("bench-prepare")
    load = {"start": os.getloadavg()}
    results = []
    for name in args.datasets:
        if name.startswith("synthetic-"):
            path, data_kw = _synthetic(spark, cache, parse_size(name.split("-", 1)[1]))
        else:
            path, data_kw = _ml100k(cache)
        for _ in range(args.repeat):
            results.append(run(spark, name, path, data_kw, cache / "runs"))
            print(json.dumps(results[-1]), flush=True)
    load["end"] = os.getloadavg()
    spark.stop()
    cols = (*DATA_STAGES, "als_fit")
    header = f"{'dataset':<16}{'rows':>10}" + "".join(f"{c:>14}" for c in cols) + f"{'data/fit':>10}"
    print("\n" + header + "\n" + "-" * len(header))
    print(f"{'':<26}" + "".join(f"{'s / jobs / stg':>14}" for _ in cols))
    for r in results:
        cells = "".join(f"{r['seconds'][c]:>6.1f} /{r['jobs'][c]:>3} /{r['stages'][c]:>3}" for c in cols)
        print(f"{r['dataset']:<16}{int(r['rows_read']):>10,}{cells}{r['ratio_data_to_fit']:>10.2f}")
    print(f"\nload average (1, 5, 15 min): start {load['start']}, end {load['end']}")
    for r in results:
        print(f"{r['dataset']} jobs: " + "; ".join(f"{s}: {d}" for s, d in r["jobs_by_description"].items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "load_average": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
