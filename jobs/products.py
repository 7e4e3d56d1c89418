"""Write embedding products (similar items, tag->items, tag suggestions, similar tags, explanations) of a trained model.

    ./spark-submit.sh --master 'local[*]' jobs/products.py --conf conf/products.yaml \
        [--set source.model=als --set k=20 --set 'products=[similar_items, explanations]' ...]

Exit codes: 0 ok, 2 invalid config, 3 invalid input (no such run/model), 143 stopped by SIGTERM, 1 unexpected.
"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession

from recspark.cli import run_job
from recspark.config import ProductsConfig
from recspark.products.job import format_products_summary, run_products


def _products(spark: SparkSession, conf: ProductsConfig) -> None:
    print(format_products_summary(run_products(spark, conf)))


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, __doc__.splitlines()[0], ProductsConfig, _products)


if __name__ == "__main__":
    sys.exit(main())
