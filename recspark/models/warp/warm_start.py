"""Warm start: a saved WARP model grown to a new catalogue, to continue training where it stopped.

The nightly retrain continues yesterday's champion instead of starting over;
this is the model surgery it needs, next to the trainer whose state it edits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable, Sequence

import numpy as np
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession

from recspark.data.features import FeatureMatrix
from recspark.models.warp import streams
from recspark.models.warp.estimator import RankingFMModel
from recspark.models.warp.state import SideParams

log = logging.getLogger(__name__)


def warm_start_model(spark: SparkSession, champion_path: str, user_map: DataFrame, item_map: DataFrame,
                     n_users: int, n_items: int, item_features: FeatureMatrix | None = None,
                     user_features: FeatureMatrix | None = None, *, no_components: int, optimiser: str,
                     seed: int) -> RankingFMModel | None:
    """The WARP model saved at ``champion_path`` grown to tonight's catalogue, to pass as ``fit_indexed(init=...)``.

    Rows are matched by what they stand for: item identity rows by item
    index, item and user side feature rows by name. Matched rows keep the
    champion's parameters and optimiser state; new items and features get
    LightFM's fresh initialisation (seeded by ``seed``); features the champion
    had and tonight's data lacks are dropped. Users' own rows are matched by
    index inside the trainer (``init.user_blocks``). Returns None, logging
    why, when the champion cannot seed a model of ``no_components`` trained
    with ``optimiser``: the candidate then trains from scratch.
    """
    champion = RankingFMModel.read().session(spark).load(champion_path)
    old_side = champion.state.item_side
    if (old_side.no_components, old_side.optimiser) != (no_components, optimiser):
        log.warning("warm start skipped: the champion has %d components/%s, the config %d/%s",
                    old_side.no_components, old_side.optimiser, no_components, optimiser)
        return None
    if item_features is None:
        matrix, n_identity, names = sp.identity(n_items, dtype=np.float32, format="csr"), n_items, []
    else:
        matrix, n_identity, names = item_features.matrix, item_features.n_identity, item_features.names
    old_keys = [("identity", j) for j in range(champion.n_item_identity)]
    old_keys += [("feature", n) for n in champion.item_feature_names]
    new_keys = [("identity", j) for j in range(n_identity)] + [("feature", n) for n in names]
    epochs_done = champion.state.epochs_done
    item_side = _regrown(old_side, old_keys, new_keys, no_components, optimiser,
                         np.random.default_rng([seed, epochs_done, streams.NIGHTLY_ITEM_REGROW]))
    user_names = user_features.names if user_features is not None else []
    user_rng = np.random.default_rng([seed, epochs_done, streams.NIGHTLY_USER_FEATURE_REGROW])
    user_shared = (_regrown(champion.state.user_shared, champion.user_feature_names, user_names, no_components,
                            optimiser, user_rng) if user_names else None)
    log.info("warm start from %s: item side %d of %d rows kept; user side features %d of %d kept",
             champion_path, len(set(old_keys) & set(new_keys)), len(new_keys),
             len(set(champion.user_feature_names) & set(user_names)), len(user_names))
    # Everything else (user blocks, epochs done, history) continues as saved.
    state = dataclasses.replace(champion.state, item_side=item_side, user_shared=user_shared,
                                item_features=sp.csr_matrix(matrix, dtype=np.float32), n_users=n_users,
                                n_items=n_items)
    return RankingFMModel(state, user_map, item_map, names, user_names)


def _regrown(old: SideParams | None, old_keys: Sequence[Hashable], new_keys: Sequence[Hashable],
             no_components: int, optimiser: str, rng: np.random.Generator) -> SideParams:
    """One row per ``new_keys``: the old row's parameters and optimiser state where its key is in
    ``old_keys`` (``old``'s rows, in order), LightFM's fresh initialisation where it is new."""
    grown = SideParams.init(len(new_keys), no_components, optimiser, rng).to_dict()
    old_at = {key: row for row, key in enumerate(old_keys)}
    pairs = np.array([(new, old_at[key]) for new, key in enumerate(new_keys) if key in old_at],
                     dtype=np.int64).reshape(-1, 2)
    if old is not None and len(pairs):
        for name, values in old.to_dict().items():
            grown[name][pairs[:, 0]] = values[pairs[:, 1]]
    return SideParams.from_dict(grown)
