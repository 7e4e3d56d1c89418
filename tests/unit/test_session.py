"""Session settings that are only checked, not started (no Spark needed)."""

from __future__ import annotations

import doctest

import recspark.session
from recspark.session import checkpoint_dir_problem


def test_a_local_checkpoint_dir_is_flagged_only_for_multi_host_masters():
    assert checkpoint_dir_problem("local[2]", "checkpoints") is None
    assert checkpoint_dir_problem("local-cluster[1,2,1024]", "/tmp/ck") is None
    assert checkpoint_dir_problem("yarn", "hdfs:///user/me/checkpoints") is None
    problem = checkpoint_dir_problem("yarn", "checkpoints")
    assert "spark.checkpoint_dir 'checkpoints'" in problem and "yarn" in problem


def test_docstring_examples():
    assert doctest.testmod(recspark.session).failed == 0
