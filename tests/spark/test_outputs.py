"""Job outputs are all-or-nothing (staged, then published by rename; killed runs are repaired),
and a job only ever replaces a folder a recspark run wrote."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from recspark.errors import ConfigError
from recspark.runs.outputs import MARKER, StagedOutput, claim_root, write_marker

pytestmark = pytest.mark.spark


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def tree(root: Path) -> dict[str, str]:
    """Every file but the markers (and Hadoop's .crc files), with its text."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and MARKER not in p.name and not p.name.endswith(".crc")}


def publish(spark, out: Path, files: dict[str, str]) -> StagedOutput:
    """What a finished earlier run leaves: ``files`` published in ``out`` with the marker."""
    staged = StagedOutput(spark, str(out))
    staged.recover()
    for name, text in files.items():
        write(Path(staged.staging) / name, text)
    staged.commit()
    return staged


def test_commit_replaces_the_whole_previous_output(spark, tmp_path):
    out = tmp_path / "out"
    publish(spark, out, {"recommendations/als/part-0": "old als", "recommendations/warp/part-0": "old warp"})
    staged = publish(spark, out, {"recommendations/als/part-0": "new als"})  # the normal rerun
    assert tree(out) == {"recommendations/als/part-0": "new als"}  # no old warp file mixed in
    assert not Path(staged.staging).exists() and not Path(staged.previous).exists()
    assert json.loads((out / MARKER).read_text())["files"] == ["recommendations/als/part-0"]
    assert staged.published({"als": f"{staged.staging}/recommendations/als"}) == {
        "als": f"{out}/recommendations/als"}


def test_a_failed_run_leaves_the_published_output_untouched(spark, tmp_path):
    out = tmp_path / "out"
    publish(spark, out, {"a": "old"})
    staged = StagedOutput(spark, str(out))
    staged.recover()
    write(Path(staged.staging) / "a", "half-written")  # the run dies here, before commit
    assert tree(out) == {"a": "old"}
    StagedOutput(spark, str(out)).recover()  # the next run starts
    assert tree(out) == {"a": "old"} and not (Path(staged.staging) / "a").exists()


def killed_run_dirs(spark, tmp_path: Path, **dirs: str) -> None:
    for suffix, text in dirs.items():
        write(tmp_path / f"out{suffix}" / "a", text)
        write_marker(spark, str(tmp_path / f"out{suffix}"), "train")


def test_a_run_killed_between_the_two_renames_is_repaired(spark, tmp_path):
    out = tmp_path / "out"
    killed_run_dirs(spark, tmp_path, **{".previous": "old", ".staging": "new"})  # out -> out.previous done only
    StagedOutput(spark, str(out)).recover()
    assert tree(out) == {"a": "old"}
    assert not (tmp_path / "out.previous").exists() and tree(tmp_path / "out.staging") == {}


def test_a_run_killed_before_deleting_the_previous_output_keeps_the_new_one(spark, tmp_path):
    out = tmp_path / "out"
    killed_run_dirs(spark, tmp_path, **{"": "new", ".previous": "old"})  # steps 1 and 2 done
    StagedOutput(spark, str(out)).recover()
    assert tree(out) == {"a": "new"} and not (tmp_path / "out.previous").exists()


def test_an_output_being_deleted_keeps_its_marker_until_it_is_empty(spark, tmp_path):
    """A run killed while deleting ``out.previous`` must leave a folder the next run still knows as its own.

    Watched from another thread while commit deletes the old output (20 folders of files, so
    the deletion takes a while): at no moment may the folder hold files but not the marker
    (recover() would refuse such a remainder: exit 2 on every later run).
    """
    out, previous = tmp_path / "out", tmp_path / "out.previous"
    publish(spark, out, {f"d{d:02d}/part-{i:02d}": "old" for d in range(20) for i in range(20)})
    staged = StagedOutput(spark, str(out))
    staged.recover()
    write(Path(staged.staging) / "a", "new")
    unmarked: list[list[str]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and not unmarked:
            try:
                names = os.listdir(previous)
            except FileNotFoundError:
                continue
            if MARKER not in names and any(not name.endswith(".crc") for name in names):
                unmarked.append(names)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        staged.commit()
    finally:
        done.set()
        watcher.join()
    assert not unmarked, f"{previous} held {sorted(unmarked[0])[:5]} without {MARKER}"
    assert tree(out) == {"a": "new"} and not previous.exists()


def test_commit_without_a_staging_directory_keeps_the_output(spark, tmp_path):
    out = tmp_path / "out"
    publish(spark, out, {"a": "old"})
    with pytest.raises(OSError, match="nothing to publish"):
        StagedOutput(spark, str(out)).commit()
    assert tree(out) == {"a": "old"}


# --------------------------------------------------------------------------- refusals


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_folder_recspark_did_not_write_is_never_replaced(spark, tmp_path):
    out = tmp_path / "mine"
    write(out / "notes.txt", "my notes")
    write(out / "data" / "part-0.parquet", "not really parquet")
    before = snapshot(out)
    with pytest.raises(ConfigError, match=rf"output.dir={out} already exists and was not written by recspark"):
        StagedOutput(spark, str(out)).recover()
    assert snapshot(out) == before and not (tmp_path / "mine.staging").exists()


def test_a_file_placed_by_hand_in_an_output_stops_the_rerun(spark, tmp_path):
    out = tmp_path / "out"
    publish(spark, out, {"recommendations/part-0": "old"})
    write(out / "recommendations" / "README.txt", "added by hand")
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"holds files no recspark run wrote \(recommendations/README.txt\)"):
        StagedOutput(spark, str(out)).recover()
    assert snapshot(out) == before


def test_an_output_published_inside_another_is_recognised(spark, tmp_path):
    out = tmp_path / "out"
    publish(spark, out, {"models/part-0": "model"})
    publish(spark, out / "products" / "warp", {"similar_items/part-0": "similar"})  # the products job
    publish(spark, out, {"models/part-0": "new model"})  # the training rerun may replace both
    assert tree(out) == {"models/part-0": "new model"}


@pytest.mark.parametrize("where", ["input", "mlflow", "checkpoints", "cwd", "root", "home"])
def test_an_output_that_contains_something_precious_is_refused(spark, tmp_path, monkeypatch, where):
    out = tmp_path / "out"
    write(out / "interactions" / "part-0.parquet", "the input")
    protected = {"data.path": str(out / "interactions"), "the MLflow store": str(tmp_path / "x" / "mlflow.db"),
                 "spark.checkpoint_dir": str(tmp_path / "y" / "checkpoints")}
    target, name = {"input": (out, "data.path"), "mlflow": (tmp_path / "x", "the MLflow store"),
                    "checkpoints": (tmp_path / "y", "spark.checkpoint_dir"),
                    "cwd": (tmp_path, "the working directory"), "root": (Path("/"), "/"),
                    "home": (Path.home(), "the home directory")}[where]
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    before = snapshot(out)
    with pytest.raises(ConfigError, match=rf"output.dir={target} contains {name}"):
        StagedOutput(spark, str(target), protected=protected).recover()
    assert snapshot(out) == before


def test_a_staging_folder_recspark_did_not_write_is_kept(spark, tmp_path):
    write(tmp_path / "out.staging" / "mine.txt", "not a leftover")
    with pytest.raises(ConfigError, match="out.staging exists and was not written by recspark"):
        StagedOutput(spark, str(tmp_path / "out")).recover()
    assert (tmp_path / "out.staging" / "mine.txt").read_text() == "not a leftover"


def test_the_nightly_root_is_claimed_once_and_foreign_roots_refused(spark, tmp_path):
    root = tmp_path / "nightly"
    claim_root(spark, str(root), "root", {}, job="nightly")
    assert (root / MARKER).exists()
    write(root / "runs" / "2026-11-22" / "x" / "a", "a run")
    claim_root(spark, str(root), "root", {}, job="nightly")  # the next night
    foreign = tmp_path / "theirs"
    write(foreign / "a", "theirs")
    with pytest.raises(ConfigError, match=rf"root={foreign} already exists and was not written by recspark"):
        claim_root(spark, str(foreign), "root", {}, job="nightly")
    assert snapshot(foreign) == {"a": b"theirs"}
