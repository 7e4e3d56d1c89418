"""Search strategies as optuna studies: grid, random and TPE, all asked and told by the search loop.

One code path for all three: the search asks the study for a trial, runs it,
and tells the result. Grid points are enqueued trials (fixed values), random
and TPE are optuna's samplers. TPE uses the *constant liar*, so trials asked
while others still run do not all land on the same promising point. Pruning is
optuna's median rule: a trial whose validation score at a checkpoint is below
the median of earlier trials at that checkpoint stops there.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import optuna

from recspark.config import SearchConfig
from recspark.tuning.space import grid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """A study ready to be asked, and how many trials to ask (None: until the timeout)."""

    study: optuna.Study
    n_trials: int | None


def make_plan(conf: SearchConfig) -> Plan:
    """The study for ``tune.strategy`` (maximising the validation metric) and its trial budget.

    A grid larger than ``tune.n_trials`` runs a seeded random subset of its
    points (as optuna's GridSampler orders them), with a warning.
    """
    pruning = conf.pruning
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(n_startup_trials=pruning.startup_trials, n_warmup_steps=pruning.warmup_epochs)
        if pruning.enabled else optuna.pruners.NopPruner())
    if conf.strategy == "tpe":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
            seed=conf.seed, n_startup_trials=conf.tpe_startup_trials, constant_liar=True)
    else:
        sampler = optuna.samplers.RandomSampler(seed=conf.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    n_trials = conf.n_trials
    if conf.strategy == "grid":
        points = grid(conf.space)
        if n_trials is not None and n_trials < len(points):
            log.warning("the grid has %d points but tune.n_trials is %d: running a random subset (seed %d)",
                        len(points), n_trials, conf.seed)
            random.Random(conf.seed).shuffle(points)
            points = points[:n_trials]
        for point in points:
            study.enqueue_trial(point)
        n_trials = len(points)
    return Plan(study, n_trials)
