"""Job outputs are all-or-nothing: staged, then published by rename; killed runs are repaired."""

from __future__ import annotations

from pathlib import Path

import pytest

from recspark.pipeline.outputs import StagedOutput

pytestmark = pytest.mark.spark


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_commit_replaces_the_whole_previous_output(spark, tmp_path):
    out = tmp_path / "out"
    write(out / "recommendations" / "als" / "part-0", "old als")
    write(out / "recommendations" / "warp" / "part-0", "old warp")
    staged = StagedOutput(spark, str(out))
    staged.recover()
    write(Path(staged.staging) / "recommendations" / "als" / "part-0", "new als")
    staged.commit()
    assert tree(out) == {"recommendations/als/part-0": "new als"}  # no old warp file mixed in
    assert not Path(staged.staging).exists() and not Path(staged.previous).exists()
    assert staged.published({"als": f"{staged.staging}/recommendations/als"}) == {
        "als": f"{out}/recommendations/als"}


def test_a_failed_run_leaves_the_published_output_untouched(spark, tmp_path):
    out = tmp_path / "out"
    write(out / "a", "old")
    staged = StagedOutput(spark, str(out))
    staged.recover()
    write(Path(staged.staging) / "a", "half-written")  # the run dies here, before commit
    assert tree(out) == {"a": "old"}
    StagedOutput(spark, str(out)).recover()  # the next run starts
    assert tree(out) == {"a": "old"} and not Path(staged.staging).exists()


def test_a_run_killed_between_the_two_renames_is_repaired(spark, tmp_path):
    out = tmp_path / "out"
    write(tmp_path / "out.previous" / "a", "old")  # step 1 done: out -> out.previous
    write(tmp_path / "out.staging" / "a", "new")  # step 2 (staging -> out) never happened
    StagedOutput(spark, str(out)).recover()
    assert tree(out) == {"a": "old"}
    assert not (tmp_path / "out.previous").exists() and not (tmp_path / "out.staging").exists()


def test_a_run_killed_before_deleting_the_previous_output_keeps_the_new_one(spark, tmp_path):
    out = tmp_path / "out"
    write(out / "a", "new")  # steps 1 and 2 done
    write(tmp_path / "out.previous" / "a", "old")
    StagedOutput(spark, str(out)).recover()
    assert tree(out) == {"a": "new"} and not (tmp_path / "out.previous").exists()


def test_commit_without_a_staging_directory_keeps_the_output(spark, tmp_path):
    out = tmp_path / "out"
    write(out / "a", "old")
    with pytest.raises(OSError, match="nothing to publish"):
        StagedOutput(spark, str(out)).commit()
    assert tree(out) == {"a": "old"}
