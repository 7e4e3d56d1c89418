"""Tags of the WARP/BPR fits' random streams, all in one place so no two streams share a seed.

Every stream is ``np.random.default_rng([seed, ..., TAG])``: the fit's seed, the
indices that make the draw specific (epoch, shard, round) and a tag naming what
it seeds, so a retried Spark task redraws exactly the same numbers. The values
are part of every fit's bits: changing one changes the models trained with it.
The kernel's own per-round stream, ``[seed, epoch, sync_round, shard_id]``,
carries no tag (it predates them; a tag would change every fit).
"""

#: ``[seed, epoch, ITEM_BLOCKS]``: the epoch's deal of items into stratified blocks.
ITEM_BLOCKS = 0xB10C
#: ``[seed, epoch, shard_id, ROUND_SLICES]``: which of a shard's rows each hogwild round trains.
ROUND_SLICES = 0x5111CE
#: ``[seed, ITEM_INIT]``: a fresh fit's item side (identity rows and item feature rows).
ITEM_INIT = 0xFEA7
#: ``[seed, USER_INIT, shard_id]``: a fresh fit's user rows, per shard; with ``epochs_done``
#: appended, the users a warm start meets for the first time; ``[seed, USER_INIT, ITEM_INIT]``
#: (both tags): a fresh fit's user side-feature rows.
USER_INIT = 0x05E7
#: ``[seed, epochs_done, NIGHTLY_ITEM_REGROW]``: new item rows (new items, new item features)
#: when the nightly job grows the champion's item side to tonight's catalogue.
NIGHTLY_ITEM_REGROW = 0x9A8
#: ``[seed, epochs_done, NIGHTLY_USER_FEATURE_REGROW]``: new user side-feature rows in the same
#: step. The same number as `USER_INIT` in another position (the two seeds coincide only for a
#: champion of 1511 epochs fitted with over 1511 shards); kept so warm starts draw as before.
NIGHTLY_USER_FEATURE_REGROW = 0x05E7
