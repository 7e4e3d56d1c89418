"""Embedding products on planted vectors (known neighbours) and the job on a tiny trained run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from mlflow.tracking import MlflowClient

from recspark.config import ProductsConfig, TrainConfig, load_config
from recspark.data.matrix import read_matrix
from recspark.errors import DataValidationError
from recspark.models.warp.estimator import RankingFMModel
from recspark.pipeline.train import run_training
from recspark.products.job import ModelEmbeddings, _skip_reason, build_product, run_products
from recspark.products.similarity import (
    Embeddings,
    explanations,
    feature_items,
    feature_suggestions,
    similar_features,
    similar_items,
    top_k_cosine,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.spark

# Three clusters along the axes. Lengths differ on purpose (A2 and B1 are long), so a dot
# product would rank them first where the cosine does not; Z has no direction.
ITEMS = {
    "A0": [1, 0, 0], "A1": [2, 0.2, 0], "A2": [10, 0, 3],
    "B0": [0, 1, 0], "Z": [0, 0, 0], "B1": [0, 5, 0.5], "B2": [0.3, 1, 0],
    "C0": [0, 0, 1], "C1": [0.05, 0, 1], "C2": [0, 0.2, 1],
}
# One group's features aligned with the clusters (tag_dead: an untrained zero embedding).
TAGS = {"tag_x": [1, 0, 0], "tag_dead": [0, 0, 0], "tag_y": [0, 1, 0], "tag_z": [0, 0, 1], "tag_xy": [1, 0.5, 0]}
HAS = {"A0": {"tag_x"}, "A1": {"tag_x", "tag_xy"}, "B2": {"tag_y"}, "C0": {"tag_dead"}}


def embeddings(table: dict[str, list[float]]) -> Embeddings:
    return Embeddings(np.array(list(table), dtype=object), np.array(list(table.values()), dtype=np.float32))


def neighbours(df, key: str, other: str) -> dict[str, list[str]]:
    """``{key: [other at rank 1, rank 2, ...]}``, checking ranks are 1..n with scores non-increasing."""
    pdf = df.toPandas().sort_values([key, "rank"])
    out = {}
    for name, rows in pdf.groupby(key):
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1)), name
        assert (np.diff(rows["score"].to_numpy()) <= 1e-6).all(), name
        out[name] = rows[other].tolist()
    return out


def cosine(a: str, b: str, table_a=ITEMS, table_b=ITEMS) -> float:
    x, y = np.array(table_a[a], float), np.array(table_b[b], float)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_similar_items_exact_top_k_by_cosine_self_and_zero_excluded(spark):
    df = similar_items(spark, embeddings(ITEMS), k=2)
    assert df.columns == ["item_id", "rank", "similar_item_id", "score"]
    assert neighbours(df, "item_id", "similar_item_id") == {
        "A0": ["A1", "A2"], "A1": ["A0", "A2"], "A2": ["A0", "A1"],
        "B0": ["B1", "B2"], "B1": ["B0", "B2"], "B2": ["B0", "B1"],
        "C0": ["C1", "C2"], "C1": ["C0", "C2"], "C2": ["C0", "C1"],
    }
    scores = {(r.item_id, r.similar_item_id): r.score for r in df.collect()}
    assert scores[("A0", "A1")] == pytest.approx(cosine("A0", "A1"), abs=1e-6)
    assert scores[("C2", "C1")] == pytest.approx(cosine("C2", "C1"), abs=1e-6)


def test_similar_items_k_beyond_catalogue_gives_every_other_item_once(spark):
    pdf = similar_items(spark, embeddings(ITEMS), k=50).toPandas()
    usable = [i for i in ITEMS if i != "Z"]
    assert set(pdf["item_id"]) == set(usable)
    for item, rows in pdf.groupby("item_id"):
        assert sorted(rows["similar_item_id"]) == sorted(set(usable) - {item})
    assert (pdf["score"] <= 1 + 1e-6).all() and (pdf["score"] >= -1 - 1e-6).all()


def test_feature_items_sorts_the_catalogue_by_each_tag(spark):
    df = feature_items(spark, embeddings(TAGS), embeddings(ITEMS), k=2)
    assert df.columns == ["feature", "rank", "item_id", "score"]
    # tag_xy: A2 has the largest dot product (10) but the smallest cosine of the A cluster.
    assert neighbours(df, "feature", "item_id") == {
        "tag_x": ["A0", "A1"], "tag_y": ["B0", "B1"], "tag_z": ["C0", "C1"], "tag_xy": ["A1", "A0"],
    }


def test_feature_suggestions_skip_features_the_item_has(spark):
    tags = list(TAGS)
    rows, cols = zip(*[(list(ITEMS).index(i), tags.index(t)) for i, ts in HAS.items() for t in ts])
    has = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ITEMS), len(TAGS)))
    df = feature_suggestions(spark, embeddings(ITEMS), embeddings(TAGS), has, k=2)
    assert df.columns == ["item_id", "rank", "feature", "score"]
    got = neighbours(df, "item_id", "feature")
    assert got == {
        "A0": ["tag_xy", "tag_y"],   # has tag_x, the best match
        "A1": ["tag_y", "tag_z"],    # has tag_x and tag_xy; the rest tie at 0 -> feature order
        "A2": ["tag_x", "tag_xy"],
        "B0": ["tag_y", "tag_xy"], "B1": ["tag_y", "tag_xy"],
        "B2": ["tag_xy", "tag_x"],   # has tag_y
        "C0": ["tag_z", "tag_x"], "C1": ["tag_z", "tag_x"], "C2": ["tag_z", "tag_y"],
    }
    for item, owned in HAS.items():
        assert not owned & set(got.get(item, []))
    with pytest.raises(DataValidationError, match="shape"):
        feature_suggestions(spark, embeddings(ITEMS), embeddings(TAGS), has[:, :2], k=2)


def test_similar_features_exclude_self(spark):
    df = similar_features(spark, embeddings(TAGS), k=2)
    assert df.columns == ["feature", "rank", "similar_feature", "score"]
    assert neighbours(df, "feature", "similar_feature") == {
        "tag_x": ["tag_xy", "tag_y"], "tag_y": ["tag_xy", "tag_x"],
        "tag_z": ["tag_x", "tag_y"], "tag_xy": ["tag_x", "tag_y"],
    }


def test_top_k_cosine_with_exclusions_and_blocks_of_one(spark):
    queries = np.array([[1, 0], [0, 2], [0, 0]], dtype=np.float32)
    candidates = np.array([[3, 0], [0, 0], [1, 1], [0, 1], [-1, 0]], dtype=np.float32)
    exclude = spark.createDataFrame([(0, 0), (1, 1)], "query_idx int, candidate_idx int")
    pdf = top_k_cosine(spark, queries, candidates, 3, exclude=exclude, block_size=1).toPandas()
    got = {q: rows.sort_values("rank")["candidate_idx"].tolist() for q, rows in pdf.groupby("query_idx")}
    assert got == {0: [2, 3, 4], 1: [3, 2, 0]}  # zero query 2 and zero candidate 1 never appear
    top = pdf[(pdf.query_idx == 1) & (pdf["rank"] == 2)].score.item()
    assert top == pytest.approx(np.sqrt(0.5), abs=1e-6)


def test_explanations_pick_the_users_most_similar_training_items(spark):
    items = embeddings(ITEMS)
    index = {item: i for i, item in enumerate(ITEMS)}
    user_map = spark.createDataFrame([("u1", 0), ("u2", 1), ("u3", 2)], "user_id string, user_idx int")
    train = spark.createDataFrame([(0, index[i]) for i in ("A0", "A2", "B0", "C0")]
                                  + [(1, index[i]) for i in ("C1", "C2", "Z")], "user_idx int, item_idx int")
    recs = spark.createDataFrame(
        [("u1", 1, "A1", 9.0), ("u1", 2, "B1", 8.0), ("u2", 1, "C0", 7.0), ("u2", 2, "C1", 6.0),
         ("u2", 3, "Z", 5.0), ("u3", 1, "A0", 4.0)], "user_id string, rank int, item_id string, score float")
    df = explanations(recs, train, user_map, items, n=2)
    assert df.columns == ["user_id", "item_id", "rank", "because_item_id", "score"]
    pdf = df.toPandas().sort_values(["user_id", "item_id", "rank"])
    got = {(u, i): rows["because_item_id"].tolist() for (u, i), rows in pdf.groupby(["user_id", "item_id"])}
    assert got == {
        ("u1", "A1"): ["A0", "A2"],
        ("u1", "B1"): ["B0", "C0"],
        ("u2", "C0"): ["C1", "C2"],
        ("u2", "C1"): ["C2"],  # the recommended item is not its own reason; Z has no direction
    }
    score = pdf[(pdf.item_id == "B1") & (pdf.because_item_id == "C0")].score.item()
    assert score == pytest.approx(cosine("B1", "C0"), abs=1e-6)


# --------------------------------------------------------------------------- the job on a tiny run


def tiny_training_overrides(tmp: Path) -> list[str]:
    """conf/demo.yaml shrunk to ~5k interactions, WARP with generated item tags: seconds of work."""
    return [
        f"data.path={tmp}/data/interactions",
        "data.generate.n_users=400", "data.generate.n_items=150", "data.generate.n_interactions=5000",
        f"output.dir={tmp}/run",
        f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/mlruns",
        "mlflow.experiment=products",
        "als.rank=8", "als.max_iter=3", "als.learning_curve=[]",
        "warp.no_components=8", "warp.epochs=3", "warp.eval_every=0", "warp.train_metrics=false",
        f"features.items.sources=[{{path: {tmp}/data/item_tags, group: tag}}]",
    ]


@pytest.fixture(scope="module")
def tiny_run(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("products")
    conf = load_config(REPO / "conf" / "demo.yaml", TrainConfig, tiny_training_overrides(tmp))
    run_training(spark, conf)
    return tmp


def products_conf(tmp: Path, *sets: str) -> ProductsConfig:
    return load_config(REPO / "conf" / "products.yaml", ProductsConfig,
                       [f"source.run_dir={tmp}/run", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
                        f"mlflow.artifact_location={tmp}/mlruns", "mlflow.experiment=products", "k=5", *sets])


@pytest.mark.e2e
def test_products_job_on_a_trained_warp_model(spark, tiny_run):
    tmp = tiny_run
    summary = run_products(spark, products_conf(tmp))
    out = tmp / "run" / "products" / "warp"
    assert summary.out_dir == str(out) and not summary.skipped
    assert set(summary.rows) == {"similar_items", "feature_items", "feature_suggestions", "similar_features",
                                 "explanations"}
    for product, path in summary.outputs.items():
        assert path == str(out / product) and (out / product / "_SUCCESS").exists()
        assert summary.rows[product] > 0
    assert not (tmp / "run" / "products" / "warp.staging").exists()

    model = RankingFMModel.load(str(tmp / "run" / "models" / "warp" / "model"))
    item_map = model.item_map.toPandas()
    ids = set(item_map["item_id"])
    tags = {n for n in model.item_feature_names if n.startswith("tag_")}
    sims = pd.read_parquet(out / "similar_items")
    assert list(sims.columns) == ["item_id", "rank", "similar_item_id", "score"]
    assert set(sims["item_id"]) == ids and set(sims["similar_item_id"]) <= ids
    assert (sims["item_id"] != sims["similar_item_id"]).all()
    assert sims.groupby("item_id").size().eq(5).all() and sorted(sims["rank"].unique()) == [1, 2, 3, 4, 5]

    # Spot-check one item's list against a driver-side brute force over the model's vectors.
    reps, _ = model.state.item_representations()
    unit = reps / np.linalg.norm(reps, axis=1, keepdims=True)
    row_of = dict(zip(item_map["item_id"], item_map["item_idx"]))
    id_of = dict(zip(item_map["item_idx"], item_map["item_id"]))
    probe = min(ids)
    scores = unit @ unit[row_of[probe]]
    scores[row_of[probe]] = -np.inf
    expected = [id_of[i] for i in np.lexsort((np.arange(len(scores)), -scores))[:5]]
    assert sims[sims.item_id == probe].sort_values("rank")["similar_item_id"].tolist() == expected

    fitems = pd.read_parquet(out / "feature_items")
    assert set(fitems["feature"]) == tags and set(fitems["item_id"]) <= ids
    features = pd.read_parquet(out / "similar_features")
    assert set(features["feature"]) == tags and set(features["similar_feature"]) <= tags
    assert (features["feature"] != features["similar_feature"]).all()
    # Suggestions never repeat a tag the model's feature matrix gives the item.
    has = sp.csr_matrix(model.state.item_features)[:, model.n_item_identity:]
    owned = {(id_of[r], model.item_feature_names[c]) for r, c in zip(*has.nonzero())}
    sugg = pd.read_parquet(out / "feature_suggestions")
    assert set(sugg["feature"]) <= tags and len(owned) > 0
    assert not owned & set(zip(sugg["item_id"], sugg["feature"]))

    why = pd.read_parquet(out / "explanations")
    assert list(why.columns) == ["user_id", "item_id", "rank", "because_item_id", "score"]
    recs = pd.read_parquet(tmp / "run" / "recommendations" / "warp")
    assert set(zip(why.user_id, why.item_id)) <= set(zip(recs.user_id, recs.item_id))
    assert why["rank"].max() == 3 and (why["item_id"] != why["because_item_id"]).all()
    users = spark.read.parquet(str(tmp / "run" / "id_maps" / "users")).toPandas()
    train = read_matrix(spark, str(tmp / "run" / "matrix")).train.toPandas()
    history = set(zip(train.user_idx.map(dict(zip(users.user_idx, users.user_id))), train.item_idx.map(id_of)))
    assert set(zip(why.user_id, why.because_item_id)) <= history

    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == summary.rows and manifest["source"]["model"] == "warp"
    run = MlflowClient(tracking_uri=summary.tracking_uri).get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["source.model"] == "warp" and run.data.params["k"] == "5"
    assert run.data.metrics["similar_items_rows"] == summary.rows["similar_items"]
    assert run.data.metrics["explanations_rows"] == summary.rows["explanations"]


@pytest.mark.e2e
def test_products_job_on_als_skips_feature_products_and_republishes(spark, tiny_run, caplog):
    tmp = tiny_run
    conf = products_conf(tmp, "source.model=als", f"output={tmp}/elsewhere")
    with caplog.at_level("WARNING", logger="recspark.products.job"):
        summary = run_products(spark, conf)
    assert set(summary.rows) == {"similar_items", "explanations"}
    assert set(summary.skipped) == {"feature_items", "feature_suggestions", "similar_features"}
    assert "skipping feature_items: ALS has no side-feature embeddings" in caplog.text
    out = tmp / "elsewhere" / "products" / "als"
    sims = pd.read_parquet(out / "similar_items")
    factors = pd.read_parquet(tmp / "run" / "models" / "als" / "item_factors")
    assert set(sims["item_id"]) == set(factors["item_id"]) and (sims.item_id != sims.similar_item_id).all()
    # A second run with fewer products replaces the whole set (never a mix of two runs).
    summary = run_products(spark, products_conf(tmp, "source.model=als", f"output={tmp}/elsewhere",
                                                "products=[explanations]"))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "_RECSPARK_OUTPUT", "_manifest.json", "explanations"]
    assert summary.rows["explanations"] > 0


def test_feature_products_are_skipped_without_the_group(spark, tmp_path):
    conf = products_conf(tmp_path)
    tags = list(TAGS)
    plain = ModelEmbeddings("warp", embeddings(ITEMS))
    tagged = ModelEmbeddings("warp", embeddings(ITEMS), embeddings(TAGS),
                             sp.csr_matrix((len(ITEMS), len(tags)), dtype=np.float32))
    for product in ("feature_items", "feature_suggestions", "similar_features"):
        assert build_product(spark, conf, plain, product) is None
        assert build_product(spark, conf, tagged, product) is not None
    assert "trained without item side features" in _skip_reason(plain, "tag")
    genre = products_conf(tmp_path, "feature_group=genre")
    assert build_product(spark, genre, tagged, "similar_features") is None
    assert "no features in group 'genre'" in _skip_reason(tagged, "genre")


def test_products_job_refuses_a_missing_model(spark, tmp_path):
    conf = load_config(REPO / "conf" / "products.yaml", ProductsConfig,
                       [f"source.run_dir={tmp_path}/nothing", f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db",
                        f"mlflow.artifact_location={tmp_path}/mlruns"])
    with pytest.raises(DataValidationError, match="warp model not found"):
        run_products(spark, conf)


def test_products_job_entrypoint_rejects_bad_config_with_exit_2():
    from jobs.products import main

    assert main(["--conf", str(REPO / "conf" / "products.yaml"), "--set", "k=0",
                 "--set", "products=[similar_items, nonsense]"]) == 2


@pytest.mark.e2e
def test_products_job_through_spark_submit(tiny_run):
    """The real entrypoint: spark-submit.sh ships the package, the job exits 0 and prints its summary."""
    tmp = tiny_run
    env = {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": sys.executable}
    args = [str(REPO / "spark-submit.sh"), "--master", "local[1]", str(REPO / "jobs" / "products.py"),
            "--conf", str(REPO / "conf" / "products.yaml"), "--set", f"source.run_dir={tmp}/run",
            "--set", "source.model=als", "--set", "products=[similar_items]", "--set", f"output={tmp}/submit",
            "--set", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
            "--set", f"mlflow.artifact_location={tmp}/mlruns",
            "--set", "spark.conf.spark.driver.memory=1g"]
    result = subprocess.run(args, check=False, cwd=tmp, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "similar_items" in result.stdout and "rows" in result.stdout
    assert (tmp / "submit" / "products" / "als" / "similar_items" / "_SUCCESS").exists()
