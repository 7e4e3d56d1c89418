"""The sharded WARP trainer on Spark: quality vs shard count, determinism, warm start, edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.config import SyntheticSpec
from recspark.data.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, WEIGHT
from recspark.data.indexing import apply_id_maps, build_id_map
from recspark.data.split import holdout_split
from recspark.data.synthetic import interactions_frame
from recspark.errors import ConfigError
from recspark.evaluation.ranking import evaluate
from recspark.models.baselines import PopularityScorer
from recspark.models.scoring import FactorScorer
from recspark.config import KernelParams, TrainerParams
from recspark.models.warp.frames import arrow_frame, ragged_column, row_slices, vector_column
from recspark.models.warp.state import SideParams
from recspark.models.warp.trainer import (
    ShardData,
    SharedDelta,
    WarpTrainer,
    from_chunks,
    item_block,
    run_shard_epoch,
    sum_deltas,
    sum_deltas_rdd,
    to_chunks,
)

pytestmark = pytest.mark.spark

SPEC = SyntheticSpec(n_users=1500, n_items=400, n_interactions=40_000, n_clusters=8, seed=3)
KERNEL = KernelParams(loss="warp", learning_rate=0.05)


@pytest.fixture(scope="module")
def planted(spark):
    """Generated interactions with planted clusters, indexed and split (seed protocol)."""
    raw = interactions_frame(spark, SPEC).select(USER_ID, ITEM_ID, WEIGHT).dropDuplicates([USER_ID, ITEM_ID])
    user_map = build_id_map(raw, USER_ID, USER_IDX)
    item_map = build_id_map(raw, ITEM_ID, ITEM_IDX)
    indexed = apply_id_maps(raw, user_map, item_map)
    train, test = holdout_split(indexed, test_user_fraction=0.3, k=5, seed=1)
    # Sample weight 1 (the pipeline's default warp.sample_weight: binary): raw counts up to 31 would
    # multiply LightFM's steps by as much.
    train, test = train.withColumn(WEIGHT, F.lit(1.0)).cache(), test.cache()
    return train, test, user_map.count(), item_map.count()


def fit(spark, planted, **params):
    train, _, n_users, n_items = planted
    trainer = WarpTrainer(spark, KERNEL, TrainerParams(**{"no_components": 16, "epochs": 8, **params}))
    return trainer.fit(train, n_users, n_items)


def p_at_5(spark, planted, state) -> float:
    train, test, *_ = planted
    reps, biases = state.item_representations()
    scorer = FactorScorer(reps, state.user_factors(spark), item_bias=biases)
    return evaluate(scorer, train, test, ks=(5,))["precision_at_5"]


@pytest.fixture(scope="module")
def one_shard(spark, planted):
    return fit(spark, planted, n_shards=1)


def test_warp_learns_planted_structure_far_above_popularity(spark, planted, one_shard):
    train, test, _, n_items = planted
    popularity = evaluate(PopularityScorer.fit(train, n_items), train, test, ks=(5,))["precision_at_5"]
    assert p_at_5(spark, planted, one_shard) > 1.5 * popularity


@pytest.fixture(scope="module")
def four_shards(spark, planted):
    return {strategy: fit(spark, planted, n_shards=4, strategy=strategy) for strategy in ("hogwild", "stratified")}


@pytest.mark.parametrize("strategy", ["hogwild", "stratified"])
def test_four_shards_match_one_shard_within_tolerance(spark, planted, one_shard, four_shards, strategy):
    p1, p4 = p_at_5(spark, planted, one_shard), p_at_5(spark, planted, four_shards[strategy])
    assert abs(p1 - p4) < 0.1 * p1, (p1, p4)


def test_hogwild_strategy_trains_with_side_features_and_stratified_refuses_them(spark, planted):
    train, test, n_users, n_items = planted
    tags = sp.random(n_items, 20, density=0.1, format="csr", dtype=np.float32, random_state=1)
    features = sp.hstack([sp.identity(n_items, dtype=np.float32), tags], format="csr")
    with pytest.raises(ConfigError, match="hogwild"):
        WarpTrainer(spark, KERNEL, TrainerParams(no_components=8, epochs=1, strategy="stratified")).fit(
            train, n_users, n_items, item_features=features)
    state = WarpTrainer(spark, KERNEL, TrainerParams(no_components=8, epochs=2, n_shards=2, strategy="hogwild",
                                                     syncs_per_epoch=2)).fit(train, n_users, n_items,
                                                                             item_features=features)
    assert state.item_side.embeddings.shape == (n_items + 20, 8)
    assert len(state.history) == 2
    # A per-group L2 on the tag columns reaches the shards: the tag embeddings shrink.
    alpha = np.r_[np.zeros(n_items), np.full(20, 2.0)].astype(np.float32)
    shrunk = WarpTrainer(spark, KERNEL, TrainerParams(no_components=8, epochs=2, n_shards=2, strategy="hogwild",
                                                      syncs_per_epoch=2)).fit(train, n_users, n_items,
                                                                              item_features=features,
                                                                              item_feature_alpha=alpha)
    tag_norm = np.linalg.norm(shrunk.item_side.embeddings[n_items:])
    assert tag_norm < np.linalg.norm(state.item_side.embeddings[n_items:])  # same seed: only alpha differs


def test_item_blocks_partition_the_catalogue_and_change_every_epoch():
    blocks = [item_block(10, 3, b, seed=1, epoch=0) for b in range(3)]
    together = np.sort(np.concatenate([items for items, _ in blocks]))
    np.testing.assert_array_equal(together, np.arange(10))
    for items, local in blocks:
        np.testing.assert_array_equal(local[items], np.arange(len(items)))
        assert (local >= 0).sum() == len(items)
    assert not all(np.array_equal(item_block(10, 3, 0, seed=1, epoch=e)[0], blocks[0][0]) for e in (1, 2, 3))


def test_same_seed_gives_identical_factors(spark, planted):
    a = fit(spark, planted, n_shards=2, epochs=2, seed=7)
    b = fit(spark, planted, n_shards=2, epochs=2, seed=7)
    c = fit(spark, planted, n_shards=2, epochs=2, seed=8)
    np.testing.assert_array_equal(a.item_side.embeddings, b.item_side.embeddings)
    ua = a.user_factors(spark).toPandas().sort_values(USER_IDX)
    ub = b.user_factors(spark).toPandas().sort_values(USER_IDX)
    np.testing.assert_array_equal(np.stack(ua["features"]), np.stack(ub["features"]))
    assert not np.array_equal(a.item_side.embeddings, c.item_side.embeddings)


def test_the_lineage_byte_budget_brings_checkpoints_forward_without_changing_the_model(spark, planted):
    """Issue 18.7: the driver keeps each round's item-side broadcast until a checkpoint; ``lineage_bytes`` caps them."""
    assert spark.sparkContext.getCheckpointDir()
    kept: dict[str, list[int]] = {}
    fits = {}
    for name, budget_rounds in (("default", None), ("budget", 2.5)):
        train, _, n_users, n_items = planted
        params = {"no_components": 16, "epochs": 6, "n_shards": 2, "n_tasks": 2, "seed": 3}
        bytes_per_round = 4 * n_items * (2 * 16 + 2)  # identity features, adagrad: embeddings, biases, accumulators
        if budget_rounds:
            params["lineage_bytes"] = int(budget_rounds * bytes_per_round)
        trainer = WarpTrainer(spark, KERNEL, TrainerParams(**params))
        kept[name] = []
        fits[name] = trainer.fit(train, n_users, n_items, state_every=1,
                                 on_epoch=lambda e, stats, state, k=kept[name]: k.append(len(state.broadcasts) - 1))
    # One broadcast per epoch (one round each): the default keeps them until checkpoint_interval (5) epochs,
    # a budget of 2.5 rounds checkpoints whenever a third would be kept (and still at epoch 5).
    assert kept == {"default": [1, 2, 3, 4, 0, 1], "budget": [1, 0, 1, 0, 0, 1]}
    a, b = fits["default"], fits["budget"]
    np.testing.assert_array_equal(a.item_side.embeddings, b.item_side.embeddings)
    ua, ub = (s.user_factors(spark).toPandas().sort_values(USER_IDX) for s in (a, b))
    np.testing.assert_array_equal(np.stack(ua["features"]), np.stack(ub["features"]))


@pytest.mark.parametrize("strategy", ["hogwild", "stratified"])
def test_shards_give_the_same_bits_in_one_task_or_one_task_each(spark, planted, strategy, job_descriptions):
    """How shards are dealt to tasks (threads of one task locally, tasks on a cluster) never changes the model."""
    params = {"n_shards": 3, "epochs": 2, "seed": 5, "strategy": strategy, "syncs_per_epoch": 2}
    fits = [fit(spark, planted, n_tasks=n_tasks, **params) for n_tasks in (1, 2)]
    rounds = 3 if strategy == "stratified" else 2
    # The Spark UI names each training job: all epochs in one job (one task), or one job per round.
    assert {"warp epochs 1-2/2", "warp epoch 1/2 round 1/%d" % rounds,
            "warp epoch 2/2 round %d/%d" % (rounds, rounds)} <= set(job_descriptions())
    users = [state.user_factors(spark).toPandas().sort_values(USER_IDX) for state in fits]
    for state, factors in zip(fits[1:], users[1:]):
        np.testing.assert_array_equal(state.item_side.embeddings, fits[0].item_side.embeddings)
        np.testing.assert_array_equal(state.item_side.emb_accum, fits[0].item_side.emb_accum)
        np.testing.assert_array_equal(np.stack(factors["features"]), np.stack(users[0]["features"]))
    assert [h["epoch"] for h in fits[0].history] == [1.0, 2.0]
    assert all(h["kernel_cpu_seconds"] > 0 and h["updates"] > 0 for h in fits[0].history)


def test_shard_deltas_sum_to_the_same_bits_however_they_are_partitioned(spark):
    rng = np.random.default_rng(3)
    values = {k: rng.normal(size=1000).astype(np.float32) * 10.0 ** rng.integers(-6, 3) for k in range(11)}

    def records():
        return [(k, SharedDelta({"embeddings": v.copy()}, epochs={0: [1.0, 1.0, 0.5, 0.1]})) for k, v in values.items()]

    local = sum_deltas(records()[::-1], 11)
    for slices in (1, 3, 7):
        shuffled = [records()[i] for i in rng.permutation(11)]
        distributed = sum_deltas_rdd(spark.sparkContext.parallelize(shuffled, slices), 11)
        np.testing.assert_array_equal(distributed.arrays["embeddings"], local.arrays["embeddings"])
        assert distributed.epochs == {0: [11.0, 11.0, 5.5, pytest.approx(1.1)]}
    # Fewer shards than the fan-in: no tree level, only the root (folded in a task, not on the driver).
    few = sum_deltas_rdd(spark.sparkContext.parallelize(records()[:3][::-1], 2), 3)
    np.testing.assert_array_equal(few.arrays["embeddings"], sum_deltas(records()[:3], 3).arrays["embeddings"])
    np.testing.assert_allclose(local.arrays["embeddings"], np.sum(list(values.values()), axis=0), rtol=1e-4,
                               atol=1e-6)


def test_shard_function_is_deterministic_and_leaves_inputs_untouched():
    rng = np.random.default_rng(0)
    data = ShardData.from_arrays(rng.integers(0, 30, 300), rng.integers(0, 50, 300), np.ones(300), n_items=50)
    users = SideParams.init(len(data.users), 8, "adagrad", np.random.default_rng(1))
    items = SideParams.init(50, 8, "adagrad", np.random.default_rng(2))
    before = items.embeddings.copy()
    features = sp.identity(50, dtype=np.float32, format="csr")
    out1 = run_shard_epoch(3, data, users, items, features, KERNEL, seed=5, epoch=2)
    out2 = run_shard_epoch(3, data, users, items, features, KERNEL, seed=5, epoch=2)
    np.testing.assert_array_equal(out1[0].embeddings, out2[0].embeddings)
    for name in out1[1].arrays:
        np.testing.assert_array_equal(out1[1].arrays[name], out2[1].arrays[name])
    np.testing.assert_array_equal(items.embeddings, before)
    other_epoch = run_shard_epoch(3, data, users, items, features, KERNEL, seed=5, epoch=3)
    assert not np.array_equal(out1[0].embeddings, other_epoch[0].embeddings)


def test_hogwild_adadelta_merge_keeps_running_averages_non_negative():
    """Summing 8 shards' adadelta deltas must count the decay of the shared start value once."""
    rng = np.random.default_rng(0)
    n_items, n_shards = 30, 8
    kernel = KernelParams(optimiser="adadelta")
    items = SideParams.init(n_items, 4, "adadelta", np.random.default_rng(1))
    features = sp.identity(n_items, dtype=np.float32, format="csr")
    shards = [ShardData.from_arrays(rng.integers(0, 20, 400), rng.integers(0, n_items, 400), np.ones(400), n_items)
              for _ in range(n_shards)]
    users = [SideParams.init(len(d.users), 4, "adadelta", np.random.default_rng(2)) for d in shards]
    for epoch in range(4):
        deltas = [run_shard_epoch(s, d, users[s], items, features, kernel, seed=0, epoch=epoch, n_shards=n_shards,
                                  params=TrainerParams(strategy="hogwild"))[1] for s, d in enumerate(shards)]
        merged = items.to_dict()
        items = SideParams.from_dict({k: merged[k] + sum(d.arrays[k] for d in deltas) for k in merged})
        for name in ("emb_accum", "emb_delta_accum", "bias_accum", "bias_delta_accum"):
            assert (getattr(items, name) >= 0).all(), (epoch, name)


def test_shard_rows_are_sorted_so_input_order_does_not_matter():
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 30, 200), rng.integers(0, 50, 200)
    order = rng.permutation(200)
    a = ShardData.from_arrays(u, i, np.ones(200), 50)
    b = ShardData.from_arrays(u[order], i[order], np.ones(200), 50)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.items, b.items)


def test_edge_cases_more_shards_than_users_single_interaction_user_unseen_item(spark):
    # 3 users, one with a single interaction; item 4 is seen by nobody; 8 shards leaves most empty.
    df = spark.createDataFrame(pd.DataFrame({USER_IDX: [0, 0, 0, 1, 1, 2], ITEM_IDX: [0, 1, 2, 1, 3, 0],
                                             WEIGHT: [1.0] * 6}))
    state = WarpTrainer(spark, KERNEL, TrainerParams(no_components=4, epochs=2, n_shards=8)).fit(df, 3, 5)
    users = state.user_factors(spark).toPandas()
    assert sorted(users[USER_IDX]) == [0, 1, 2]
    reps, biases = state.item_representations()
    assert reps.shape == (5, 4) and np.isfinite(reps).all() and np.isfinite(biases).all()


def test_warm_start_continues_epochs_and_keeps_known_users(spark, planted):
    base = fit(spark, planted, n_shards=2, epochs=2)
    train, _, n_users, n_items = planted
    trainer = WarpTrainer(spark, KERNEL, TrainerParams(no_components=16, epochs=2, n_shards=3))
    # Zero epochs of training is impossible, so compare a warm start's *input* users: built, then one epoch.
    warm = trainer.fit(train, n_users, n_items, init=base, epochs=1)
    assert warm.epochs_done == 3
    assert [h["epoch"] for h in warm.history] == [1.0, 2.0, 3.0]
    cold = trainer.fit(train, n_users, n_items, epochs=1)
    # After one more epoch the warm model is much closer to the base model than a cold one is.
    base_u = base.user_factors(spark).toPandas().set_index(USER_IDX).sort_index()
    warm_u = warm.user_factors(spark).toPandas().set_index(USER_IDX).sort_index()
    cold_u = cold.user_factors(spark).toPandas().set_index(USER_IDX).sort_index()
    dist = lambda a, b: np.linalg.norm(np.stack(a["features"]) - np.stack(b["features"]))  # noqa: E731
    assert dist(warm_u, base_u) < 0.5 * dist(cold_u, base_u)


def test_state_chunks_round_trip_in_any_order_and_refuse_a_missing_piece():
    rng = np.random.default_rng(0)
    states = {s: ShardData.from_arrays(rng.integers(0, 30, 300), rng.integers(0, 50, 300), np.ones(300), 50)
              for s in (4, 1)}
    records = [r for s, data in states.items() for r in to_chunks(s, data, chunk_bytes=500)]
    assert len(records) > 2 * 4 and all(len(chunk.payload) <= 500 for _, chunk in records)
    back = list(from_chunks(records[::-1]))
    assert [s for s, _ in back] == [1, 4]
    for s, data in back:
        np.testing.assert_array_equal(data.items, states[s].items)
    with pytest.raises(RuntimeError, match="shard 4: got state pieces"):
        list(from_chunks(records[1:]))


def test_shard_state_cut_into_small_records_trains_identically(spark, planted):
    """Large shards are stored as many records; where the cuts fall must not change the model."""
    whole = fit(spark, planted, n_shards=2, epochs=2)
    cut = fit(spark, planted, n_shards=2, epochs=2, state_chunk_bytes=4096)
    np.testing.assert_array_equal(whole.item_side.embeddings, cut.item_side.embeddings)
    users = [s.user_factors(spark).toPandas().sort_values(USER_IDX) for s in (whole, cut)]
    np.testing.assert_array_equal(np.stack(users[0]["features"]), np.stack(users[1]["features"]))
    train, _, n_users, n_items = planted
    trainer = WarpTrainer(spark, KERNEL, TrainerParams(no_components=16, n_shards=3, state_chunk_bytes=4096))
    warm = trainer.fit(train, n_users, n_items, init=cut, epochs=1)
    assert warm.epochs_done == 3 and warm.user_factors(spark).count() == users[0].shape[0]


def test_trainer_params_are_validated_by_name():
    with pytest.raises(ConfigError, match="n_shards"):
        TrainerParams(n_shards=0)
    with pytest.raises(ConfigError, match="epochs"):
        TrainerParams(epochs=0)
    with pytest.raises(ConfigError, match="strategy"):
        TrainerParams(strategy="async")  # type: ignore[arg-type]


def test_user_frames_come_through_arrow_chunks_unchanged(spark, one_shard):
    """Users leave their blocks as Arrow chunks: every user once, the block's values bit for bit."""
    blocks = dict(one_shard.user_blocks.collect())
    users = np.concatenate([b.users for b in blocks.values()])
    factors = one_shard.user_factors(spark).toPandas().set_index(USER_IDX).loc[users]
    state = one_shard.user_state_frame(spark).toPandas().set_index(USER_IDX).loc[users]
    assert len(factors) == len(set(users)) == one_shard.user_factors(spark).count()
    for name, array in SideParams.concatenate([b.side for b in blocks.values()]).to_dict().items():
        got = np.stack(state[name]) if array.ndim == 2 else state[name].to_numpy()
        np.testing.assert_array_equal(got, array)
    embeddings = np.concatenate([b.side.embeddings for b in blocks.values()])
    np.testing.assert_array_equal(np.stack(factors["features"]), embeddings)


def test_arrow_chunks_cover_every_row_once_and_arrive_as_a_dataframe(spark):
    assert row_slices(10, 4, chunk_bytes=12) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert row_slices(0, 4) == [] and row_slices(5, 10**9) == [slice(i, i + 1) for i in range(5)]
    schema = T.StructType([T.StructField("id", T.IntegerType(), False),
                           T.StructField("v", T.ArrayType(T.FloatType(), False), False),
                           T.StructField("tags", T.ArrayType(T.IntegerType(), False), False)])

    def batches(parts):
        for start in parts:
            rows = np.arange(start, start + 7)
            counts = rows % 3
            for piece in row_slices(len(rows), 16, chunk_bytes=40):
                tags = np.concatenate([np.arange(c, dtype=np.int32) for c in counts[piece]] + [np.zeros(0, np.int32)])
                yield pa.RecordBatch.from_arrays(
                    [pa.array(rows[piece], pa.int32()), vector_column(np.outer(rows[piece], [1.0, 0.5])),
                     ragged_column(tags, counts[piece])], names=schema.names)

    frame = arrow_frame(spark, spark.sparkContext.parallelize([0, 7, 14], 2).mapPartitions(batches), schema)
    out = frame.toPandas().sort_values("id")
    assert out["id"].tolist() == list(range(21))
    np.testing.assert_array_equal(np.stack(out["v"]), np.outer(np.arange(21), [1.0, 0.5]).astype(np.float32))
    assert [list(t) for t in out["tags"]] == [list(range(i % 3)) for i in range(21)]
