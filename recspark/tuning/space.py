"""The search space: ``tune.space`` ranges as optuna distributions, and the grid they span.

Ranges are declared in config (:class:`recspark.config.ParamRange`, validated
there against the keys they set); this module only translates them. Trials are
asked with these distributions, so every strategy draws from the same space and
a grid point is a trial whose values are fixed in advance.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from recspark.config import ParamRange


def distribution(spec: ParamRange) -> BaseDistribution:
    """The optuna distribution of one range (names stay the dotted config keys)."""
    if spec.type == "categorical":
        return CategoricalDistribution(spec.values)
    if spec.type == "int":
        return IntDistribution(int(spec.low), int(spec.high), log=spec.log)
    return FloatDistribution(spec.low, spec.high, log=spec.logarithmic)


def distributions(space: Sequence[ParamRange]) -> dict[str, BaseDistribution]:
    """``name -> distribution`` for every searched key, in config order."""
    return {spec.name: distribution(spec) for spec in space}


def grid_values(spec: ParamRange) -> list[Any]:
    """The grid strategy's values of one range: every categorical value, else ``grid_points`` spaced points.

    Points are log-spaced for logarithmic ranges and include both ends; floats are
    rounded to 6 significant digits (readable MLflow params), ints deduplicated.

    >>> grid_values(ParamRange(name="warp.learning_rate", type="loguniform", low=0.01, high=1.0))
    [0.01, 0.1, 1.0]
    >>> grid_values(ParamRange(name="warp.epochs", type="int", low=1, high=4, grid_points=5))
    [1, 2, 3, 4]
    """
    if spec.type == "categorical":
        return list(spec.values)
    spaced = np.geomspace if spec.logarithmic else np.linspace
    points = np.clip(spaced(spec.low, spec.high, spec.grid_points), spec.low, spec.high)
    if spec.type == "int":
        return list(dict.fromkeys(int(np.rint(p)) for p in points))
    return [min(max(float(f"{p:.6g}"), spec.low), spec.high) for p in points]


def grid(space: Sequence[ParamRange]) -> list[dict[str, Any]]:
    """Every combination of :func:`grid_values`, as ``name -> value`` dicts (last key varies fastest)."""
    names = [spec.name for spec in space]
    return [dict(zip(names, values)) for values in itertools.product(*(grid_values(s) for s in space))]
