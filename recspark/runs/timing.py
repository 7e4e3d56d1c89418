"""Wall-clock timing of pipeline stages (logged as ``time_<stage>_s`` metrics)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)


class StageTimer:
    """Accumulates seconds per named stage, in the order stages first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("stage %s: started", name)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            log.info("stage %s: %.1fs", name, elapsed)

    def metrics(self) -> dict[str, float]:
        return {f"time_{name}_s": round(secs, 3) for name, secs in self.seconds.items()}
