"""What 100M and 1B rows would take on N executors, from one measured ``bench_scale.py`` run (issue 18).

    .venv/bin/python benchmarks/project_scale.py /tmp/scale20.json [--size 20m] [--cores 2 16 64 256] [--json out.json]

A projection on paper, not a measurement: each stage of the measured run is
scaled by the quantity its work grows with, then divided over the cores.

* rows (``R``): the data stages (ingest -> matrix), the baselines' fit and
  evaluation (popularity ranks come from one shared order and random's
  metrics are exact expectations, so neither scores items), the ALS and
  WARP fits (per iteration / epoch linear in the interactions, plus a
  per-user and per-item part that grows with them here), saving;
* items (``I``): evaluation of the models, which scores a fixed-size
  sample of test users (``evaluation.max_test_users``) against every item
  once the run has more test users than that;
* users x items (``U x I``): top-k recommendations for every user, the one
  quadratic stage;
* nothing: "other" (JVM and Spark start, MLflow).

Two catalogues: ``grows`` keeps the generator's ratios (``R/20`` users,
``R/200`` items: 5M items at 1B rows) and ``fixed`` keeps the measured item
count (users still ``R/20``), which is what most shops have: more users
and events, the same catalogue. The parallel parts divide by the cores at
the measured per-core rate, which ignores shuffle traffic over a network
(the measured run's shuffles stayed on one machine) and Spark's per-task
overhead: read the results as lower bounds. The driver's share does not
divide: WARP keeps the item side (embeddings, biases and adagrad
accumulators, float32) on the driver and broadcasts it every round, so its
size is printed beside the time, with ``warp.no_components`` from the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: What each measured stage's work grows with (see the module docstring).
GROWS_WITH: dict[str, str] = {
    "ingest": "rows", "filter": "rows", "index": "rows", "split": "rows",
    "baselines_fit": "rows", "popularity_evaluate": "rows", "random_evaluate": "rows",
    "als_fit": "rows", "warp_fit": "rows", "als_save": "rows", "warp_save": "rows",
    "als_evaluate": "items", "warp_evaluate": "items",
    "als_recommend": "pairs", "warp_recommend": "pairs",
}
#: Item-side float32 arrays the WARP driver holds per item and component: embeddings, their adagrad
#: accumulators, and the summed deltas of a round (biases add one component to each).
ITEM_SIDE_ARRAYS = 3
TARGETS = {"100m": 100_000_000, "1b": 1_000_000_000}


def project(run: dict, rows: int, items_fixed: bool, cores: int, components: int) -> dict:
    """Seconds per stage group and the WARP driver's item side (MB) at ``rows`` on ``cores`` cores."""
    users = rows / 20
    items = run["items"] if items_fixed else rows / 200
    factor = {"rows": rows / run["rows"], "items": items / run["items"],
              "pairs": users * items / (run["users"] * run["items"])}
    speedup = cores / run["cores"]
    stages = {s: t * factor[GROWS_WITH[s]] / speedup for s, t in run["stages_s"].items() if s in GROWS_WITH}
    unknown = sorted(set(run["stages_s"]) - set(GROWS_WITH) - {"side_features"})
    if unknown:
        raise SystemExit(f"project_scale: no growth rule for stage(s) {unknown}")
    groups = {
        "matrix": sum(stages[s] for s in ("ingest", "filter", "index", "split")),
        "baselines": sum(stages[s] for s in ("baselines_fit", "popularity_evaluate", "random_evaluate")),
        "fits": stages["als_fit"] + stages["warp_fit"],
        "evaluate": stages["als_evaluate"] + stages["warp_evaluate"],
        "recommend": stages["als_recommend"] + stages["warp_recommend"],
        "save": stages["als_save"] + stages["warp_save"],
        "other": run["stages_grouped_s"]["other"],
    }
    return {"rows": rows, "users": int(users), "items": int(items), "cores": cores,
            "seconds": {k: round(v) for k, v in groups.items()}, "total_s": round(sum(groups.values())),
            "warp_item_side_mb": round(items * (components + 1) * 4 * ITEM_SIDE_ARRAYS / 2**20)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="bench_scale.py --json output")
    parser.add_argument("--size", help="which measured size to scale from (default: the largest)")
    parser.add_argument("--measured-cores", type=int, default=2, help="cores the measured run used")
    parser.add_argument("--components", type=int, default=64, help="WARP components of the measured run")
    parser.add_argument("--cores", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--json", help="also write the projections here")
    args = parser.parse_args(argv)
    runs = json.loads(Path(args.results).read_text())
    runs = runs if isinstance(runs, list) else runs.get("results", [runs])
    run = max(runs, key=lambda r: r["rows"]) if args.size is None else next(r for r in runs if r["size"] == args.size)
    run = {**run, "cores": args.measured_cores}
    out = [dict(project(run, rows, fixed, cores, args.components), target=name,
                catalogue="fixed" if fixed else "grows")
           for name, rows in TARGETS.items() for fixed in (True, False) for cores in args.cores]
    groups = list(out[0]["seconds"])
    print(f"# from {run['size']} ({run['rows']:,} rows, {run['users']:,} users, {run['items']:,} items, "
          f"{run['total_s']:.0f} s on {run['cores']} cores); seconds, lower bounds (no network cost)")
    print("| rows | catalogue | users | items | cores | " + " | ".join(groups) + " | total | WARP item side on the driver |")
    print("|" + "---|" * (len(groups) + 7))
    for p in out:
        print(f"| {p['target']} | {p['catalogue']} | {p['users']:,} | {p['items']:,} | {p['cores']} | "
              + " | ".join(f"{p['seconds'][g]:,}" for g in groups)
              + f" | {p['total_s']:,} | {p['warp_item_side_mb']:,} MB |")
    if args.json:
        Path(args.json).write_text(json.dumps({"from": run["size"], "projections": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
