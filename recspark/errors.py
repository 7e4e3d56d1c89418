"""Project exceptions.

They subclass ``ValueError``/``RuntimeError`` so callers can catch broadly or
precisely; jobs map them to exit codes.
"""

from __future__ import annotations

import re


class RecsparkError(Exception):
    """Base class of every error recspark raises on purpose."""


class ConfigError(RecsparkError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataValidationError(RecsparkError, ValueError):
    """Input data is unreadable, malformed or fails a quality gate."""


class ModelFitError(RecsparkError, RuntimeError):
    """Training diverged or could not run (e.g. non-finite parameters)."""


class CandidateRejected(RecsparkError, RuntimeError):
    """A nightly candidate was trained but failed the quality gate; the champion stays (exit code 5)."""


class JobTerminated(BaseException):
    """The job received SIGTERM (a scheduler stopping it) while its MLflow run was open.

    A ``BaseException``, as ``KeyboardInterrupt``: no ``except Exception`` on the way
    (a tuning trial's, a cleanup's) may swallow it; the run ends KILLED and the job
    exits 128 + the signal number, as a shell reports a process the signal ended.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def stopped_by_signal(err: BaseException) -> bool:
    """True for :class:`JobTerminated`, or an error raised while one was unwinding the job (its chain).

    A SIGTERM can land inside library code whose own cleanup then fails (PySpark
    4.3's ``toPandas`` raises ``UnboundLocalError`` from its ``finally``), so the
    error that surfaces is not the JobTerminated: the job was still stopped.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        cause = pending.pop()
        if cause is None or id(cause) in seen:
            continue
        if isinstance(cause, JobTerminated):
            return True
        seen.add(id(cause))
        pending += [cause.__cause__, cause.__context__]  # run_job re-raises ``err from err``: follow both
    return False


_RAISED = re.compile(r"^recspark\.errors\.(\w+): (.*)$", re.M)


def raised_in_task(err: BaseException) -> RecsparkError | None:
    """The recspark error a Spark task raised, rebuilt on the driver; None when it was something else.

    Spark hands a task's exception to the driver as a Java error whose text
    holds the Python traceback; its last ``recspark.errors.X: message`` line
    is the error (e.g. the kernel's ModelFitError when WARP diverges), so a job
    can exit with that error's code instead of 1.
    """
    found = _RAISED.findall(str(err))
    if not found:
        return None
    name, message = found[-1]
    cls = {c.__name__: c for c in RecsparkError.__subclasses__()}.get(name)
    return cls(message) if cls is not None else None
