"""The search space: config validation (errors name the key), grid enumeration, sampling within bounds."""

from __future__ import annotations

import pytest

from recspark.config import ParamRange, TrainConfig, TuneConfig, load_config, with_values
from recspark.errors import ConfigError
from recspark.tuning.space import distributions, grid, grid_values
from recspark.tuning.strategies import make_plan

SPACE = [
    "{name: warp.learning_rate, type: loguniform, low: 0.01, high: 1.0}",
    "{name: warp.loss, type: categorical, values: [warp, bpr]}",
    "{name: warp.epochs, type: int, low: 2, high: 4}",
]


def tune_config(*space: str, **tune: object) -> TuneConfig:
    overrides = [f"tune.space=[{', '.join(space)}]"] + [f"tune.{key}={value}" for key, value in tune.items()]
    return load_config(None, TuneConfig, overrides)


@pytest.mark.parametrize("spec, expected", [
    ("{name: warp.learning_rate, type: loguniform, low: 0, high: 0.3}",
     "tune.space[0]: warp.learning_rate: a logarithmic range needs low > 0"),
    ("{name: warp.lerning_rate, type: uniform, low: 0.1, high: 0.3}",
     "tune.space[0]: warp.lerning_rate: unknown key (did you mean 'learning_rate'"),
    ("{name: warp.no_components, type: int, low: 0, high: 8}",
     "tune.space[0]: warp.no_components: 0 is out of range; must be >= 1"),
    ("{name: warp.epochs, type: uniform, low: 2, high: 8}", "tune.space[0]: warp.epochs: expected an integer"),
    ("{name: warp.loss, type: categorical, values: [warp, hinge]}",
     "tune.space[0]: warp.loss: 'hinge' is not one of 'warp', 'warp-kos', 'bpr', 'logistic'"),
    ("{name: warp.loss, type: categorical}", "tune.space[0]: warp.loss: categorical needs values"),
    ("{name: warp.epochs, type: int, low: 8, high: 2}", "tune.space[0]: warp.epochs: int needs low < high"),
    ("{name: als.rank, type: int, low: 2, high: 8}", "tune.space[0]: als.rank is not a warp setting"),
    ("{name: warp.learning_rate, type: gaussian, low: 0.1, high: 0.3}", "tune.space[0].type: 'gaussian' is not one"),
])
def test_invalid_ranges_are_errors_naming_the_key(spec, expected):
    with pytest.raises(ConfigError) as err:
        tune_config(spec)
    assert expected in str(err.value)


def test_every_problem_is_reported_once():
    with pytest.raises(ConfigError) as err:
        tune_config("{name: warp.lerning_rate, type: uniform, low: 0.1, high: 0.3}",
                    "{name: warp.no_components, type: int, low: 0, high: 8}",
                    "{name: warp.no_components, type: int, low: 1, high: 8}")
    message = str(err.value)
    assert message.count("warp.lerning_rate: unknown key") == 1
    assert "tune.space[1]: warp.no_components: 0 is out of range" in message
    assert "tune.space[2]: warp.no_components is listed twice" in message


def test_random_search_needs_a_budget_and_a_space():
    with pytest.raises(ConfigError, match="tune: strategy 'random' needs a budget"):
        tune_config(*SPACE, strategy="random", n_trials="null")
    with pytest.raises(ConfigError, match="tune.space: no valid parameter"):
        load_config(None, TuneConfig)


def test_als_searches_als_keys_and_feature_options_are_searchable():
    conf = tune_config("{name: als.reg_param, type: loguniform, low: 0.001, high: 1}", model="als")
    assert conf.tune.model == "als"
    conf = tune_config("{name: features.items.identity, type: categorical, values: [true, false]}")
    assert conf.train_config().features.items.identity is True  # the base config is not changed


def test_with_values_sets_dotted_keys_and_checks_them():
    base = TrainConfig()
    conf = with_values(base, {"warp.learning_rate": 0.2, "features.items.normalize": False, "als.rank": 4})
    assert (conf.warp.learning_rate, conf.features.items.normalize, conf.als.rank) == (0.2, False, 4)
    assert base.warp.learning_rate == 0.05
    with pytest.raises(ConfigError, match="warp.max_sampled: 0 is out of range"):
        with_values(base, {"warp.max_sampled": 0})


def test_grid_values_are_spaced_and_rounded():
    assert grid_values(ParamRange(name="a", type="loguniform", low=0.001, high=0.1)) == [0.001, 0.01, 0.1]
    assert grid_values(ParamRange(name="a", type="uniform", low=0.0, high=1.0, grid_points=5)) == [
        0.0, 0.25, 0.5, 0.75, 1.0]
    assert grid_values(ParamRange(name="a", type="int", low=1, high=3, grid_points=6)) == [1, 2, 3]
    assert grid_values(ParamRange(name="a", type="int", low=4, high=64, log=True, grid_points=3)) == [4, 16, 64]
    assert grid_values(ParamRange(name="a", type="categorical", values=[True, False])) == [True, False]


def test_grid_enumerates_every_combination():
    conf = tune_config(*SPACE)
    points = grid(conf.tune.space)
    assert len(points) == 3 * 2 * 3
    assert len({tuple(p.values()) for p in points}) == len(points)
    assert points[0] == {"warp.learning_rate": 0.01, "warp.loss": "warp", "warp.epochs": 2}
    assert {p["warp.epochs"] for p in points} == {2, 3, 4}


def test_grid_plan_asks_each_point_once_and_caps_at_n_trials():
    conf = tune_config(*SPACE, strategy="grid", n_trials=5)
    plan = make_plan(conf.tune)
    assert plan.n_trials == 5
    asked = [plan.study.ask(distributions(conf.tune.space)).params for _ in range(5)]
    assert len({tuple(sorted(p.items())) for p in asked}) == 5
    assert all(p in grid(conf.tune.space) for p in asked)
    assert make_plan(tune_config(*SPACE, strategy="grid", n_trials="null").tune).n_trials == 18


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_samples_stay_within_bounds(strategy):
    conf = tune_config(*SPACE, "{name: warp.max_sampled, type: int, low: 5, high: 50, log: true}",
                       strategy=strategy, tpe_startup_trials=3)
    plan = make_plan(conf.tune)
    space = distributions(conf.tune.space)
    for _ in range(25):
        trial = plan.study.ask(space)
        p = trial.params
        assert 0.01 <= p["warp.learning_rate"] <= 1.0
        assert p["warp.loss"] in ("warp", "bpr")
        assert isinstance(p["warp.epochs"], int) and 2 <= p["warp.epochs"] <= 4
        assert isinstance(p["warp.max_sampled"], int) and 5 <= p["warp.max_sampled"] <= 50
        with_values(TrainConfig(), p)  # every sample is a valid config
        plan.study.tell(trial, -abs(p["warp.learning_rate"] - 0.1))
