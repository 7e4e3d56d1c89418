"""Spark ALS with and without a native BLAS, beside implicit's ALS on the same matrix (issue 18, point 6).

    .venv/bin/python benchmarks/bench_als.py [--rows 2m] [--repeats 3] [--implicit-repeats 3] \
        [--variants java native] [--json benchmarks/results/als_blas.json]

Spark ML's ALS does its linear algebra through ``dev.ludovic.netlib``: per
rating a ``dspr`` (rank-1 update of the packed normal equation) and a
``daxpy`` on ``BLAS.nativeBLAS``, per user and item a Cholesky solve
(``dppsv``) on ``LAPACK.nativeLAPACK``. When netlib's JNI wrapper cannot open
a system BLAS it says so (netlib 3.0, Spark 4.1: ``Failed to load
implementation from: dev.ludovic.netlib.blas.JNIBLAS``; netlib 3.2, Spark 4.3:
``netlib-blas: JNI_OnLoad: dlopen(...) failed``) and falls back to Java:
``VectorBLAS`` (the JDK's Vector API) for BLAS and ``F2jLAPACK`` (Fortran
translated to Java) for LAPACK. netlib 3.x opens ``libblas.so.3`` and ``liblapack.so.3`` by default
(the system's alternatives: Debian's ``libopenblas0-pthread`` provides both);
``-Ddev.ludovic.netlib.{blas,lapack}.nativeLibPath=<file or soname>`` points it
elsewhere.

The data: the project's generator (``jobs/generate_data.py``) writes ``rows``
interactions for ``rows / 20`` users and ``rows / 200`` items (the 2M set of
``bench_scale.py``: 100k users, 10k items) once under ``--cache``; the
project's data path (read, validate, deduplicate, 5/5 thresholds, id maps,
holdout split, :func:`~recspark.data.matrix.write_matrix`, all with
``conf/demo.yaml``'s settings) turns it into the train/test matrix once, and
its (user_idx, item_idx, weight) triples are cached as ``matrix.npz``.

Each measured fit runs in a fresh process (the JVM reads its BLAS properties
at start), alternating the variants run by run:

* ``java``: Spark ALS with the native libraries made unloadable
  (``nativeLibPath`` pointing at a missing file): what a node without a system
  BLAS runs;
* ``native``: Spark ALS with netlib's defaults (``libblas.so.3`` /
  ``liblapack.so.3``, or ``--native-lib``) and ``OPENBLAS_NUM_THREADS=1``;
* ``native-mt``: the same without ``OPENBLAS_NUM_THREADS`` (OpenBLAS then
  starts one thread per core on top of Spark's two task threads).

Spark runs are ``local[2]``, ``recspark.session.build_session`` with a
checkpoint directory (as the job), the train split read from the matrix,
cached and counted before the clock starts; the time is
:func:`recspark.models.als.fit_spark_als` alone (rank ``--rank``, the rest of
``conf/demo.yaml``'s ``als`` section: 10 iterations, regParam 0.05, alpha 10,
confidence log1p), which ends with the factors materialised. The driver's log
is checked for the fallback warnings, and the JVM's memory map for the native
library it actually loaded: a variant that did not get the BLAS it claims
fails the benchmark.

implicit 0.7 (``pip install implicit``: a benchmark extra, never an install
requirement) fits the same train matrix with the same factors, iterations,
regularization value and confidence: implicit takes the confidence itself
from the matrix (``C = alpha * data``, ``alpha=1`` here), so it gets ``1 +
10 * log1p(weight)``, Spark's ``1 + alpha * r``. Unlike Spark it does not
scale the regularization by each user's/item's count (Spark's ALS-WR
``regParam * n``), so the objectives differ; ``implicit`` uses its default
conjugate-gradient solver (3 steps), ``implicit-cholesky`` the exact solve
Spark does. Both run with ``num_threads=2``, float32, one BLAS thread.

Quality check: precision@10 on the holdout users (train items excluded) for
every run, and the cosine similarity of each item's factors between the first
``java`` and ``native`` fits (same seed: they should differ by rounding only).

Load average is recorded at the start and end of every run; on a shared
machine read the times with it. CPU seconds (user + system of the process
that runs the fit: the driver JVM in ``local[2]``, implicit's Python process;
all threads, JIT and GC included) depend much less on what else runs than
wall time does.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPARK_VARIANTS = ("java", "native", "native-mt")
IMPLICIT_VARIANTS = ("implicit", "implicit-cholesky")
# netlib falling back to Java: its warning up to 3.0 (Spark 4.1), the JNI wrapper's message from 3.2 (Spark 4.3).
FALLBACK = re.compile(r"Failed to load implementation from: ?dev\.ludovic\.netlib\.(\w+)\.JNI|netlib-(\w+): JNI_OnLoad")
MISSING_LIB = "/nonexistent/recspark-no-native-blas.so"


def parse_size(text: str) -> int:
    """``2m`` -> 2_000_000, ``200k`` -> 200_000."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def loadavg() -> list[float]:
    return [round(x, 1) for x in os.getloadavg()]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train_config(rank: int, blocks: int = 0):
    """conf/demo.yaml with ``rank``; ``blocks`` > 0 sets ALS's user and item block counts (0: recspark's default, one per task slot)."""
    from recspark.config import TrainConfig
    from recspark.config.loading import load_config

    overrides = [f"als.rank={rank}", "data.generate=null"]
    if blocks:
        overrides += [f"als.num_user_blocks={blocks}", f"als.num_item_blocks={blocks}"]
    return load_config(REPO / "conf" / "demo.yaml", TrainConfig, overrides)


# --------------------------------------------------------------------------- data (once)


def generate(rows: int, cache: Path) -> None:
    """The project's generator under ``cache/data``, as ``bench_scale.py`` runs it (skipped when present)."""
    import bench_scale  # beside this file: the benchmarks folder is the script's first import path

    print(f"generating {rows:,} rows under {cache / 'data'} (unless present) ...", flush=True)
    bench_scale.generate(rows, cache / "data", timeout=3600)


def build_matrix(cache: Path, rank: int) -> None:
    """Worker: the project's data path with conf/demo.yaml's settings -> ``matrix/`` and ``matrix.npz``."""
    import pyarrow.parquet as pq

    from recspark.data.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, WEIGHT
    from recspark.data.filtering import apply_min_counts, deduplicate
    from recspark.data.indexing import apply_id_maps, build_id_map, map_size
    from recspark.data.ingest import read_interactions, validate_interactions
    from recspark.data.matrix import write_matrix
    from recspark.data.split import holdout_split
    from recspark.session import build_session

    conf = train_config(rank)
    data, split = conf.data, conf.split
    spark = build_session("local[2]", "bench-als-matrix", {"spark.driver.memory": "4g",
                                                            "spark.sql.shuffle.partitions": "8"})
    raw = read_interactions(spark, str(cache / "data" / "interactions"), user_col=data.user_col,
                            item_col=data.item_col, weight_col=data.weight_col, timestamp_col=data.timestamp_col)
    clean, _ = validate_interactions(raw, rejects_path=str(cache / "rejects"),
                                     max_reject_fraction=data.max_reject_fraction)
    filtered, _ = apply_min_counts(deduplicate(clean, how=data.dedupe),
                                   min_user_interactions=data.min_user_interactions,
                                   min_item_interactions=data.min_item_interactions)
    user_map, item_map = build_id_map(filtered, USER_ID, USER_IDX), build_id_map(filtered, ITEM_ID, ITEM_IDX)
    n_users, n_items = map_size(user_map), map_size(item_map)
    indexed = apply_id_maps(filtered, user_map, item_map).persist()
    result = holdout_split(indexed, test_user_fraction=split.test_user_fraction, k=split.holdout_k, seed=split.seed)
    write_matrix(result.train, result.test, str(cache / "matrix"), n_users=n_users, n_items=n_items)
    spark.stop()
    arrays: dict[str, np.ndarray] = {"shape": np.array([n_users, n_items])}
    for part in ("train", "test"):
        table = pq.read_table(cache / "matrix" / part, columns=[USER_IDX, ITEM_IDX, WEIGHT])
        arrays[f"{part}_user"] = table[USER_IDX].to_numpy().astype(np.int32)
        arrays[f"{part}_item"] = table[ITEM_IDX].to_numpy().astype(np.int32)
        arrays[f"{part}_weight"] = table[WEIGHT].to_numpy().astype(np.float32)
    np.savez(cache / "matrix.npz", **arrays)


def load_matrix(cache: Path) -> dict[str, np.ndarray]:
    with np.load(cache / "matrix.npz") as z:
        return {k: z[k] for k in z.files}


def train_csr(m: dict[str, np.ndarray], alpha: float):
    """Users x items, data = Spark's confidence ``1 + alpha * log1p(weight)`` (conf/demo.yaml: log1p)."""
    import scipy.sparse as sp

    conf = 1.0 + alpha * np.log1p(m["train_weight"].astype(np.float64))
    return sp.csr_matrix((conf.astype(np.float32), (m["train_user"], m["train_item"])), shape=tuple(m["shape"]))


# --------------------------------------------------------------------------- one fit (a fresh process)


def java_options(variant: str, native_lib: str | None) -> str:
    if variant == "java":
        lib, lapack = MISSING_LIB, MISSING_LIB
    elif native_lib:
        lib = lapack = native_lib
    else:
        return ""  # netlib's defaults: libblas.so.3, liblapack.so.3
    return f"-Ddev.ludovic.netlib.blas.nativeLibPath={lib} -Ddev.ludovic.netlib.lapack.nativeLibPath={lapack}"


def spark_fit(cache: Path, out: Path, variant: str, rank: int, native_lib: str | None, driver_memory: str,
              blocks: int, extra_conf: list[str]) -> dict:
    """Worker: one Spark ALS fit; writes factors to ``out`` and returns timings and what BLAS the JVM used."""
    from pyspark import StorageLevel

    from recspark.data.matrix import read_matrix
    from recspark.models.als import factor_frames, fit_spark_als
    from recspark.session import build_session

    als = train_config(rank, blocks).als
    opts = java_options(variant, native_lib)
    conf = {"spark.driver.memory": driver_memory, "spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false",
            **({"spark.driver.extraJavaOptions": opts, "spark.executor.extraJavaOptions": opts} if opts else {}),
            **dict(item.split("=", 1) for item in extra_conf)}
    load_start = loadavg()
    spark = build_session("local[2]", f"bench-als-{variant}", conf, checkpoint_dir=str(out / "checkpoints"))
    matrix = read_matrix(spark, str(cache / "matrix"))
    train = matrix.train.persist(StorageLevel.MEMORY_AND_DISK)
    rows = train.count()
    jvm = spark._jvm
    pid = jvm.java.lang.ProcessHandle.current().pid()  # local[2]: the tasks run in the driver JVM
    cpu, start = process_cpu_s(pid), time.perf_counter()
    model = fit_spark_als(train, als)
    fit_s, cpu_s = time.perf_counter() - start, process_cpu_s(pid) - cpu
    module = lambda name: jvm.java.lang.Class.forName(name + "$").getField("MODULE$").get(None)  # noqa: E731
    blas = module("org.apache.spark.ml.linalg.BLAS").nativeBLAS().getClass().getSimpleName()
    lapack = module("org.apache.spark.mllib.linalg.LAPACK").nativeLAPACK().getClass().getSimpleName()
    libs = sorted({line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                   if re.search(r"/lib[^/]*(blas|lapack)[^/]*\.so", line) and "netlib" not in line})
    users, items = factor_frames(model)
    for name, frame, n, col in (("user", users, matrix.n_users, "user_idx"),
                                ("item", items, matrix.n_items, "item_idx")):
        pdf = frame.toPandas()
        factors = np.zeros((n, als.rank), dtype=np.float32)
        factors[pdf[col].to_numpy()] = np.stack(pdf["features"].to_numpy()).astype(np.float32)
        np.save(out / f"{name}_factors.npy", factors)
    version, slots = spark.version, spark.sparkContext.defaultParallelism
    spark.stop()
    return {"variant": variant, "blocks": blocks or slots, "spark": version, "fit_s": round(fit_s, 1), "cpu_s": round(cpu_s, 1),
            "train_rows": rows, "blas": blas, "lapack": lapack, "native_libs": libs, "java_options": opts,
            "load_start": load_start, "load_end": loadavg(),
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "spark_conf": extra_conf}


def implicit_fit(cache: Path, out: Path, variant: str, rank: int) -> dict:
    """Worker: one implicit ALS fit on the same train matrix."""
    from threadpoolctl import threadpool_limits

    from implicit.cpu.als import AlternatingLeastSquares

    als = train_config(rank).als
    csr = train_csr(load_matrix(cache), als.alpha)
    model = AlternatingLeastSquares(factors=als.rank, regularization=als.reg_param, alpha=1.0,
                                    iterations=als.max_iter, use_cg=variant == "implicit", dtype=np.float32,
                                    num_threads=2, random_state=als.seed, calculate_training_loss=False)
    load_start = loadavg()
    with threadpool_limits(1, "blas"):
        cpu, start = time.process_time(), time.perf_counter()
        model.fit(csr, show_progress=False)
        fit_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    np.save(out / "user_factors.npy", model.user_factors)
    np.save(out / "item_factors.npy", model.item_factors)
    import implicit

    return {"variant": variant, "fit_s": round(fit_s, 1), "cpu_s": round(cpu_s, 1), "train_rows": int(csr.nnz),
            "implicit": implicit.__version__, "load_start": load_start, "load_end": loadavg()}


# --------------------------------------------------------------------------- quality


def precision_at_10(m: dict[str, np.ndarray], users_f: np.ndarray, items_f: np.ndarray, block: int = 2048) -> float:
    """Mean precision@10 over holdout users, train items excluded (a sanity check, not the project's evaluator)."""
    import scipy.sparse as sp

    n_users, n_items = (int(x) for x in m["shape"])
    train = sp.csr_matrix((np.ones(len(m["train_user"]), np.float32), (m["train_user"], m["train_item"])),
                          shape=(n_users, n_items))
    test = sp.csr_matrix((np.ones(len(m["test_user"]), np.float32), (m["test_user"], m["test_item"])),
                         shape=(n_users, n_items))
    test_users = np.flatnonzero(np.diff(test.indptr))
    hits = 0.0
    for lo in range(0, len(test_users), block):
        u = test_users[lo:lo + block]
        scores = users_f[u] @ items_f.T
        seen = train[u]
        scores[np.repeat(np.arange(len(u)), np.diff(seen.indptr)), seen.indices] = -np.inf
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        hits += test[u][np.arange(len(u))[:, None], top].sum()
    return round(float(hits / (10 * len(test_users))), 4)


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    keep = (np.linalg.norm(a, axis=1) > 0) & (np.linalg.norm(b, axis=1) > 0)
    a, b = a[keep], b[keep]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min": round(float(cos.min()), 6), "p01": round(float(np.quantile(cos, 0.01)), 6),
            "median": round(float(np.median(cos)), 6), "items": int(keep.sum())}


# --------------------------------------------------------------------------- driver


def run_worker(args: argparse.Namespace, variant: str, blocks: int, index: int) -> dict:
    out = Path(args.work) / f"{variant}-{blocks or 'default'}b-{index}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    env.pop("OPENBLAS_NUM_THREADS", None)
    if variant != "native-mt":
        env["OPENBLAS_NUM_THREADS"] = "1"
    cmd = [sys.executable, __file__, "--worker", variant, "--cache", args.cache, "--out", str(out),
           "--rank", str(args.rank), "--driver-memory", args.driver_memory, "--blocks", str(blocks),
           *(["--native-lib", args.native_lib] if args.native_lib else []),
           *(arg for item in args.spark_conf for arg in ("--spark-conf", item))]
    log = out / "worker.log"
    with log.open("w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=args.timeout).returncode
    text = log.read_text(errors="replace")
    if code != 0:
        sys.exit(f"{variant} run {index} failed ({code}); end of {log}:\n" + "\n".join(text.splitlines()[-30:]))
    result = json.loads(text.strip().splitlines()[-1])
    if variant in SPARK_VARIANTS:
        result["fallback_warnings"] = sorted({a or b for a, b in FALLBACK.findall(text)})
        native = variant != "java"
        if native != (result["blas"] == "JNIBLAS" and result["lapack"] == "JNILAPACK") or native == bool(
                result["fallback_warnings"]):
            sys.exit(f"{variant} run {index} did not get the BLAS it measures: {result} (log {log}); "
                     "is a native BLAS installed (apt-get install libopenblas0-pthread)?")
    result["factors"] = str(out)
    return result


def summary(results: list[dict]) -> list[dict]:
    rows = []
    for variant, blocks in dict.fromkeys((r["variant"], r.get("blocks")) for r in results):
        runs = [r for r in results if (r["variant"], r.get("blocks")) == (variant, blocks)]
        times = [r["fit_s"] for r in runs]
        cpus = [r["cpu_s"] for r in runs if "cpu_s" in r]
        row = {"variant": variant, "blocks": blocks, "runs": len(runs), "median_s": round(statistics.median(times), 1),
               "min_s": min(times), "max_s": max(times),
               "cpu_median_s": round(statistics.median(cpus), 1) if cpus else None,
               "p_at_10": statistics.median(r["p_at_10"] for r in runs),
               "load_1m": [r["load_start"][0] for r in runs]}
        if variant in SPARK_VARIANTS:
            row["impl"] = f"{runs[0]['blas']} + {runs[0]['lapack']}"
        else:
            row["impl"] = f"implicit {runs[0]['implicit']} ({'CG' if variant == 'implicit' else 'Cholesky'})"
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    java = next((r for r in rows if r["variant"] == "java"), None)
    lines = ["| variant | blocks | BLAS / LAPACK | runs | fit s median | min | max | vs java | CPU s median | vs java "
             "| p@10 | load (1 min) at start |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{java['median_s'] / r['median_s']:.2f}x" if java else ""
        cpu = f"{r['cpu_median_s']:.1f}" if r["cpu_median_s"] else ""
        cpu_ratio = f"{java['cpu_median_s'] / r['cpu_median_s']:.2f}x" if java and java["cpu_median_s"] and \
            r["cpu_median_s"] else ""
        lines.append(f"| {r['variant']} | {r['blocks'] or ''} | {r['impl']} | {r['runs']} | {r['median_s']:.1f} | {r['min_s']:.1f} | "
                     f"{r['max_s']:.1f} | {ratio} | {cpu} | {cpu_ratio} | {r['p_at_10']:.4f} | "
                     f"{', '.join(f'{x:.1f}' for x in r['load_1m'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="2m", help="generated interactions (rows/20 users, rows/200 items)")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--variants", nargs="+", default=["java", "native"], choices=SPARK_VARIANTS)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each Spark variant, alternating")
    parser.add_argument("--blocks", nargs="+", type=int, default=[0],
                        help="ALS user and item block counts to compare (0: recspark's default, one per task slot; "
                             "Spark's own default is 10)")
    parser.add_argument("--implicit", nargs="*", default=list(IMPLICIT_VARIANTS), choices=IMPLICIT_VARIANTS)
    parser.add_argument("--implicit-repeats", type=int, default=3)
    parser.add_argument("--native-lib", help="file or soname for netlib's nativeLibPath (default: netlib's "
                                             "libblas.so.3 / liblapack.so.3)")
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="extra Spark setting for the Spark fits, e.g. "
                             "spark.serializer=org.apache.spark.serializer.KryoSerializer (repeatable)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "als-bench"),
                        help="generated data, matrix and npz (reused)")
    parser.add_argument("--work", default=None, help="per-run logs and factors (default: <cache>/runs)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--json", help="write all runs and the summary here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = Path(args.cache)
    if args.worker == "matrix":
        build_matrix(cache, args.rank)
        return
    if args.worker in SPARK_VARIANTS:
        print(json.dumps(spark_fit(cache, Path(args.out), args.worker, args.rank, args.native_lib, args.driver_memory,
                                   args.blocks[0], args.spark_conf)))
        return
    if args.worker in IMPLICIT_VARIANTS:
        print(json.dumps(implicit_fit(cache, Path(args.out), args.worker, args.rank)))
        return
    args.work = args.work or str(cache / "runs")
    load_start = loadavg()
    generate(parse_size(args.rows), cache)
    if not (cache / "matrix.npz").exists():
        print("building the matrix ...", flush=True)
        subprocess.run([sys.executable, __file__, "--worker", "matrix", "--cache", str(cache)], check=True,
                       env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1",
                            "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    m = load_matrix(cache)
    print(f"matrix: {int(m['shape'][0]):,} users x {int(m['shape'][1]):,} items, {len(m['train_user']):,} train "
          f"rows, {len(m['test_user']):,} test rows; load {load_start}", flush=True)
    plan = [(v, b) for i in range(args.repeats) for v in args.variants for b in args.blocks] + \
        [(v, 0) for v in args.implicit for _ in range(args.implicit_repeats)]
    results = []
    for variant, blocks in plan:
        index = sum(r["variant"] == variant and r["requested_blocks"] == blocks for r in results)
        result = {**run_worker(args, variant, blocks, index), "requested_blocks": blocks}
        f = Path(result["factors"])
        result["p_at_10"] = precision_at_10(m, np.load(f / "user_factors.npy"), np.load(f / "item_factors.npy"))
        results.append(result)
        print(f"{variant} ({result.get('blocks')} blocks) #{index}: fit {result['fit_s']} s ({result.get('cpu_s')} CPU s), p@10 {result['p_at_10']}, "
              f"load {result['load_start']} -> {result['load_end']}"
              + (f", {result['blas']}/{result['lapack']} {result['native_libs']}" if "blas" in result else ""),
              flush=True)
    firsts = {r["variant"]: Path(r["factors"]) for r in reversed(results)}
    cosine = None
    if "java" in firsts and "native" in firsts:
        cosine = cosine_stats(np.load(firsts["java"] / "item_factors.npy"),
                              np.load(firsts["native"] / "item_factors.npy"))
    rows = summary(results)
    print()
    print(table(rows))
    print(f"\nrank {args.rank}, {len(m['train_user']):,} train rows, local[2]; load average "
          f"{load_start} at start, {loadavg()} at end")
    if cosine:
        print(f"item factors, java vs native (first runs): cosine min {cosine['min']}, 1st percentile "
              f"{cosine['p01']}, median {cosine['median']} over {cosine['items']:,} items")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"summary": rows, "runs": results, "cosine_java_native": cosine,
                                               "load_start": load_start, "load_end": loadavg(),
                                               "rank": args.rank, "rows": args.rows}, indent=2))


if __name__ == "__main__":
    main()
