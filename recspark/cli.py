"""What every job entrypoint shares: argument parsing, logging, and exit codes.

Jobs stay thin: they parse ``--conf``/``--set``, build the SparkSession, make one
library call, and map recspark's errors to documented exit codes so a scheduler
can tell a bad config from bad data from a diverged model.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import tempfile
import traceback
from collections.abc import Callable, Mapping
from typing import TypeVar

from pyspark.sql import SparkSession

from recspark.config import SparkConfig, load_config
from recspark.errors import (
    CandidateRejected,
    ConfigError,
    DataValidationError,
    JobTerminated,
    ModelFitError,
    raised_in_task,
    stopped_by_signal,
)
from recspark.redact import redact
from recspark.session import build_session

log = logging.getLogger("recspark")

T = TypeVar("T")

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_MODEL = 4
EXIT_REJECTED = 5  # nightly: the candidate failed the quality gate
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended


def configure_logging() -> None:
    """One readable line per event on stderr; Spark's own logging stays at WARN."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _keep_traceback(trace: str) -> str:
    """Write ``trace`` (already redacted) to a file of its own in the temp folder; returns its path."""
    handle, path = tempfile.mkstemp(prefix="recspark-error-", suffix=".log")
    with os.fdopen(handle, "w") as out:
        out.write(trace + "\n")
    return path


def run_job(argv: list[str] | None, description: str, config_cls: type[T],
            body: Callable[[SparkSession, T], None], flags: Mapping[str, tuple[str, str]] | None = None) -> int:
    """Parse ``--conf PATH --set key=value ...``, run ``body(spark, conf)``, return an exit code.

    ``flags`` are a job's own options, each a shortcut for one config key:
    ``{"--date": ("date", "help")}`` makes ``--date D`` mean ``--set date=D``
    (listed by ``--help``; a later ``--set`` of the same key wins).

    Exit codes: 0 ok, 2 invalid config, 3 invalid data, 4 model fit failed,
    5 candidate rejected by the nightly quality gate, 143 stopped by SIGTERM (the MLflow run ended
    KILLED, nothing published), 1 anything unexpected (a bug: one paragraph on the console, the
    traceback in a file it names, or printed with ``--debug``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--conf", help="YAML config file (defaults apply to what it omits)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set als.rank=64 (repeatable)")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and exit (0 valid, 2 invalid) without starting Spark; "
                             "spark-submit.sh runs this before it launches the JVM")
    for flag, (key, text) in (flags or {}).items():
        parser.add_argument(flag, dest=f"flag:{key}", metavar=key.upper(), help=f"{text} (= --set {key}=...)")
    args = parser.parse_args(argv)
    shortcuts = [f"{key}={getattr(args, f'flag:{key}')}" for key, _ in (flags or {}).values()
                 if getattr(args, f"flag:{key}") is not None]
    args.set = shortcuts + args.set
    configure_logging()
    try:
        conf = load_config(args.conf, config_cls, overrides=args.set)
    except ConfigError as err:
        log.error("%s", redact(str(err)))
        return EXIT_CONFIG
    if args.check_config:
        return EXIT_OK
    spark_conf: SparkConfig = conf.spark  # type: ignore[attr-defined]
    spark = build_session(spark_conf.master, spark_conf.app_name, spark_conf.conf, spark_conf.checkpoint_dir)
    terminated = False
    try:
        try:
            body(spark, conf)
        except Exception as err:  # a recspark error raised inside a Spark task arrives wrapped
            raise (raised_in_task(err) or err) from err
    except ConfigError as err:
        log.error("%s", redact(str(err)))
        return EXIT_CONFIG
    except DataValidationError as err:
        log.error("invalid input data: %s", redact(str(err)))
        return EXIT_DATA
    except ModelFitError as err:
        log.error("model fit failed: %s", redact(str(err)))
        return EXIT_MODEL
    except CandidateRejected as err:
        log.error("candidate not promoted: %s", redact(str(err)))
        return EXIT_REJECTED
    except JobTerminated:
        terminated = True
        return _terminated()
    except Exception as err:  # noqa: BLE001 - a bug: one paragraph on the console, the traceback kept
        if stopped_by_signal(err):  # a cleanup failed while SIGTERM was unwinding the job: still a stop
            terminated = True
            log.warning("while stopping: %s: %s", type(err).__name__, redact(str(err)).strip()[:200])
            return _terminated()
        trace = redact(traceback.format_exc()).rstrip()
        if args.debug:
            log.error("job failed (unexpected error)\n%s", trace)
        else:
            kept = _keep_traceback(trace)
            first = redact(str(err)).strip().splitlines()
            log.error("job failed (unexpected error, exit 1): %s: %s. The traceback is in %s (or run with "
                      "--debug to print it).", type(err).__name__, first[0] if first else "", kept)
        return EXIT_UNEXPECTED
    finally:
        _stop(spark, terminated)
    return EXIT_OK


def _terminated() -> int:
    log.error("job stopped by SIGTERM (exit %d): its MLflow run ended KILLED in the stage named above; "
              "a run publishes only at its end, so rerunning it is safe", EXIT_TERMINATED)
    return EXIT_TERMINATED


def _stop(spark: SparkSession, terminated: bool) -> None:
    """Stop Spark. After SIGTERM a failure to stop (the signal cut a JVM call short, or the JVM got
    the signal too and is going away) must not turn exit 143 into a traceback."""
    try:
        spark.stop()
    except Exception as err:  # noqa: BLE001 - only swallowed when the job is being terminated
        if not terminated:
            raise
        log.warning("stopping Spark after SIGTERM: %s", redact(str(err)).strip().splitlines()[0])

