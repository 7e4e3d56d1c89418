"""recspark: distributed batch training of implicit-feedback recommenders.

The package follows the data path: ``data`` (ingest, validate, filter, index,
split) -> ``models`` (Spark ALS, the sharded WARP/BPR trainer, baselines) ->
``evaluation`` (distributed ranking metrics) -> ``tracking`` (MLflow).
"""

__version__ = "0.1.0"

from recspark import zip_imports

zip_imports.install()  # before any Spark task of ours: see the module (0.26 s per Python task otherwise)
