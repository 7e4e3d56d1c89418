"""What a search writes to its parent MLflow run (each trial's child run is written by the objective).

The parent holds the resolved config (strategy, budget and space among the
params), per-trial progress as step metrics (step = trial number), the best
trial's params and score, the refit's test metrics, and a PNG of validation
score vs trial number with the best-so-far line.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow

from recspark.tracking.mlflow_log import log_dict_artifact, log_metrics, log_params
from recspark.tuning.objective import TrialRecord


def log_trial_progress(record: TrialRecord, best: float | None, metric: str) -> None:
    """Step metrics on the parent as each trial ends: its score (if complete) and the best so far."""
    values = {f"best_val_{metric}": best} if best is not None else {}
    if record.value is not None:
        values[f"trial_val_{metric}"] = record.value
    log_metrics(values, step=record.number)


def log_best(best: TrialRecord, trials: Sequence[TrialRecord], metric: str) -> None:
    """The best trial's params (``best.<key>`` params and ``best_params.json``), score and the trial counts."""
    log_params({f"best.{name}": value for name, value in best.params.items()})
    log_dict_artifact({"trial": best.number, "run_id": best.run_id, f"val_{metric}": best.value,
                       "params": best.params}, "best_params.json")
    mlflow.set_tag("best_trial_run_id", best.run_id)
    counts = {f"n_trials_{state.lower()}": sum(t.state == state for t in trials)
              for state in ("COMPLETE", "PRUNED", "FAILED")}
    # At step len(trials), after every progress step: trials end out of order, this is the final best.
    log_metrics({f"best_val_{metric}": best.value or 0.0, "n_trials": len(trials), **counts}, step=len(trials))


def plot_trials(trials: Sequence[TrialRecord], metric: str) -> None:
    """``plots/score_vs_trial.png``: each complete trial's score, pruned/failed trials marked, best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    done = [t for t in trials if t.value is not None]
    if done:
        ax.scatter([t.number for t in done], [t.value for t in done], label="trial", zorder=3)
        best, steps = [], []
        for t in sorted(done, key=lambda t: t.number):
            best.append(max(t.value, best[-1]) if best else t.value)
            steps.append(t.number)
        ax.step(steps, best, where="post", color="black", label="best so far")
    floor = min((t.value for t in done), default=0.0)
    for state, marker in (("PRUNED", "v"), ("FAILED", "x")):
        numbers = [t.number for t in trials if t.state == state]
        if numbers:
            ax.scatter(numbers, [floor] * len(numbers), marker=marker, color="grey", label=state.lower(), zorder=2)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"val {metric}")
    ax.set_title(f"Search: validation {metric} per trial")
    ax.grid(True, alpha=0.3)
    ax.legend()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "score_vs_trial.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        mlflow.log_artifact(str(path), "plots")
    plt.close(fig)
