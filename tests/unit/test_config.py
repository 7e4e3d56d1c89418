"""Config loading: defaults, overrides, and every kind of error named by its dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest

from recspark.config import GenerateConfig, TrainConfig, flatten, load_config
from recspark.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_load_without_a_file():
    conf = load_config(None, TrainConfig)
    assert conf.als.rank == 32
    assert conf.split.holdout_k == 5
    assert conf.data.min_user_interactions == 5


@pytest.mark.parametrize("name,cls", [("demo.yaml", TrainConfig), ("train_als.yaml", TrainConfig),
                                      ("generate.yaml", GenerateConfig)])
def test_shipped_configs_are_valid(name, cls):
    load_config(REPO / "conf" / name, cls)


def test_set_overrides_parse_values_as_yaml():
    conf = load_config(REPO / "conf" / "demo.yaml", TrainConfig,
                       ["als.rank=64", "als.learning_curve=[1, 3]", "data.weight_col=null", "als.alpha=2"])
    assert conf.als.rank == 64
    assert conf.als.learning_curve == [1, 3]
    assert conf.data.weight_col is None
    assert conf.als.alpha == 2.0 and isinstance(conf.als.alpha, float)


def test_a_dotted_spark_setting_in_set_is_one_key():
    """``spark.conf`` holds Spark's own dotted keys: the rest of the --set key after it is one key."""
    conf = load_config(REPO / "conf" / "demo.yaml", TrainConfig,
                       ["spark.conf.spark.ui.port=4079", "spark.conf.spark.sql.shuffle.partitions=4"])
    assert conf.spark.conf["spark.ui.port"] == "4079"
    assert conf.spark.conf["spark.sql.shuffle.partitions"] == "4"
    assert "spark" not in conf.spark.conf


def test_the_jobs_that_train_share_one_base_and_its_checks():
    from recspark.config import NightlyConfig, TrainingJob, TuneConfig

    shared = {f for f in TrainingJob.__dataclass_fields__}
    for cls in (TrainConfig, NightlyConfig, TuneConfig):
        assert issubclass(cls, TrainingJob) and shared <= set(cls.__dataclass_fields__)
        with pytest.raises(ConfigError, match="split.strategy 'time' needs data.timestamp_col"):
            load_config(None, cls, ["split.strategy=time", "split.time_last_n=1", "data.timestamp_col=null",
                                    "tune.space=[{name: warp.learning_rate, type: uniform, low: 0.1, high: 0.2}]"]
                        if cls is TuneConfig else
                        ["split.strategy=time", "split.time_last_n=1", "data.timestamp_col=null"])
    assert NightlyConfig().data.path == "data/nightly/{date}/interactions"  # its own default for a shared section


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"als\.rnk: unknown key \(did you mean 'als\.rank'\?\)"):
        load_config(None, TrainConfig, ["als.rnk=3"])


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"evalution: unknown key \(did you mean 'evaluation'\?\)"):
        load_config(None, TrainConfig, ["evalution.ks=[5]"])


def test_all_problems_are_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, TrainConfig, ["als.rank=0", "split.test_user_fraction=1.5", "data.dedupe=avg",
                                        "als.nonnegative=maybe", "evaluation.ks=[5, x]"])
    text = str(err.value)
    assert "als.rank: 0 is out of range; must be >= 1" in text
    assert "split.test_user_fraction: 1.5 is out of range; must be <= 1.0" in text
    assert "data.dedupe: 'avg' is not one of 'sum', 'max', 'count', 'binary'" in text
    assert "als.nonnegative: expected true/false" in text
    assert "evaluation.ks[1]: expected an integer" in text


def test_bad_override_syntax_and_missing_file():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, TrainConfig, ["als.rank"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("does/not/exist.yaml", TrainConfig)


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path, TrainConfig)


def test_flatten_gives_dotted_string_params():
    conf = load_config(REPO / "conf" / "demo.yaml", TrainConfig)
    flat = flatten(conf)
    assert flat["als.rank"] == "32"
    assert flat["spark.conf.spark.sql.shuffle.partitions"] == "8"
    assert flat["data.generate.n_users"] == "20000"
    assert flat["split.time_cutoff"] == ""
    assert all(isinstance(v, str) for v in flat.values())


def test_time_split_settings_are_checked_up_front():
    with pytest.raises(ConfigError, match="split: strategy 'time' needs exactly one of split.time_last_n"):
        load_config(None, TrainConfig, ["split.strategy=time"])
    with pytest.raises(ConfigError, match="needs data.timestamp_col"):
        load_config(None, TrainConfig, ["split.strategy=time", "split.time_last_n=2", "data.timestamp_col=null"])
    conf = load_config(None, TrainConfig, ["split.strategy=time", "split.time_cutoff=2024-06-01"])
    assert conf.split.time_cutoff == "2024-06-01"


def test_floats_in_exponent_notation_are_numbers_in_set_and_in_files(tmp_path):
    """YAML 1.1 reads 1e6 as a string; a person means a number."""
    path = tmp_path / "train.yaml"
    path.write_text("warp:\n  item_alpha: 1e-6\n")
    conf = load_config(path, TrainConfig, overrides=["warp.learning_rate=1e6", "als.reg_param=2.5E-3"])
    assert (conf.warp.learning_rate, conf.warp.item_alpha, conf.als.reg_param) == (1e6, 1e-6, 2.5e-3)


def test_a_bad_value_from_the_command_line_names_its_set(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("als:\n  rank: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, TrainConfig, overrides=["warp.no_components=0"])
    text = str(err.value)
    assert "warp.no_components: 0 is out of range; must be >= 1 (from --set warp.no_components=0)" in text
    assert "als.rank: 0 is out of range; must be >= 1\n" in text + "\n"  # from the file: no --set named


def test_an_impossible_date_is_a_config_problem_not_a_crash(tmp_path):
    """PyYAML raised a bare ValueError for 2026-13-40 (exit 1); the field that reads it names it."""
    from recspark.config import NightlyConfig

    with pytest.raises(ConfigError, match=r"date: expected YYYY-MM-DD, got '2026-13-40' \(from --set"):
        load_config(None, NightlyConfig, ["date=2026-13-40"])
    path = tmp_path / "nightly.yaml"
    path.write_text("date: 2026-02-30\n")
    with pytest.raises(ConfigError, match=r"date: expected YYYY-MM-DD, got '2026-02-30'"):
        load_config(path, NightlyConfig)
