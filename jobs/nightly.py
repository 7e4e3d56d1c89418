"""Nightly retrain: train on a dated snapshot, gate it against the MLflow champion, publish if it passes.

    ./spark-submit.sh --master yarn jobs/nightly.py --conf conf/nightly.yaml --date 2026-11-22 [--set key=value ...]

``--date`` (default: today, UTC) replaces ``{date}`` in ``data.path``; it is ``--set date=...``.
Exit codes: 0 promoted, 5 candidate rejected (champion and recommendations unchanged), 2 invalid
config, 3 invalid input data, 4 model fit failed, 143 stopped by SIGTERM (MLflow run KILLED), 1 unexpected.
See docs/nightly.md.
"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession

from recspark.cli import run_job
from recspark.config import NightlyConfig
from recspark.pipeline.nightly import run_nightly


def _nightly(spark: SparkSession, conf: NightlyConfig) -> None:
    summary = run_nightly(spark, conf)
    print(f"nightly {summary.date}: {summary.reason}; version {summary.model_version} is the champion, "
          f"recommendations under {summary.run_dir}/recommendations")


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, __doc__.splitlines()[0], NightlyConfig, _nightly,
                   flags={"--date": ("date", "snapshot date YYYY-MM-DD (default: today, UTC)")})


if __name__ == "__main__":
    sys.exit(main())
