"""Every WARP hyperparameter is declared once and reaches the YAML section, the Spark Params and the kernel/trainer."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from recspark.config import KernelParams, TrainConfig, TrainerParams, WarpConfig, load_config
from recspark.errors import ConfigError
from recspark.models.warp.estimator import RankingFM

FIELDS = [(owner, f) for owner in (KernelParams, TrainerParams) for f in dataclasses.fields(owner)]


def spark_name(f: dataclasses.Field) -> str:
    """Spelled out here, independently of the estimator's derivation."""
    head, *rest = f.name.split("_")
    return f.metadata["spark"] or head + "".join(part.capitalize() for part in rest)


def another_value(owner: type, f: dataclasses.Field):
    """A valid value different from the default."""
    tp = typing.get_type_hints(owner)[f.name]
    choices = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return next(c for c in choices if c != f.default)
    if f.default is None:
        return 3
    if isinstance(f.default, int):
        return f.default + 1
    upper = f.metadata["lt"] or f.metadata["le"]
    return f.default / 2 if upper is not None else f.default * 2 + 0.01


def bad_value(owner: type, f: dataclasses.Field):
    """A value of the right type outside the field's declared range (None when it has no range)."""
    tp = typing.get_type_hints(owner)[f.name]
    if typing.get_origin(tp) is typing.Literal:
        return "no-such-choice"
    below = 2 if f.default is None else 1  # an optional setting's Param takes 0 for null: -1 is bad everywhere
    for bound, value in (("ge", lambda b: b - below), ("gt", lambda b: b), ("lt", lambda b: b), ("le", lambda b: b + 1)):
        if f.metadata[bound] is not None:
            v = value(f.metadata[bound])
            return int(v) if isinstance(f.default, int) or f.default is None and bound == "ge" else float(v)
    return None


def test_every_hyperparameter_has_a_doc_and_a_distinct_param_name():
    names = [spark_name(f) for _, f in FIELDS]
    assert len(set(names)) == len(names)
    assert all(f.metadata["doc"] for _, f in FIELDS)
    assert {f.name for _, f in FIELDS} <= {f.name for f in dataclasses.fields(WarpConfig)}


@pytest.mark.parametrize("owner, f", FIELDS, ids=[f.name for _, f in FIELDS])
def test_a_yaml_value_reaches_the_spark_param_and_the_kernel_or_trainer(owner, f, tmp_path):
    value = another_value(owner, f)
    path = tmp_path / "train.yaml"
    path.write_text(f"warp:\n  {f.name}: {value!r}\n".replace("'", '"'))
    conf = load_config(path, TrainConfig).warp
    assert getattr(conf, f.name) == value
    estimator = RankingFM.from_params(conf)
    assert estimator.getOrDefault(spark_name(f)) == value
    params = estimator.kernel_params() if owner is KernelParams else estimator.trainer_params()
    assert getattr(params, f.name) == value
    assert getattr(RankingFM(**{spark_name(f): value}).kernel_params() if owner is KernelParams
                   else RankingFM(**{spark_name(f): value}).trainer_params(), f.name) == value


@pytest.mark.parametrize("owner, f", [(o, f) for o, f in FIELDS if bad_value(o, f) is not None],
                         ids=[f.name for o, f in FIELDS if bad_value(o, f) is not None])
def test_an_out_of_range_value_is_refused_by_all_three_under_its_own_name(owner, f):
    value = bad_value(owner, f)
    with pytest.raises(ConfigError, match=rf"warp\.{f.name}: "):
        load_config(None, TrainConfig, overrides=[f"warp.{f.name}={value}"])
    with pytest.raises(ConfigError, match=rf"\b{spark_name(f)}: "):
        RankingFM(**{spark_name(f): value})
    with pytest.raises(ConfigError, match=rf"\b{f.name}: "):
        owner(**{f.name: value})


def test_the_defaults_agree_everywhere():
    estimator = RankingFM()
    assert estimator.kernel_params() == KernelParams() == WarpConfig().kernel_params()
    assert estimator.trainer_params() == TrainerParams() == WarpConfig().trainer_params()


def test_rho_of_one_is_refused_before_spark_starts():
    """The bug that motivated one declaration: the loader took rho=1.0 that the kernel refused after the ALS fit."""
    with pytest.raises(ConfigError, match=r"warp\.rho: 1.0 is out of range; must be < 1.0"):
        load_config(None, TrainConfig, overrides=["warp.rho=1.0"])


def test_stratified_with_side_features_is_refused_by_the_loader(tmp_path):
    with pytest.raises(ConfigError, match="stratified"):
        load_config(None, TrainConfig, overrides=[
            "warp.strategy=stratified", "features.items.sources=[{path: tags, group: tag}]"])


def test_an_unknown_param_names_the_closest():
    with pytest.raises(ConfigError, match="'learning_rate' \\(did you mean 'learningRate'\\?\\)"):
        RankingFM(learning_rate=0.1)
