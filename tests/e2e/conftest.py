"""The small demo run several e2e modules read (the training job's tests, the explore notebook): trained once."""

from __future__ import annotations

from pathlib import Path

import pytest

from recspark.config import TrainConfig, load_config
from recspark.pipeline.train import run_training
from test_train_job import add_signup_user, small_demo_overrides  # tests/e2e is on sys.path (no __init__.py)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def demo_run(spark, tmp_path_factory):
    """conf/demo.yaml shrunk (ALS + WARP with item tags and user interests, one signed-up user): config, summary."""
    tmp = tmp_path_factory.mktemp("demo")
    overrides = small_demo_overrides(tmp)
    add_signup_user(spark, load_config(REPO / "conf" / "demo.yaml", TrainConfig, overrides), tmp)
    overrides.append(f"features.users.sources=[{{path: {tmp}/data/user_interests_plus, group: interest}}]")
    conf = load_config(REPO / "conf" / "demo.yaml", TrainConfig, overrides)
    return conf, run_training(spark, conf)
