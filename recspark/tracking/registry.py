"""MLflow Model Registry side of the nightly job: the pyfunc, versions per date, the ``champion`` alias.

The pyfunc is logged by one function, :func:`log_pyfunc`: the training job
logs it into its run only; the nightly registers it too (:func:`register_candidate`).

One registered model (``promotion.registered_model``) collects the nightly
candidates. Each version is tagged with its snapshot date (``nightly.date``)
and the run folder holding its id maps and parameters (``recspark.run_dir``),
from which the next night warm-starts. The alias ``champion`` marks the
version that serves; it moves only when a candidate passes the quality gate.
A rejected version keeps ``promoted=false`` and a ``rejected`` tag giving the
reason.

Rerunning a date replaces that date's candidate: after the decision, every
other version of the date is deleted unless it holds the alias (the champion
is never deleted, so a rejected rerun leaves it serving).
"""

from __future__ import annotations

import logging
import pkgutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

log = logging.getLogger(__name__)

CHAMPION = "champion"
DATE_TAG = "nightly.date"
RUN_DIR_TAG = "recspark.run_dir"
_SIGNATURE_INPUTS = Schema([ColSpec("string", "user_id"), ColSpec(Array(DataType.string), "features", required=False)])
_SIGNATURE_OUTPUTS = Schema([ColSpec("string", "user_id"), ColSpec("long", "rank"), ColSpec("string", "item_id"),
                             ColSpec("float", "score"), ColSpec("string", "source")])


def _pyfunc_code(tmp: Path) -> Path:
    """The pyfunc's source as a real file: under spark-submit the package is a zip, so read it via the loader."""
    source = pkgutil.get_data("recspark.tracking", "pyfunc.py")
    if source is None:
        raise FileNotFoundError("recspark/tracking/pyfunc.py is not readable from the installed package")
    path = tmp / "pyfunc.py"
    path.write_bytes(source)
    return path


def champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding the ``champion`` alias, or None (no such model or no alias yet)."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def write_model_arrays(out_dir: Path, *, item_ids: npt.NDArray[np.object_], item_vectors: np.ndarray,
                       item_bias: np.ndarray, popularity: np.ndarray, user_feature_names: list[str],
                       user_feature_vectors: np.ndarray) -> dict[str, str]:
    """Write the pyfunc's item-side artifacts (layout in :mod:`recspark.tracking.pyfunc`); returns name -> path.

    All of them are O(items x factors), built on the driver. Rows of the item
    arrays follow ``item_ids`` (the catalogue columns); rows of
    ``user_feature_vectors`` (``[0, k]`` without user side features) follow
    ``user_feature_names``.
    """
    paths = {name: out_dir / f"{name}.{ext}" for name, ext in
             (("arrays", "npz"), ("items", "parquet"), ("user_features", "parquet"))}
    np.savez(paths["arrays"], item_vectors=np.asarray(item_vectors, np.float32),
             item_bias=np.asarray(item_bias, np.float32), popularity=np.asarray(popularity, np.float32),
             user_feature_vectors=np.asarray(user_feature_vectors, np.float32))
    pd.DataFrame({"item_id": pd.Series(item_ids, dtype=str)}).to_parquet(paths["items"], index=False)
    pd.DataFrame({"feature": pd.Series(user_feature_names, dtype=str)}).to_parquet(paths["user_features"],
                                                                                   index=False)
    return {name: str(path) for name, path in paths.items()}


def log_pyfunc(arrays: dict[str, Any], users: str, *, k: int, name: str = "model",
               normalize_user_features: bool = True, registered_model_name: str | None = None) -> ModelInfo:
    """Log the Spark-free pyfunc (:mod:`recspark.tracking.pyfunc`) in the active run as ``runs:/<id>/<name>``.

    ``arrays`` are :func:`write_model_arrays`' keyword arguments; ``users`` is
    the path or URI of the per-user Parquet folder (layout in
    :mod:`recspark.tracking.pyfunc`), written by Spark: MLflow copies it into
    the model file by file, so it never enters this process's memory. ``k`` is
    the default number of recommendations per user (``params={"k": ...}``
    overrides it); ``normalize_user_features``: whether a new user's feature
    weights are 1/n (``features.users.normalize`` of the training).
    ``registered_model_name`` also registers it as a new version of that model.
    """
    signature = ModelSignature(inputs=_SIGNATURE_INPUTS, outputs=_SIGNATURE_OUTPUTS,
                               params=ParamSchema([ParamSpec("k", "long", k)]))
    requirements = [f"{lib.__name__}=={lib.__version__}" for lib in (mlflow, np, pd)] + ["pyarrow"]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {**write_model_arrays(Path(tmp), **arrays), "users": users}
        return mlflow.pyfunc.log_model(name=name, python_model=str(_pyfunc_code(Path(tmp))), artifacts=artifacts,
                                       model_config={"k": k, "normalize_user_features": normalize_user_features},
                                       signature=signature, pip_requirements=requirements,
                                       registered_model_name=registered_model_name)


def register_candidate(name: str, arrays: dict[str, Any], users: str, *, k: int, date: str, run_dir: str,
                       normalize_user_features: bool = True) -> ModelVersion:
    """Log the pyfunc in the active run (:func:`log_pyfunc`) and register it as a new version of ``name``,
    tagged with the date and the run folder the next night starts from."""
    info = log_pyfunc(arrays, users, k=k, normalize_user_features=normalize_user_features,
                      registered_model_name=name)
    client = MlflowClient()
    version = client.get_model_version(name, str(info.registered_model_version))
    for key, value in {DATE_TAG: date, RUN_DIR_TAG: run_dir}.items():
        client.set_model_version_tag(name, version.version, key, value)
    log.info("registered %s version %s for %s", name, version.version, date)
    return client.get_model_version(name, version.version)


def record_decision(client: MlflowClient, version: ModelVersion, promoted: bool, reason: str) -> None:
    """Tag the version with the gate's decision and move the alias to it when promoted."""
    client.set_model_version_tag(version.name, version.version, "promoted", str(promoted).lower())
    if promoted:
        client.set_registered_model_alias(version.name, CHAMPION, version.version)
        client.set_model_version_tag(version.name, version.version, "promotion_reason", reason)
    else:
        client.set_model_version_tag(version.name, version.version, "rejected", reason)


def drop_other_versions_of_date(client: MlflowClient, version: ModelVersion) -> list[str]:
    """Delete the other versions tagged with ``version``'s date, except the champion; returns their numbers."""
    date = version.tags[DATE_TAG]
    current = champion(client, version.name)
    dropped = []
    for other in client.search_model_versions(f"name = '{version.name}'"):
        if (other.version != version.version and other.tags.get(DATE_TAG) == date
                and (current is None or other.version != current.version)):
            client.delete_model_version(version.name, other.version)
            dropped.append(other.version)
    if dropped:
        log.info("replaced earlier version(s) %s of %s for %s", dropped, version.name, date)
    return dropped
