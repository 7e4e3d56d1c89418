"""Wall-clock timing of pipeline stages (logged as ``time_<stage>_s`` metrics).

The timer also knows which stage is running, so a run that fails or is killed
can say where (the MLflow run's ``recspark.failed_stage`` tag), and names the
Spark jobs a stage starts after it (the Spark UI reads as the pipeline).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from pyspark.sql import SparkSession

from recspark.session import job_description

log = logging.getLogger(__name__)


class StageTimer:
    """Accumulates seconds per named stage, in the order stages first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: list[str] = []  # stages started and not yet ended, outermost first
        self._last: str | None = None  # the stage that ended last
        self._raised: tuple[BaseException, str] | None = None  # the last exception that left a stage, and it

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        # Open before logging: a scheduler (or a test) reacting to the "started" line with a signal must
        # find the run in this stage, not "after" the previous one.
        self._open.append(name)
        try:
            log.info("stage %s: started", name)
            spark = SparkSession.getActiveSession()
            with job_description(spark, name) if spark is not None else contextlib.nullcontext():
                yield
        except BaseException as err:
            if self._raised is None or self._raised[0] is not err:  # keep the innermost stage it left
                self._raised = (err, name)
            raise
        finally:
            self._last = self._open.pop()
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            log.info("stage %s: %.1fs", name, elapsed)

    def current(self) -> str:
        """The innermost running stage; between stages ``after <last ended>``; before any, ``setup``."""
        if self._open:
            return self._open[-1]
        return f"after {self._last}" if self._last else "setup"

    def stage_of(self, err: BaseException) -> str:
        """The stage ``err`` (or the exception it was raised from) escaped; else :meth:`current`.

        Once ``err`` reaches the run's top the stages it left are closed, so the
        timer remembers which one it came out of.
        """
        seen: set[int] = set()
        cause: BaseException | None = err
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if self._raised is not None and self._raised[0] is cause:
                return self._raised[1]
            cause = cause.__cause__ or cause.__context__
        return self.current()

    def metrics(self) -> dict[str, float]:
        return {f"time_{name}_s": round(secs, 3) for name, secs in self.seconds.items()}
