"""Train and evaluate recommenders on an interactions Parquet dataset, logging to MLflow.

    ./spark-submit.sh --master 'local[*]' jobs/train.py --conf conf/demo.yaml [--set als.rank=64 ...]

Exit codes: 0 ok, 2 invalid config, 3 invalid input data, 4 model fit failed, 143 stopped by SIGTERM,
1 unexpected.
"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession

from recspark.cli import run_job
from recspark.config import TrainConfig
from recspark.runs.report import format_summary
from recspark.pipeline.train import run_training


def _train(spark: SparkSession, conf: TrainConfig) -> None:
    summary = run_training(spark, conf)
    print(format_summary(summary, conf.evaluation.ks))


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, __doc__.splitlines()[0], TrainConfig, _train)


if __name__ == "__main__":
    sys.exit(main())
