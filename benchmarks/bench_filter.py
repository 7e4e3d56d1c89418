"""Ingest + filter (validate, deduplicate, threshold passes) alone on a Parquet folder, at any size.

    .venv/bin/python benchmarks/bench_filter.py /tmp/recspark-scale/20m/interactions [--repeat 2] [--json out.json]

The filter stage of the training job without the rest of it, for A/B runs of
the threshold code on the generated sets of ``bench_scale.py`` (its cache:
``/tmp/recspark-scale/<size>/interactions``; columns ``user_id``, ``item_id``,
``weight``, ``timestamp``). ``local[2]``, 8 shuffle partitions as in
``conf/demo.yaml``, a 10g driver (the executors are inside it). To time older
code, put an exported ``recspark`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from recspark.data.filtering import apply_min_counts, deduplicate
from recspark.data.ingest import read_interactions, validate_interactions
from recspark.session import build_session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="Parquet interactions (user_id, item_id, weight, timestamp)")
    parser.add_argument("--repeat", type=int, default=1, help="runs in the same process")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    spark = build_session("local[2]", "recspark-bench-filter",
                          {"spark.driver.memory": "10g", "spark.sql.shuffle.partitions": "8"})
    load = {"start": os.getloadavg()}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            start = time.perf_counter()
            raw = read_interactions(spark, args.path, user_col="user_id", item_col="item_id", weight_col="weight",
                                    timestamp_col="timestamp")
            clean, report = validate_interactions(raw, rejects_path=str(Path(tmp) / "rejects"))
            ingest_s = time.perf_counter() - start
            _, passes = apply_min_counts(deduplicate(clean))
            filter_s = time.perf_counter() - start - ingest_s
            results.append({"rows_read": report.rows_read, "passes": len(passes) - 1,
                            "rows_after": passes[-1].rows, "ingest_s": round(ingest_s, 1),
                            "filter_s": round(filter_s, 1)})
    load["end"] = os.getloadavg()
    spark.stop()
    print(f"\n{'rows read':>12}{'passes':>8}{'rows after':>12}{'ingest s':>10}{'filter s':>10}")
    for r in results:
        print(f"{r['rows_read']:>12,}{r['passes']:>8}{r['rows_after']:>12,}{r['ingest_s']:>10.1f}{r['filter_s']:>10.1f}")
    print(f"load average (1, 5, 15 min): start {load['start']}, end {load['end']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"path": args.path, "results": results, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
