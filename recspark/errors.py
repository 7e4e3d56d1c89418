"""Project exceptions.

They subclass ``ValueError``/``RuntimeError`` so callers can catch broadly or
precisely; jobs map them to exit codes.
"""


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
