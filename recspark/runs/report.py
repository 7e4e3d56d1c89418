"""What a training run produced, and the console summary the job prints when it finishes."""

from __future__ import annotations

from dataclasses import dataclass, field

from recspark.redact import redact


@dataclass
class RunSummary:
    """What a run produced: for the console summary and for tests."""

    run_id: str
    experiment: str
    tracking_uri: str
    out_dir: str
    counts: dict[str, float]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metric -> value
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    evaluated_on: str = "the test users"  # all of them (exact) or a seeded sample (evaluation.max_test_users)


_DATA_ROWS = [
    ("rows read", "rows_read"),
    ("rows rejected", "rows_rejected"),
    ("rows after dedupe + threshold", "rows_after_threshold"),
    ("users", "n_users"),
    ("items", "n_items"),
    ("train interactions", "train_rows"),
    ("test interactions", "test_rows"),
    ("test users", "test_users"),
]


def format_summary(summary: RunSummary, ks: list[int]) -> str:
    """Data counts per stage, metrics of every model and baseline, outputs and the MLflow run."""
    lines = ["", "=" * 72, "recspark run summary", "=" * 72, "Data"]
    for label, key in _DATA_ROWS:
        if key in summary.counts:
            lines.append(f"  {label:<32}{int(summary.counts[key]):>14,}")
    columns = [f"precision_at_{k}" for k in ks] + [f"recall_at_{ks[-1]}", f"ndcg_at_{ks[-1]}",
                                                  f"map_at_{ks[-1]}", "mrr", "auc"]
    headers = [c.replace("precision_at_", "p@").replace("recall_at_", "recall@").replace("ndcg_at_", "ndcg@")
               .replace("map_at_", "map@") for c in columns]
    lines += ["", f"Ranking metrics on {summary.evaluated_on}", "  " + f"{'model':<12}" +
              "".join(f"{h:>10}" for h in headers)]
    for model, metrics in summary.metrics.items():
        lines.append("  " + f"{model:<12}" + "".join(f"{metrics.get(c, float('nan')):>10.4f}" for c in columns))
    if summary.timings:
        lines += ["", "Stage wall time (s)"]
        lines += [f"  {name:<32}{secs:>10.1f}" for name, secs in summary.timings.items()]
    lines += ["", "Outputs"] + [f"  {name:<32}{path}" for name, path in summary.outputs.items()]
    tracking_uri = redact(summary.tracking_uri)
    lines += [
        "",
        f"MLflow run {summary.run_id} in experiment '{summary.experiment}' ({tracking_uri})",
        "Open the MLflow UI with:",
        f"  .venv/bin/mlflow ui --backend-store-uri {tracking_uri}   # then http://127.0.0.1:5000",
        "=" * 72,
    ]
    return "\n".join(lines)
