"""The ``tune`` section: what the hyperparameter search varies, how, on which validation split, with which budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from recspark.config.loading import bounded, listed
from recspark.errors import ConfigError


@dataclass(frozen=True)
class ParamRange:
    """One searched setting: ``name`` is its dotted config key (``warp.learning_rate``), the rest its range.

    ``loguniform`` draws evenly in log space (learning rates, L2 strengths spanning decades);
    ``uniform`` and ``int`` draw linearly unless ``log``; ``categorical`` picks from ``values``
    (losses, booleans, component counts). The grid strategy takes every categorical value and
    ``grid_points`` evenly spaced points (log-spaced when logarithmic) of a range.
    """

    name: str = ""
    type: Literal["loguniform", "uniform", "int", "categorical"] = "uniform"
    low: float | None = None
    high: float | None = None
    values: list[Any] = listed()
    log: bool = False
    grid_points: int = bounded(3, ge=2)

    @property
    def logarithmic(self) -> bool:
        return self.type == "loguniform" or self.log

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("name is required (a dotted config key such as warp.learning_rate)")
        if self.type == "categorical":
            if not self.values:
                problems.append("categorical needs values: [...]")
            if self.low is not None or self.high is not None:
                problems.append("categorical takes values, not low/high")
        else:
            if self.values:
                problems.append(f"{self.type} takes low/high, not values (use type: categorical)")
            if self.low is None or self.high is None or self.low >= self.high:
                problems.append(f"{self.type} needs low < high, got low={self.low}, high={self.high}")
            elif self.logarithmic and self.low <= 0:
                problems.append(f"a logarithmic range needs low > 0, got {self.low}")
            if self.type == "int" and any(v is not None and v != int(v) for v in (self.low, self.high)):
                problems.append(f"int needs whole low/high, got {self.low}, {self.high}")
        if problems:
            raise ConfigError(f"{self.name or '<unnamed>'}: " + "; ".join(problems))


@dataclass(frozen=True)
class ValidationSplitConfig:
    """The validation split carved from the training split (a per-user holdout) that trials are scored on."""

    test_user_fraction: float = bounded(0.2, gt=0.0, le=1.0)
    holdout_k: int = bounded(5, ge=1)
    seed: int = 1042  # not split.seed: validation users differ from test users' draw


@dataclass(frozen=True)
class PruningConfig:
    """Stop WARP/BPR trials whose validation learning curve trails the median of earlier trials."""

    enabled: bool = True
    every: int = bounded(2, ge=1)  # score validation p@k every N epochs: the curve, and pruning points
    startup_trials: int = bounded(3, ge=0)  # trials that must finish before any trial is pruned
    warmup_epochs: int = bounded(0, ge=0)  # epochs a trial always gets


@dataclass(frozen=True)
class SearchConfig:
    """The ``tune`` section: what to search, how, and the budget (trials and/or wall time)."""

    model: Literal["als", "warp"] = "warp"  # warp covers bpr too (search warp.loss)
    strategy: Literal["grid", "random", "tpe"] = "tpe"
    n_trials: int | None = bounded(20, ge=1)  # null: until timeout_minutes (grid: the whole grid)
    timeout_minutes: float | None = bounded(None, gt=0.0)  # no trial starts after it; running ones finish
    concurrency: int = bounded(2, ge=1)  # trials running at once, each in its own FAIR scheduler pool
    seed: int = 42
    tpe_startup_trials: int = bounded(5, ge=1)  # random trials before TPE models the space
    space: list[ParamRange] = listed()
    validation: ValidationSplitConfig = field(default_factory=ValidationSplitConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
