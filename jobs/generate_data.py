"""Generate the built-in synthetic dataset (interactions + item tags) as Parquet.

    ./spark-submit.sh --master 'local[*]' jobs/generate_data.py --conf conf/generate.yaml \
        --set output=data/synthetic-2m --set synthetic.n_interactions=2000000

Exit codes: 0 ok, 2 invalid config, 1 unexpected.
"""

from __future__ import annotations

import logging
import sys

from pyspark.sql import SparkSession

from recspark.cli import run_job
from recspark.config import GenerateConfig
from recspark.data.synthetic import generate

log = logging.getLogger("recspark.jobs.generate_data")


def _generate(spark: SparkSession, conf: GenerateConfig) -> None:
    counts = generate(spark, conf.synthetic, conf.output)
    log.info("wrote %s under %s", counts, conf.output)


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, __doc__.splitlines()[0], GenerateConfig, _generate)


if __name__ == "__main__":
    sys.exit(main())
