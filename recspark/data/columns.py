"""Column names used between stages.

Input column names are configurable; after ingest every DataFrame uses these.
``*_id`` is an external id (string), ``*_idx`` an internal contiguous int32 index.
"""

USER_ID = "user_id"
ITEM_ID = "item_id"
WEIGHT = "weight"
TIMESTAMP = "timestamp"
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
REASON = "reason"
SCORE = "score"
RANK = "rank"
FEATURES = "features"
#: Long-form side features: ``<id>, feature, value`` (e.g. the generator's ``item_tags``).
FEATURE = "feature"
VALUE = "value"
FEATURE_IDX = "feature_idx"
