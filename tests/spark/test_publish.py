"""The nightly's ``_CURRENT`` pointer: switched by one rename, and no temporary file outlives a killed run."""

from __future__ import annotations

import pytest

from recspark.runs import publish

pytestmark = pytest.mark.spark


def test_switching_the_pointer_removes_temporary_pointers_of_killed_runs(spark, tmp_path):
    (tmp_path / "runs" / "d" / "a").mkdir(parents=True)
    stale = tmp_path / f".{publish.POINTER}.0123abcd.tmp"  # a run killed between writing it and its rename
    stale.write_text("runs/d/killed\n")
    publish.switch_pointer(spark, str(tmp_path), str(tmp_path / "runs" / "d" / "a"))
    assert publish.read_pointer(spark, str(tmp_path)) == str(tmp_path / "runs" / "d" / "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{publish.POINTER}.crc", publish.POINTER, "runs"]
