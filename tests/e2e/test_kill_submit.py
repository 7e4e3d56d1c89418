"""kill -9 (and SIGTERM) the jobs at their worst moments, through ``./spark-submit.sh`` as a scheduler runs them.

SIGKILL cannot be caught: nothing in the job gets to clean up. Each kill takes
the job's whole process group (the wrapper, spark-submit's JVM, the Python
driver and its Spark workers: the job runs in a session of its own) and is
timed on what the job shows from outside, never on a hook in production code:

- WARP training: the driver's ``warp epoch 2/4`` line (epochs 3-4 are then
  being trained);
- the training job's publish: the moment ``<out>.previous`` appears, i.e.
  between the two renames of :meth:`recspark.runs.outputs.StagedOutput.commit`
  (or just after the second);
- the nightly's registration: SIGTERM to its Python driver (a scheduler's
  stop) at the ``stage register: started`` line: exit 143, run KILLED;
- the nightly's publish: the moment the temporary ``_CURRENT`` file appears
  (:func:`recspark.runs.publish.switch_pointer`), before or just after its
  rename, before the ``champion`` alias moves.

The nightly chain also carries the nightly's other spark-submit checks (the
package runs as a zip there): a rejected candidate exits 5 and leaves the
champion, and the champion's pyfunc serves from the registry.

After every kill the previous output (sha256 of every file), the champion and
``_CURRENT`` are unchanged, or the new output is complete (never a mix), and
the next run, started as a scheduler would, repairs what the kill left and
succeeds. Data: a few thousand uniform random interactions written with
pyarrow (no Spark in the test process); runs are reused across assertions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
MARKER = "_RECSPARK_OUTPUT"
JOB_TIMEOUT = 600  # seconds per run: a hang fails the test instead of stalling CI
MODEL = "kill-test"

pytestmark = [pytest.mark.spark, pytest.mark.e2e]


def write_interactions(path: Path, *, n_users: int = 200, n_items: int = 80, per_user: int = 12,
                       seed: int = 0) -> None:
    """``per_user`` distinct random items per user (user_id, item_id, weight, timestamp), one Parquet file."""
    rng = np.random.default_rng(seed)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    table = pa.table({
        "user_id": [f"u{u:04d}" for u in np.repeat(np.arange(n_users), per_user)],
        "item_id": [f"i{i:03d}" for i in items],
        "weight": rng.integers(1, 4, len(items)).astype(np.float64),
        "timestamp": pa.array(1_750_000_000_000_000 + rng.integers(0, 10**12, len(items)), pa.timestamp("us")),
    })
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-00000.parquet")


def tree_hashes(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path``, by relative path (empty when ``path`` does not exist)."""
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


def assert_complete(out: Path, run_id: str) -> None:
    """``out`` is one run's whole output: its marker names ``run_id`` and lists exactly the files present."""
    marker = json.loads((out / MARKER).read_text())
    assert marker["run_id"] == run_id, (out, marker["run_id"], run_id)
    present = {name for name in tree_hashes(out) if name != MARKER and not Path(name).name.endswith(".crc")}
    assert present == set(marker["files"]), f"{out}: {sorted(present ^ set(marker['files']))[:5]}"


class Job:
    """A ``spark-submit.sh`` run in its own session; its merged output is streamed to ``log`` and to ``on_line``."""

    def __init__(self, args: list[str], cwd: Path, log: Path,
                 on_line: Callable[[Job, str], None] | None = None) -> None:
        env = {**os.environ, "PYSPARK_DRIVER_PYTHON": sys.executable, "PYSPARK_PYTHON": sys.executable,
               "SPARK_LOCAL_IP": "127.0.0.1"}
        self.proc = subprocess.Popen([str(REPO / "spark-submit.sh"), *args], cwd=cwd, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)
        self.log, self.lines, self.killed_at = log, [], None  # killed_at: the number of lines seen at the kill
        self.on_line = on_line
        self.errors: list[BaseException] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.log, "w", buffering=1) as out:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.lines.append(line)
                out.write(line)
                if self.on_line is not None:
                    try:
                        self.on_line(self, line)
                    except Exception as err:  # noqa: BLE001 - keep draining the pipe; the test reports it
                        self.errors.append(err)

    def kill(self) -> None:
        """SIGKILL the whole process group (the job's session), once, remembering when."""
        if self.killed_at is None and self.proc.poll() is None:
            self.killed_at = len(self.lines)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self) -> int:
        try:
            self.proc.wait(timeout=JOB_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the job did not finish within {JOB_TIMEOUT}s; log: {self.log}")
        self.reader.join(timeout=30)
        assert not self.errors, self.errors
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def run_id(self) -> str:
        match = re.search(r"MLflow run ([0-9a-f]{32})", self.output)
        assert match, f"no MLflow run id in the log {self.log}"
        return match.group(1)

    def assert_group_gone(self) -> None:
        """No live process is left in the job's process group (zombies awaiting their reaper aside)."""
        deadline = time.monotonic() + 10
        while True:
            alive = []
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError):
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    if int(fields[2]) == self.proc.pid and fields[0] != "Z":
                        alive.append(stat.parent.name)
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not alive, f"processes of the killed job still running: {alive}"

    def tail(self) -> str:
        return "".join(line for line in self.lines if not line.lstrip().startswith("at "))[-4000:]


def kill_when(job: Job, appeared: Callable[[], bool]) -> None:
    """Poll every ~0.2 ms (the windows last a few ms) until ``appeared()``, then kill; stops when the job ends."""
    def poll() -> None:
        while job.proc.poll() is None:
            if appeared():
                job.kill()
                return
            time.sleep(0.0002)
    threading.Thread(target=poll, daemon=True).start()


def submit_args(tmp: Path, job: str, conf: str, sets: list[str]) -> list[str]:
    return ["--master", "local[2]", "--driver-memory", "1g", "--conf", "spark.ui.enabled=false",
            "--conf", f"spark.local.dir={tmp}/spark-local", str(REPO / "jobs" / f"{job}.py"),
            "--conf", str(REPO / "conf" / f"{conf}.yaml"), *[x for s in sets for x in ("--set", s)]]


# --------------------------------------------------------------------------- training job


def train_sets(tmp: Path) -> list[str]:
    """conf/demo.yaml shrunk to tiny data, WARP only: 4 epochs in two Spark jobs (a state every 2 epochs)."""
    return [f"data.path={tmp}/interactions", "data.generate=null", "data.min_user_interactions=2",
            "data.min_item_interactions=2", "split.holdout_k=2", f"output.dir={tmp}/out",
            f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/mlruns",
            "mlflow.experiment=kill", f"spark.checkpoint_dir={tmp}/checkpoints", "als.enabled=false",
            "warp.epochs=4", "warp.eval_every=2", "warp.train_metrics=false", "warp.no_components=8",
            "warp.n_shards=1", "spark.conf.spark.sql.shuffle.partitions=2"]


def train(tmp: Path, name: str, on_line: Callable[[Job, str], None] | None = None) -> Job:
    job = Job(submit_args(tmp, "train", "demo", train_sets(tmp)), tmp, tmp / f"{name}.log", on_line)
    job.wait()
    return job


def training_chain(tmp_path: Path) -> None:
    """kill -9 during WARP training and during publish: the output stays whole, the next run succeeds."""
    out, staging, previous = tmp_path / "out", tmp_path / "out.staging", tmp_path / "out.previous"
    write_interactions(tmp_path / "interactions")
    first = train(tmp_path, "first")
    assert first.proc.returncode == 0, first.tail()
    assert_complete(out, first.run_id())
    before = tree_hashes(out)

    # 1. During WARP training: the line of epoch 2 is logged while epochs 3-4 are being trained.
    def at_epoch_2(job: Job, line: str) -> None:
        if re.search(r"\bwarp epoch +2/4\b", line):
            job.kill()

    killed = train(tmp_path, "killed-in-warp", at_epoch_2)
    assert killed.killed_at is not None and killed.proc.returncode == -signal.SIGKILL, killed.tail()
    assert "stage warp_fit: started" in killed.output
    assert not re.search(r"stage warp_fit: [\d.]+s", "".join(killed.lines[:killed.killed_at])), \
        "the kill landed after WARP training had ended"
    killed.assert_group_gone()
    assert tree_hashes(out) == before, "the published output changed"
    assert not previous.exists()
    assert (staging / MARKER).exists()  # the killed run's partial output: ours, so the next run may delete it

    # 2. During publish: kill as soon as the old output has been moved aside (between the two renames).
    def at_publish(job: Job, line: str) -> None:
        if "stage warp_save: " in line and "started" not in line:  # saved: publish is next
            kill_when(job, previous.exists)

    in_publish = train(tmp_path, "killed-in-publish", at_publish)
    assert in_publish.killed_at is not None and in_publish.proc.returncode == -signal.SIGKILL, in_publish.tail()
    assert f"deleting {staging} left by a run that did not finish" in in_publish.output  # repaired kill 1
    in_publish.assert_group_gone()
    if out.exists() and tree_hashes(out) != before:
        assert_complete(out, in_publish.run_id())  # killed after the commit: the whole new output
    elif not out.exists():
        assert tree_hashes(previous) == before, "killed between the renames: the old output must be intact aside"
        assert_complete(staging, in_publish.run_id())
    leftovers = {p.name for p in tmp_path.iterdir() if p.name.startswith("out")}
    assert leftovers <= {"out", "out.staging", "out.previous"}, leftovers

    # The next run repairs whatever the kill left, succeeds and publishes a complete output.
    restored = not out.exists()
    after = train(tmp_path, "after")
    assert after.proc.returncode == 0, after.tail()
    assert ("restoring" in after.output) == restored
    assert_complete(out, after.run_id())
    assert not staging.exists() and not previous.exists()


# --------------------------------------------------------------------------- nightly job


def night(tmp: Path, date: str, name: str, on_line: Callable[[Job, str], None] | None = None,
          tolerance: float = 1.0) -> Job:
    """One night of conf/nightly.yaml on tiny data; tolerance 1 (the default here): every candidate is promoted."""
    sets = [f"data.path={tmp}/snapshots/{{date}}/interactions", f"root={tmp}/nightly",
            f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/mlruns",
            f"promotion.registered_model={MODEL}", f"promotion.tolerance={tolerance}", "warp.no_components=8",
            "warp.epochs=2", "warp.n_shards=1", "split.holdout_k=2", "data.min_user_interactions=2",
            "data.min_item_interactions=2", f"spark.checkpoint_dir={tmp}/checkpoints",
            "spark.conf.spark.sql.shuffle.partitions=2"]
    job = Job([*submit_args(tmp, "nightly", "nightly", sets), "--date", date], tmp, tmp / f"{name}.log", on_line)
    job.wait()
    return job


def python_driver(jvm: int) -> int:
    """The pid of the job's Python driver: spark-submit's JVM (the wrapper execs into it) starts it as its child."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            pid, rest = stat.read_text().split(" ", 1)
            if int(rest.rsplit(")", 1)[1].split()[1]) == jvm and b"nightly.py" in (stat.parent / "cmdline").read_bytes():
                return int(pid)
    raise AssertionError(f"no Python driver under spark-submit's JVM {jvm}")


def nightly_chain(tmp_path: Path) -> None:
    """Night 1 is promoted. Night 2 is stopped by SIGTERM while registering (a scheduler's kill: exit 143,
    the MLflow run KILLED), then its retry is killed -9 during publish; neither changes what a reader
    or the registry sees, and the next retry is promoted. Night 3 is rejected by the gate (exit 5)."""
    root, pointer_file = tmp_path / "nightly", tmp_path / "nightly" / "_CURRENT"
    dates = ("2026-11-21", "2026-11-22", "2026-11-23")
    for seed, date in enumerate(dates):
        write_interactions(tmp_path / "snapshots" / date / "interactions", seed=seed)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")

    first = night(tmp_path, dates[0], "first")
    assert first.proc.returncode == 0, first.tail()
    pointer = pointer_file.read_text()
    assert pointer.startswith(f"runs/{dates[0]}/")
    live = root / pointer.strip()
    published = tree_hashes(live)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["recspark.run_dir"] == str(live)

    def unchanged(what: str) -> None:
        assert tree_hashes(live) == published, f"{what}: the published run folder changed"
        assert client.get_model_version_by_alias(MODEL, "champion").version == champion.version, what

    # 1. SIGTERM to the Python driver once registration starts: the job ends itself, cleanly.
    terminated: list[int] = []

    def term_at_register(job: Job, line: str) -> None:
        if "stage register: started" in line and not terminated:
            terminated.append(len(job.lines))
            os.kill(python_driver(job.proc.pid), signal.SIGTERM)

    stopped = night(tmp_path, dates[1], "sigterm-in-register", term_at_register)
    assert terminated and stopped.proc.returncode == 143, stopped.tail()  # README: 143 = stopped by SIGTERM
    assert "job stopped by SIGTERM (exit 143)" in stopped.output and "Traceback" not in stopped.output
    assert pointer_file.read_text() == pointer
    unchanged("after SIGTERM")
    run = client.get_run(stopped.run_id())
    assert run.info.status == "KILLED"
    assert run.data.tags["recspark.outcome"] == "killed" and run.data.tags["recspark.failed_stage"] == "register"
    snapshot = pq.read_table(tmp_path / "snapshots" / dates[1] / "interactions")
    assert run.data.metrics["rows_read"] == snapshot.num_rows and "time_recommend_s" in run.data.metrics

    # 2. The retry, killed -9 once the temporary _CURRENT appears (the pointer switch, right after registration).
    def temporary_pointer() -> bool:
        return any(n.startswith("._CURRENT.") and n.endswith(".tmp") for n in os.listdir(root))

    def at_register(job: Job, line: str) -> None:
        if "stage register: started" in line:
            kill_when(job, temporary_pointer)

    killed = night(tmp_path, dates[1], "killed-in-publish", at_register)
    assert killed.killed_at is not None and killed.proc.returncode == -signal.SIGKILL, killed.tail()
    killed.assert_group_gone()
    unchanged("after kill -9")
    now = pointer_file.read_text()
    if now != pointer:  # killed just after the rename: readers get the new, complete set (docs/nightly.md)
        assert now.strip() == f"runs/{dates[1]}/{killed.run_id()}", now
        assert (root / now.strip() / "recommendations" / "_SUCCESS").exists()

    # 3. The scheduler's next retry of the date: promoted; pointer and champion name the same complete run,
    # and the stopped attempt's folder is gone.
    after = night(tmp_path, dates[1], "after")
    assert after.proc.returncode == 0, after.tail()
    current = root / pointer_file.read_text().strip()
    assert current == root / "runs" / dates[1] / after.run_id()
    assert (current / "recommendations" / "_SUCCESS").exists()
    assert client.get_model_version_by_alias(MODEL, "champion").tags["recspark.run_dir"] == str(current)
    assert not (root / "runs" / dates[1] / stopped.run_id()).exists()
    assert not temporary_pointer(), "a temporary pointer file was left behind"

    # 4. Tolerance -1: the candidate must beat the champion by a whole p@5 point, so it is rejected.
    third = night(tmp_path, dates[2], "rejected", tolerance=-1.0)
    assert third.proc.returncode == 5, third.tail()
    assert root / pointer_file.read_text().strip() == current
    assert client.get_model_version_by_alias(MODEL, "champion").tags["nightly.date"] == dates[1]
    versions = [v.tags for v in client.search_model_versions(f"name = '{MODEL}'")]
    assert any(tags.get("nightly.date") == dates[2] and "rejected" in tags for tags in versions)

    # The champion serves from the registry, Spark-free (the pyfunc's code came from the zipped package).
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    finally:
        mlflow.set_tracking_uri(None)
    user = snapshot.column("user_id")[0].as_py()
    recs = model.predict(pd.DataFrame({"user_id": [user]}), params={"k": 3})
    assert list(recs["rank"]) == [1, 2, 3] and set(recs["source"]) == {"model"}


def test_kill_9_and_sigterm_over_the_whole_run_keep_outputs_pointer_and_champion(tmp_path):
    """Both chains at once (each in its own folder and MLflow store): 9 spark-submit runs in the time of ~5."""
    (tmp_path / "train").mkdir()
    (tmp_path / "nightly").mkdir()
    with ThreadPoolExecutor(2) as pool:
        chains = [pool.submit(training_chain, tmp_path / "train"), pool.submit(nightly_chain, tmp_path / "nightly")]
        for chain in chains:
            chain.result()  # re-raises a chain's failed assertion
