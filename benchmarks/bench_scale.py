"""Scaling benchmark (issue 4): the whole training job at 2M-20M generated rows, per-stage time and peak memory.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 2m 5m 10m 20m] [--driver-memory 2g] \
        [--json benchmarks/results/scale.json] [--plot benchmarks/results/scale.png]

For each size the project's generator (``jobs/generate_data.py``, item tags
included) writes ``size`` rows for ``size / 20`` users and ``size / 200``
items (1M users and 100k items at 20M) once under ``--cache`` (outside the
repo; reused while ``_SUCCESS`` markers exist). Then the real job runs as a
user runs it: ``./spark-submit.sh --master local[2] --driver-memory 2g
jobs/train.py --conf conf/demo.yaml`` with ALS rank 64 x 10 iterations, WARP
64 components x 5 epochs, no learning curves, evaluation of the test users
(the job's default: a seeded sample of 50k above that many)
and top-10 recommendations for all users, writing its outputs and a sqlite
MLflow store under ``--work``.

Measured:

* per-stage wall time, read back from the job's MLflow run (``time_<stage>_s``),
  grouped into matrix (ingest -> filter -> index -> split), baselines (fit and
  evaluation of popularity and random), ALS fit, WARP fit, evaluation, top-10
  recommendations and saving (each ALS + WARP), and "other" (job wall time
  not in a stage: JVM start, Spark session, MLflow); total is the job's wall
  time, and s/M rows = total per million input rows (flat if time is linear);
* peak RSS, sampled from /proc every ``--interval`` s over the job's process
  tree: the driver JVM (the ``java`` spark-submit starts, including its
  ``local[2]`` executor threads), the Python driver (``jobs/train.py``) and the
  Python workers (every other Python process under the JVM: the pyspark daemon
  and its forked workers), as the peak of their sum and of the largest one,
  with the stage running at each peak. Forked workers share pages with the
  daemon, so the sum overstates real use a little;
* the driver JVM's largest heap occupancy after a GC (``-Xlog:gc``): an upper
  bound of its live data, which RSS does not show (the JVM grows its heap
  towards ``--driver-memory`` whatever it holds).

The claim under test: with ``--driver-memory 2g`` the 20M case completes,
because only item-side state (O(items x components)) and counts reach the
driver. In ``local[2]`` the driver JVM also runs the tasks and holds cached
blocks, so its heap mixes driver and executor memory; ``--master
local-cluster[1,2,10240]' --executor-memory 8g`` moves
the executors into their own JVM (the "exec JVM" column) and leaves the
driver heap to driver state only.

A failed or timed-out job (``--timeout``) stops the benchmark (exit 1) with
the end of its log; ``--json`` is rewritten after every size. On a shared
machine read the times with the load average (printed and in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parents[1]
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
# Table columns: label -> the job's stages (``time_<stage>_s``) summed into it.
GROUPS: dict[str, tuple[str, ...]] = {
    "matrix": ("ingest", "filter", "index", "split"),
    "baselines": ("baselines_fit", "popularity_evaluate", "random_evaluate"),
    "als_fit": ("als_fit",),
    "warp_fit": ("warp_fit",),
    "evaluate": ("als_evaluate", "warp_evaluate"),
    "recommend": ("als_recommend", "warp_recommend"),
    "save": ("als_save", "warp_save"),
}
MEMORY = ("jvm_mb", "py_driver_mb", "workers_sum_mb", "workers_max_mb", "executor_jvm_mb")


def parse_size(text: str) -> int:
    """``2m`` -> 2_000_000, ``200k`` -> 200_000, ``150000`` -> 150_000."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def label(rows: int) -> str:
    return f"{rows / 1e6:g}m" if rows % 100_000 == 0 and rows >= 1_000_000 else f"{rows / 1e3:g}k"


def submit_env() -> dict[str, str]:
    python = str(REPO / ".venv" / "bin" / "python")
    return {**os.environ, "PYSPARK_DRIVER_PYTHON": python, "PYSPARK_PYTHON": python}


# --------------------------------------------------------------------------- memory sampling


def _processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, command name, RSS MB) for every readable process."""
    procs = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            rss_pages = int(Path(f"/proc/{entry}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        procs[int(entry)] = (int(rest[1]), comm, rss_pages * PAGE_MB)
    return procs


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class MemorySampler:
    """Peak RSS of the JVM, the Python driver and the Python workers under process ``root``."""

    root: int
    job: str  # the job script: identifies the Python driver by its command line
    interval: float = 0.5
    peaks: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MEMORY, 0.0))
    peak_times: dict[str, float] = field(default_factory=dict)  # epoch seconds of each peak
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        procs = _processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        jvm = driver = executors = 0.0
        workers: list[float] = []
        stack = [(self.root, False)]  # (pid, has a java ancestor)
        while stack:
            pid, under_java = stack.pop()
            if pid not in procs:
                continue
            _, comm, rss = procs[pid]
            # Children the JVM forks to exec a command (e.g. Hadoop's chmod) briefly share its memory and
            # carry a thread's name, not "java": only java and python processes are counted.
            if comm == "java":  # the driver JVM; under it, local-cluster executor JVMs
                executors, jvm = (executors + rss, jvm) if under_java else (executors, jvm + rss)
            elif comm.startswith("python") and self.job in _cmdline(pid):
                driver += rss
            elif comm.startswith("python") and under_java:
                workers.append(rss)
            stack += [(c, under_java or comm == "java") for c in children.get(pid, [])]
        now = {"jvm_mb": jvm, "py_driver_mb": driver, "workers_sum_mb": sum(workers),
               "workers_max_mb": max(workers, default=0.0), "executor_jvm_mb": executors}
        for key, value in now.items():
            if value > self.peaks[key]:
                self.peaks[key], self.peak_times[key] = value, time.time()
        self.samples += 1

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- running jobs


def run_logged(args: list[str], log: Path, timeout: float, job: str, interval: float) -> tuple[float, MemorySampler]:
    """Run ``args`` (output to ``log``) sampling memory; returns wall seconds and the sampler. Exits on failure."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT, env=submit_env(),
                                start_new_session=True)
        with MemorySampler(proc.pid, job, interval) as sampler:
            try:
                code: int | str = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)  # our own process group only
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                code = f"timeout after {timeout:.0f}s"
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        sys.exit(f"{' '.join(args[:6])} ... failed ({code}); last lines of {log}:\n{tail}")
    return time.perf_counter() - start, sampler


def stage_at(log_text: str, when: float) -> str:
    """The job stage running at epoch time ``when``, from the job log's ``HH:MM:SS ... stage X: started`` lines."""
    clock = time.localtime(when)
    target = clock.tm_hour * 3600 + clock.tm_min * 60 + clock.tm_sec
    current = "startup"
    for hh, mm, ss, name in re.findall(r"^(\d\d):(\d\d):(\d\d) INFO recspark\.runs\.timing: stage (\S+): started",
                                       log_text, re.MULTILINE):
        if int(hh) * 3600 + int(mm) * 60 + int(ss) > target:
            break
        current = name
    return current


def gc_peaks(gc_log: Path) -> dict[str, int]:
    """Largest JVM heap occupancy after a GC (the live set's upper bound) and largest committed heap, MB."""
    unit = {"K": 1 / 1024, "M": 1, "G": 1024}
    after, committed = [0.0], [0.0]
    if gc_log.exists():
        for _, _, a, au, c, cu in re.findall(r"(\d+)([KMG])->(\d+)([KMG])\((\d+)([KMG])\)", gc_log.read_text()):
            after.append(int(a) * unit[au])
            committed.append(int(c) * unit[cu])
    return {"jvm_heap_after_gc_mb": round(max(after)), "jvm_heap_committed_mb": round(max(committed))}


def generate(rows: int, cache: Path, timeout: float) -> float | None:
    """Generate ``rows`` interactions under ``cache`` unless present; returns seconds (None if cached)."""
    if all((cache / d / "_SUCCESS").exists() for d in ("interactions", "item_tags")):
        return None
    cache.mkdir(parents=True, exist_ok=True)
    args = [str(REPO / "spark-submit.sh"), "--master", "local[2]", "--driver-memory", "4g",
            str(REPO / "jobs" / "generate_data.py"), "--conf", str(REPO / "conf" / "generate.yaml"),
            "--set", f"output={cache}", "--set", "spark.master=null",
            "--set", f"synthetic.n_users={rows // 20}", "--set", f"synthetic.n_items={rows // 200}",
            "--set", f"synthetic.n_interactions={rows}", "--set", "synthetic.seed=42"]
    seconds, _ = run_logged(args, cache / "generate.log", timeout, "generate_data.py", 2.0)
    return round(seconds, 1)


def train(data: Path, work: Path, opts: argparse.Namespace) -> tuple[float, dict, str]:
    """Run jobs/train.py through spark-submit.sh; returns wall seconds, memory and the MLflow run id."""
    for stale in ("out", "out.staging", "checkpoints"):
        shutil.rmtree(work / stale, ignore_errors=True)
    for old_gc_log in work.glob("gc.log*"):
        old_gc_log.unlink()
    work.mkdir(parents=True, exist_ok=True)
    sets = [
        "data.generate=null", f"data.path={data}/interactions",
        "als.rank=64", "als.max_iter=10", "als.learning_curve=[]",
        "warp.no_components=64", "warp.epochs=5", "warp.eval_every=0", "warp.train_metrics=false",
        "evaluation.recommend_k=10", f"output.dir={work}/out",
        f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db", f"mlflow.artifact_location={work}/mlruns",
        "mlflow.experiment=bench-scale", "spark.master=null", f"spark.checkpoint_dir={work}/checkpoints",
        f"spark.conf.spark.driver.memory={opts.driver_memory}", *opts.set,
    ]
    args = [str(REPO / "spark-submit.sh"), "--master", opts.master, "--driver-memory", opts.driver_memory,
            # --conf, not --executor-memory: spark-submit drops the latter for local-cluster masters.
            *(["--conf", f"spark.executor.memory={opts.executor_memory}"] if opts.executor_memory else []),
            "--driver-java-options", f"-Xlog:gc:file={work}/gc.log", str(REPO / "jobs" / "train.py"),
            "--conf", str(REPO / "conf" / "demo.yaml"), *[x for s in sets for x in ("--set", s)]]
    seconds, sampler = run_logged(args, work / "train.log", opts.timeout, "jobs/train.py", opts.interval)
    log_text = (work / "train.log").read_text(errors="replace")
    found = re.findall(r"MLflow run (\w+) in experiment", log_text)
    if not found:
        sys.exit(f"no MLflow run id in {work / 'train.log'}")
    memory = {"peak_rss_mb": {k: round(v) for k, v in sampler.peaks.items()},
              "peak_stage": {k: stage_at(log_text, t) for k, t in sampler.peak_times.items()},
              **gc_peaks(work / "gc.log"), "samples": sampler.samples}
    return seconds, memory, found[-1]


def read_run(work: Path, run_id: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{work}/mlflow.db").get_run(run_id).data.metrics


def measure(rows: int, args: argparse.Namespace) -> dict:
    name = label(rows)
    data, work = Path(args.cache) / name, Path(args.work) / name
    gen_s = generate(rows, data, args.timeout)
    load_start = os.getloadavg()
    wall, memory, run_id = train(data, work, args)
    metrics = read_run(work, run_id)
    stages = {k[5:-2]: round(v, 1) for k, v in metrics.items() if k.startswith("time_") and k.endswith("_s")}
    grouped = {g: round(sum(stages.get(s, 0.0) for s in members), 1) for g, members in GROUPS.items()}
    grouped["other"] = round(wall - sum(stages.values()), 1)
    return {
        "size": name, "rows": int(metrics["rows_read"]), "users": int(metrics["n_users"]),
        "items": int(metrics["n_items"]), "train_rows": int(metrics["train_rows"]),
        "test_users": int(metrics.get("test_users", 0)), "total_s": round(wall, 1),
        "s_per_m_rows": round(wall / (metrics["rows_read"] / 1e6), 1), "stages_grouped_s": grouped,
        "stages_s": stages, **memory, "driver_memory": args.driver_memory, "master": args.master,
        "generate_s": gen_s, "mlflow_run": run_id, "work_dir": str(work),
        "load_average": {"start": [round(x, 1) for x in load_start], "end": [round(x, 1) for x in os.getloadavg()]},
    }


# --------------------------------------------------------------------------- report


def table(results: list[dict]) -> str:
    cols = ["size", "rows", "users", "items", *GROUPS, "other", "total s", "s/M rows",
            "JVM MB", "heap after GC MB", "py drv MB", "wrk sum MB", "wrk max MB", "exec JVM MB"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        cells = [r["size"], f"{r['rows']:,}", f"{r['users']:,}", f"{r['items']:,}",
                 *(f"{v:.1f}" for v in r["stages_grouped_s"].values()), f"{r['total_s']:.1f}",
                 f"{r['s_per_m_rows']:.1f}", f"{r['peak_rss_mb']['jvm_mb']:,}", f"{r['jvm_heap_after_gc_mb']:,}",
                 *(f"{r['peak_rss_mb'][k]:,}" for k in MEMORY[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r["rows"] / 1e6 for r in results]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    for group in [*GROUPS, "other"]:
        ax_t.plot(rows, [r["stages_grouped_s"][group] for r in results], "o-", label=group)
    ax_t.plot(rows, [r["total_s"] for r in results], "ks-", label="total")
    ax_t.set(xlabel="rows (millions)", ylabel="wall time (s)", title="Stage wall time (" + ", ".join(dict.fromkeys(r["master"] for r in results)) + ")")
    for key, text in zip(MEMORY, ("driver JVM", "Python driver", "Python workers (sum)", "Python worker (max)",
                                  "executor JVMs (local-cluster)")):
        ax_m.plot(rows, [r["peak_rss_mb"][key] for r in results], "o-", label=text)
    ax_m.plot(rows, [r["jvm_heap_after_gc_mb"] for r in results], "o--", label="driver JVM heap after GC")
    ax_m.set(xlabel="rows (millions)", ylabel="peak RSS (MB)",
             title=f"Peak memory (--driver-memory {results[0]['driver_memory']})")
    for ax in (ax_t, ax_m):
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["2m", "5m", "10m", "20m"],
                        help="interactions per run: 2m, 500k, 200000, ...")
    parser.add_argument("--driver-memory", default="2g", help="spark-submit --driver-memory of the training job")
    parser.add_argument("--executor-memory", default=None,
                        help="executor heap, e.g. 8g (local-cluster: at most the worker's memory); passed to "
                             "spark-submit as --conf spark.executor.memory")
    parser.add_argument("--master", default="local[2]",
                        help="e.g. local-cluster[1,2,6144]: executors in their own JVM, so the driver heap holds "
                             "only driver state (in local[2] it also runs the tasks and caches)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "recspark-scale"),
                        help="generated datasets, one directory per size (reused)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "recspark-scale" / "runs"),
                        help="job outputs, logs and the MLflow store, one directory per size")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per job (generation, training)")
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling interval (s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for the training job (repeatable)")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--plot", help="write a PNG of time and peak memory vs rows here")
    args = parser.parse_args(argv)
    results = []
    for rows in sorted(parse_size(s) for s in args.sizes):
        results.append(measure(rows, args))
        print(json.dumps(results[-1]), flush=True)
        if args.json:  # after every size, so a long run keeps what it has measured
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"results": results}, indent=2))
    print("\n" + table(results))
    print("\nseconds: matrix = ingest+filter+index+split; evaluate/recommend/save = ALS + WARP; other = wall time "
          "outside stages (JVM/Spark start, MLflow). Memory: peak RSS in MB, except 'heap after GC' (largest driver "
          "JVM heap occupancy after a GC, from -Xlog:gc).")
    for r in results:
        print(f"{r['size']}: peaks during stage " + ", ".join(f"{k} {v}" for k, v in r["peak_stage"].items()))
    print("load average (1, 5, 15 min) per size: "
          + "; ".join(f"{r['size']} {r['load_average']['start']} -> {r['load_average']['end']}" for r in results))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
