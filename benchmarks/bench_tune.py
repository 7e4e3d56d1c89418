"""Search benchmark: TPE vs random search at equal budget, and concurrent vs sequential trials.

    .venv/bin/python benchmarks/bench_tune.py [--rows 2000000] [--trials 16] [--seeds 2] [--json out.json]
    .venv/bin/python benchmarks/bench_tune.py --rows 20000 --trials 4 --seeds 1 --timing-trials 2   # smoke, minutes

Data: the generated set (``SyntheticSpec(n_users=rows/20, n_items=rows/100,
n_interactions=rows, seed=42)``; 2M rows is bench_warp's ``synth-2m``),
generated once under ``--cache-dir`` and run through the training job's data
path once (thresholds, index, holdout split). Every search then uses the same
matrix, the same validation split (carved from train) and the search space of
``--conf`` (default ``conf/tune.yaml``: WARP/BPR, 6 parameters).

1. **Quality**: for each seed, a random and a TPE search of ``--trials``
   trials (median pruning on, 2 trials at a time). Reported: the best
   validation p@5 after each trial (best so far, by trial number), averaged
   over seeds, and the refit's test p@5.
2. **Speed**: the same ``--timing-trials`` random trials (same seed, pruning
   off, so both runs train identical configurations) with ``tune.concurrency``
   1 and 2; wall time of the trials. The two trials share the executors
   through FAIR scheduler pools.

MLflow runs go to ``<cache-dir>/mlflow.db``, not the project's store.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

log = logging.getLogger("bench_tune")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "tune.json"
STRATEGIES = ("random", "tpe")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="generated interactions (default 2M)")
    parser.add_argument("--trials", type=int, default=16, help="trials per search (equal budget, default 16)")
    parser.add_argument("--seeds", type=int, default=2,
                        help="searches per strategy, seeds FIRST..FIRST+N-1 (default 2)")
    parser.add_argument("--first-seed", type=int, default=0, help="FIRST, to add seeds to an earlier run (default 0)")
    parser.add_argument("--timing-trials", type=int, default=6,
                        help="trials of the concurrent-vs-sequential comparison (0 skips it; default 6)")
    parser.add_argument("--conf", type=Path, default=REPO / "conf" / "tune.yaml", help="search space and base config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override, e.g. --set warp.epochs=8 (repeatable)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/recspark-bench"),
                        help="where the data, matrix and MLflow store live (outside the repo)")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    return parser.parse_args(argv)


def best_so_far(trials: list) -> list[float | None]:
    """Best validation score after each trial number (None until a trial completes)."""
    out: list[float | None] = []
    for trial in trials:
        previous = out[-1] if out else None
        value = trial.value
        out.append(previous if value is None else value if previous is None else max(previous, value))
    return out


def run_one(spark, conf, matrix_dir: str, scratch: str) -> dict:
    """One search on the prepared matrix, in its own MLflow run; what the tables need."""
    from recspark.data.matrix import read_matrix
    from recspark.runs.timing import StageTimer
    from recspark.tracking.mlflow_log import mlflow_run
    from recspark.tuning.search import search_matrix

    timer = StageTimer()
    tune = conf.tune
    name = f"bench-{tune.strategy}-seed{tune.seed}-c{tune.concurrency}"
    with mlflow_run(conf.mlflow, spark_version=spark.version, run_name=name) as run:
        result = search_matrix(spark, conf, read_matrix(spark, f"{matrix_dir}/matrix"), f"{matrix_dir}/id_maps",
                               scratch, run.info, timer)
    states = [t.state for t in result.trials]
    log.info("%s: best val %.4f, test %.4f, search %.0fs", name, result.best.value,
             result.test_metrics["precision_at_5"], timer.seconds["search"])
    return {"strategy": tune.strategy, "seed": tune.seed, "concurrency": tune.concurrency, "run_id": result.run_id,
            "search_seconds": timer.seconds["search"], "refit_seconds": timer.seconds["refit"],
            "best_so_far": best_so_far(result.trials), "best_val_p_at_5": result.best.value,
            "test_p_at_5": result.test_metrics["precision_at_5"], "best_params": result.best.params,
            "n_complete": states.count("COMPLETE"), "n_pruned": states.count("PRUNED"),
            "n_failed": states.count("FAILED"), "trial_seconds": [t.seconds for t in result.trials]}


def mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def mean_curve(runs: list[dict]) -> list[float | None]:
    """Best-so-far averaged over seeds, per trial number (None where any seed has no complete trial yet)."""
    curves = [r["best_so_far"] for r in runs]
    return [None if any(c[i] is None for c in curves) else statistics.mean(c[i] for c in curves)
            for i in range(min(map(len, curves)))]


def print_tables(quality: list[dict], timing: list[dict], meta: dict) -> None:
    print(f"\nSearch benchmark: {meta['rows']:,} generated rows, {meta['trials']} trials per search, "
          f"{meta['seeds']} seed(s); load {meta['loadavg_start']} -> {meta['loadavg_end']}")
    print("\n| strategy | best val p@5 | test p@5 (refit) | complete / pruned / failed | search s |")
    print("|---|---|---|---|---|")
    for strategy in STRATEGIES:
        runs = [r for r in quality if r["strategy"] == strategy]
        counts = " / ".join(str(sum(r[k] for r in runs)) for k in ("n_complete", "n_pruned", "n_failed"))
        print(f"| {strategy} | {mean_sd([r['best_val_p_at_5'] for r in runs])} | "
              f"{mean_sd([r['test_p_at_5'] for r in runs])} | {counts} | "
              f"{statistics.mean(r['search_seconds'] for r in runs):.0f} |")
    curves = {s: mean_curve([r for r in quality if r["strategy"] == s]) for s in STRATEGIES}
    print("\nBest validation p@5 so far, mean over seeds:\n")
    print("| trial | " + " | ".join(STRATEGIES) + " |")
    print("|---|" + "---|" * len(STRATEGIES))
    for i in range(max(map(len, curves.values()))):
        cells = [f"{c[i]:.4f}" if i < len(c) and c[i] is not None else "-" for c in curves.values()]
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    if timing:
        seq, conc = (next(r for r in timing if r["concurrency"] == c) for c in (1, 2))
        print(f"\nConcurrency: {meta['timing_trials']} identical random trials, pruning off: sequential "
              f"{seq['search_seconds']:.0f}s, 2 concurrent {conc['search_seconds']:.0f}s, "
              f"speed-up {seq['search_seconds'] / conc['search_seconds']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recspark.cli import configure_logging
    from recspark.config import TuneConfig, load_config, with_values
    from recspark.config import SyntheticSpec
    from recspark.data.synthetic import generate_if_missing
    from recspark.pipeline.prepare import prepare_matrix
    from recspark.runs.timing import StageTimer
    from recspark.session import build_session

    configure_logging()
    for noisy in ("recspark.evaluation", "recspark.models", "recspark.runs.timing", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root = args.cache_dir / f"tune-{args.rows}"
    overrides = [f"data.path={root}/data/interactions", "data.generate=null", f"output.dir={root}/out",
                 f"mlflow.tracking_uri=sqlite:///{args.cache_dir}/mlflow.db", f"mlflow.artifact_location={root}/mlruns",
                 "mlflow.experiment=bench-tune", f"tune.n_trials={args.trials}", "tune.timeout_minutes=null",
                 *args.set]
    conf = load_config(args.conf, TuneConfig, overrides)
    loadavg_start, started = os.getloadavg(), time.time()
    spark = build_session("local[2]", "bench_tune", conf={
        "spark.scheduler.mode": "FAIR", "spark.sql.shuffle.partitions": "4",
        "spark.driver.memory": args.driver_memory, "spark.local.dir": str(args.cache_dir / "spark-local")},
        checkpoint_dir=str(args.cache_dir / "checkpoints"))
    quality, timing = [], []
    try:
        spec = SyntheticSpec(n_users=max(args.rows // 20, 50), n_items=max(args.rows // 100, 100),
                             n_interactions=args.rows, seed=42)
        generate_if_missing(spark, spec, f"{root}/data")
        matrix_dir = f"{root}/out"
        if not (Path(matrix_dir) / "matrix" / "_metadata.json").exists():
            prepare_matrix(spark, conf.data, conf.split, matrix_dir, StageTimer())
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in STRATEGIES:
                run_conf = with_values(conf, {"tune.strategy": strategy, "tune.seed": seed, "tune.concurrency": 2})
                quality.append(run_one(spark, run_conf, matrix_dir, f"{root}/scratch"))
        for concurrency in (1, 2) if args.timing_trials else ():
            run_conf = with_values(conf, {"tune.strategy": "random", "tune.seed": 0, "tune.concurrency": concurrency,
                                          "tune.n_trials": args.timing_trials, "tune.pruning.enabled": False})
            timing.append(run_one(spark, run_conf, matrix_dir, f"{root}/scratch"))
    finally:
        spark.stop()
    meta = {"command": " ".join(["bench_tune.py", *(argv if argv is not None else sys.argv[1:])]),
            "rows": args.rows, "trials": args.trials, "seeds": args.seeds, "timing_trials": args.timing_trials,
            "space": [dataclasses.asdict(s) for s in conf.tune.space],
            "seconds": time.time() - started, "loadavg_start": [round(x, 1) for x in loadavg_start],
            "loadavg_end": [round(x, 1) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "spark_master": "local[2]"}
    print_tables(quality, timing, meta)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "quality": quality, "timing": timing}, indent=1, default=str))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
