"""Search hyperparameters on a validation split, refit the best and score it on test, logging to MLflow.

    ./spark-submit.sh --master 'local[*]' jobs/tune.py --conf conf/tune.yaml [--set tune.n_trials=40 ...]

Exit codes: 0 ok, 2 invalid config, 3 invalid input data, 4 no trial completed, 143 stopped by SIGTERM,
1 unexpected.
"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession

from recspark.cli import run_job
from recspark.config import TuneConfig
from recspark.redact import redact
from recspark.tuning.search import run_search


def _tune(spark: SparkSession, conf: TuneConfig) -> None:
    result = run_search(spark, conf)
    counts = {state: sum(t.state == state for t in result.trials) for state in ("COMPLETE", "PRUNED", "FAILED")}
    print(f"{len(result.trials)} trials ({', '.join(f'{n} {s.lower()}' for s, n in counts.items())}); "
          f"best trial {result.best.number}: val {result.metric}={result.best.value:.4f} {result.best.params}; "
          f"refit on train, test {result.metric}={result.test_metrics[result.metric]:.4f}; "
          f"MLflow run {result.run_id} ({redact(result.tracking_uri)}, experiment {result.experiment!r})")
    print(f"best config (jobs/train.py --conf): {result.outputs['best_config']}; "
          f"refit model: {result.outputs['best_model']}")


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, __doc__.splitlines()[0], TuneConfig, _tune)


if __name__ == "__main__":
    sys.exit(main())
