"""Side features: do tags help, and what do they cost? recspark and LightFM on the same splits.

For each tagged dataset (Last.fm hetrec-2k artist tags, MovieLens latest-small
genres + tags, the generated 2M-row set with its item tags), item features are
built once with :func:`recspark.data.features.build_feature_matrix` (identity +
tags, rows normalised, tags on fewer than 2 items dropped) and the *same* CSR
is given to LightFM (``item_features=``). Four models per split: recspark and
LightFM, each identity-only ("CF") and identity + features.

* warm: the seed protocol split (5/5 thresholds, 20% of users x 5 held out),
  p@5 over all items with train items excluded;
* cold: :func:`recspark.data.split.item_holdout_split` (20% of items held out
  whole), p@5 and AUC ranking each test user's held-out items among the cold
  items only (:func:`recspark.evaluation.ranking.evaluate_cold_items`);
* cost: recspark's median epoch time with and without tags on the 2M set
  (target: with tags <= 2x identity-only), and LightFM's.

Same hyperparameters as ``bench_warp.py`` (64 components, lr 0.05, adagrad,
max_sampled 10, 10 epochs). LightFM is a benchmark-only extra.

    python benchmarks/bench_features.py                          # all datasets, 3 seeds
    python benchmarks/bench_features.py --datasets lastfm --seeds 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_warp import data_dir, load_likes, p_at_5, prepare, split, train_matrix  # noqa: E402

log = logging.getLogger("bench_features")
DATASETS = ("lastfm", "ml-latest-small", "synth-2m")
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "features.json"
EPOCHS, COMPONENTS, LR = 10, 64, 0.05


def write_feature_files(name: str, root: Path, cache_dir: Path, tmp: Path) -> list:
    """Long-form ``item_id, feature, value`` Parquet per group; the FeatureSources reading them."""
    from recspark.config import FeatureSource

    if name == "lastfm":
        tagged = pd.read_csv(root / "hetrec2011-lastfm-2k" / "user_taggedartists.dat", sep="\t")
        names = pd.read_csv(root / "hetrec2011-lastfm-2k" / "tags.dat", sep="\t", encoding="latin-1")
        tags = tagged.merge(names, on="tagID")[["artistID", "tagValue"]].drop_duplicates()
        frames = {"tag": pd.DataFrame({"item_id": tags.artistID.astype(str), "feature": tags.tagValue.str.strip()})}
    elif name == "ml-latest-small":
        movies = pd.read_csv(root / "ml-latest-small" / "movies.csv")
        genres = movies.assign(feature=movies.genres.str.split("|")).explode("feature")
        tags = pd.read_csv(root / "ml-latest-small" / "tags.csv")
        frames = {"genre": pd.DataFrame({"item_id": genres.movieId.astype(str), "feature": genres.feature}),
                  "tag": pd.DataFrame({"item_id": tags.movieId.astype(str),
                                       "feature": tags.tag.str.strip().str.lower()}).drop_duplicates()}
    else:
        return [FeatureSource(path=str(cache_dir / "synth-2m" / "item_tags"), group="tag")]
    sources = []
    for group, frame in frames.items():
        path = tmp / f"{name}_{group}.parquet"
        frame.assign(value=1.0).to_parquet(path, index=False)
        sources.append(FeatureSource(path=str(path), group=group))
    return sources


def fit_recspark(train, maps, sizes, features, seed):
    from recspark.models.warp.estimator import RankingFM

    epochs = []
    model = RankingFM(noComponents=COMPONENTS, learningRate=LR, maxSampled=10, maxIter=EPOCHS, seed=seed) \
        .fit_indexed(train, *maps, n_users=sizes[0], n_items=sizes[1], item_features=features,
                     on_epoch=lambda e, stats, state: epochs.append(stats["epoch_seconds"]))
    reps, biases = model.state.item_representations()
    return reps, biases, model.user_factors_indexed(), statistics.median(epochs), model


def fit_lightfm(spark, train, sizes, features, seed):
    from lightfm import LightFM

    matrix = train_matrix(train, *sizes).tocsr()
    model = LightFM(no_components=COMPONENTS, learning_rate=LR, loss="warp", max_sampled=10, random_state=seed)
    epochs = []
    for _ in range(EPOCHS):
        start = time.perf_counter()
        model.fit_partial(matrix, item_features=features, epochs=1, num_threads=2)
        epochs.append(time.perf_counter() - start)
    biases, reps = model.get_item_representations(features)
    _, users = model.get_user_representations()
    user_df = spark.createDataFrame(pd.DataFrame({"user_idx": np.arange(len(users), dtype=np.int32),
                                                  "features": list(users.astype(np.float32))}),
                                    "user_idx int, features array<float>")
    return reps.astype(np.float32), biases.astype(np.float32), user_df, statistics.median(epochs), None


def run_dataset(spark, name: str, args, tmp: Path) -> dict:
    from recspark.config import SideFeatures
    from recspark.data.columns import ITEM_ID, ITEM_IDX
    from recspark.data.features import build_feature_matrix
    from recspark.data.split import item_holdout_split
    from recspark.evaluation.ranking import evaluate_cold_items
    from recspark.models.scoring import FactorScorer

    likes, note = load_likes(name, data_dir(), spark, args.cache_dir)
    if likes is None:
        return {"skipped": note}
    indexed, user_map, item_map, info = prepare(spark, likes)
    sizes = (info["n_users"], info["n_items"])
    sources = write_feature_files(name, data_dir(), args.cache_dir, tmp)
    fm = build_feature_matrix(spark, SideFeatures(sources=sources), item_map, ITEM_ID, ITEM_IDX, sizes[1],
                              str(tmp / f"rejects_{name}"))
    log.info("%s: %s; %d side features (%s)", name, info, len(fm.names),
             ", ".join(f"{r.group}: {r.features_kept} kept, {r.features_dropped} dropped" for r in fm.reports))
    identity = sp.identity(sizes[1], dtype=np.float32, format="csr")  # LightFM's CF: one unit feature per item
    out = {"info": info, "n_side_features": len(fm.names), "groups": [vars(r) for r in fm.reports], "seeds": []}
    seeds = 1 if name == "synth-2m" else args.seeds
    for seed in range(seeds):
        record = {"seed": seed}
        warm_train, warm_test, _ = split(indexed, seed)
        cold = item_holdout_split(indexed, test_item_fraction=0.2, seed=seed)
        cold_train, cold_test = cold.train.cache(), cold.test.cache()
        cold_items = np.array(sorted(r[0] for r in cold_test.select(ITEM_IDX).distinct().collect()))
        for model in ("recspark", "lightfm"):
            for variant, feats in (("cf", None), ("features", fm)):
                key = f"{model}_{variant}"
                if model == "recspark":
                    fit = lambda tr: fit_recspark(tr, (user_map, item_map), sizes, feats, seed)  # noqa: E731
                else:
                    fit = lambda tr: fit_lightfm(spark, tr, sizes, identity if feats is None else fm.matrix,  # noqa: E731
                                                 seed)
                reps, biases, users, epoch_s, _ = fit(warm_train)
                scorer = FactorScorer(reps, users, item_bias=biases)
                record[f"{key}_warm_p_at_5"] = p_at_5(scorer, warm_train, warm_test)
                record[f"{key}_epoch_seconds"] = epoch_s
                scorer.unpersist()
                reps, biases, users, _, _ = fit(cold_train)
                metrics = evaluate_cold_items(reps, biases, users, cold_test, cold_items, ks=(5,))
                record[f"{key}_cold_p_at_5"] = metrics["precision_at_5"]
                record[f"{key}_cold_auc"] = metrics["auc"]
                log.info("%s seed %d %s: warm p@5 %.4f, cold p@5 %.4f, cold AUC %.4f, %.2f s/epoch", name, seed,
                         key, record[f"{key}_warm_p_at_5"], record[f"{key}_cold_p_at_5"], record[f"{key}_cold_auc"],
                         epoch_s)
        out["seeds"].append(record)
        for frame in (warm_train, warm_test, cold_train, cold_test):
            frame.unpersist()
    return out


def summarise(results: dict) -> dict:
    summary = {}
    for name, res in results.items():
        if "seeds" not in res:
            continue
        keys = [k for k in res["seeds"][0] if k != "seed"]
        summary[name] = {k: float(np.mean([s[k] for s in res["seeds"]])) for k in keys}
        summary[name]["n_seeds"] = len(res["seeds"])
        r = summary[name]
        r["recspark_feature_epoch_ratio"] = r["recspark_features_epoch_seconds"] / r["recspark_cf_epoch_seconds"]
        r["lightfm_feature_epoch_ratio"] = r["lightfm_features_epoch_seconds"] / r["lightfm_cf_epoch_seconds"]
    return summary


def print_table(summary: dict) -> None:
    cols = [("warm p@5", "warm_p_at_5"), ("cold p@5", "cold_p_at_5"), ("cold AUC", "cold_auc"),
            ("s/epoch", "epoch_seconds")]
    header = f"{'dataset':<16} {'seeds':>5} {'model':<20}" + "".join(f"{c:>10}" for c, _ in cols)
    print(header)
    print("-" * len(header))
    for name, r in summary.items():
        for model in ("recspark", "lightfm"):
            for variant in ("cf", "features"):
                key = f"{model}_{variant}"
                print(f"{name:<16} {r['n_seeds']:>5} {key:<20}" + "".join(f"{r[f'{key}_{c}']:>10.4f}" for _, c in cols))
        print(f"{'':<16} {'':>5} epoch time with/without features: recspark "
              f"{r['recspark_feature_epoch_ratio']:.2f}x, LightFM {r['lightfm_feature_epoch_ratio']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds for the small sets (synth-2m: 1)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/recspark-bench"))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("py4j", "recspark"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from recspark.session import build_session

    spark = build_session("local[2]", "bench_features", conf={
        "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "4g",
        "spark.local.dir": str(args.cache_dir / "spark-local")})
    load_start = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name in args.datasets:
                results[name] = run_dataset(spark, name, args, Path(tmp))
        finally:
            spark.stop()
    summary = summarise(results)
    print(f"\nload average start {load_start}, end {os.getloadavg()}")
    print_table(summary)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "datasets": results}, indent=1, default=str))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
