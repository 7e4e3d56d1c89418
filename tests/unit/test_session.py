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


def test_a_launch_setting_warns_only_when_the_running_driver_differs():
    """The demo's spark.driver.memory: 4g is what run.sh passes as --driver-memory 4g: no warning for it."""
    from recspark.session import launch_only_mismatches

    running = {"spark.driver.memory": "4g"}.get
    assert launch_only_mismatches({"spark.driver.memory": "4g"}, running) == []
    assert launch_only_mismatches({"spark.driver.memory": "4096m"}, running) == []
    assert launch_only_mismatches({"spark.driver.memory": "8g"}, running) == [("spark.driver.memory", "8g", "4g")]
    assert launch_only_mismatches({"spark.driver.memory": "1g"}, {}.get) == []  # spark-submit's default
    assert launch_only_mismatches({"spark.driver.extraJavaOptions": "-Dx=1"}, {}.get) == [
        ("spark.driver.extraJavaOptions", "-Dx=1", None)]
    assert launch_only_mismatches({"spark.sql.shuffle.partitions": "8"}, {}.get) == []


def test_spark_submit_sh_binds_local_masters_to_loopback(tmp_path):
    """As run.sh does: SPARK_LOCAL_IP=127.0.0.1 for local masters (and spark-submit's default), not for clusters."""
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    fake = tmp_path / "spark" / "bin"
    fake.mkdir(parents=True)
    (fake / "spark-submit").write_text('#!/bin/sh\necho "SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-unset}"\n')
    (fake / "spark-submit").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SPARK_LOCAL_IP"}
    env.update(SPARK_HOME=str(tmp_path / "spark"), RECSPARK_SKIP_CONFIG_CHECK="1")

    def submit(*opts: str) -> str:
        out = subprocess.run([str(repo / "spark-submit.sh"), *opts, "jobs/train.py"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip().splitlines()[-1]

    assert submit("--master", "local[2]") == "SPARK_LOCAL_IP=127.0.0.1"
    assert submit() == "SPARK_LOCAL_IP=127.0.0.1"
    assert submit("--master=local[*]") == "SPARK_LOCAL_IP=127.0.0.1"
    assert submit("--master", "spark://10.0.0.5:7077") == "SPARK_LOCAL_IP=unset"
    assert submit("--master", "yarn", "--deploy-mode", "client") == "SPARK_LOCAL_IP=unset"


def test_spark_submit_sh_points_spark_ml_at_a_native_blas_on_local_masters(tmp_path):
    """Issue 18: netlib gets OpenBLAS (BLAS and LAPACK, one thread per task) when the loader knows it, merged into
    the driver's Java options; not with RECSPARK_NATIVE_BLAS=0, your own netlib options, or a cluster master."""
    import json
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    fake = tmp_path / "spark" / "bin"
    fake.mkdir(parents=True)
    (fake / "spark-submit").write_text(
        '#!/usr/bin/env python3\nimport json, os, sys\n'
        'print(json.dumps({"args": sys.argv[1:], "threads": os.environ.get("OPENBLAS_NUM_THREADS")}))\n')
    (fake / "spark-submit").chmod(0o755)
    tools = tmp_path / "tools"  # a fake ldconfig first on PATH: what the dynamic loader "knows"
    tools.mkdir()
    lib = tmp_path / "lib" / "libopenblas.so.0"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    base = {k: v for k, v in os.environ.items() if k not in ("RECSPARK_NATIVE_BLAS", "OPENBLAS_NUM_THREADS")}
    base.update(SPARK_HOME=str(tmp_path / "spark"), RECSPARK_SKIP_CONFIG_CHECK="1",
                PATH=f"{tools}{os.pathsep}{base['PATH']}")

    def submit(*opts: str, ldconfig: str = "", **env: str) -> tuple[list[str], str | None]:
        (tools / "ldconfig").write_text(f"#!/bin/sh\nprintf '%b' '{ldconfig}'\n")
        (tools / "ldconfig").chmod(0o755)
        out = subprocess.run([str(repo / "spark-submit.sh"), *opts, "jobs/train.py"], cwd=tmp_path,
                             env={**base, **env}, capture_output=True, text=True, timeout=60, check=True)
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        return seen["args"], seen["threads"]

    def java_opts(args: list[str], flag: str) -> list[str]:
        return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]

    netlib = (f"-Ddev.ludovic.netlib.blas.nativeLibPath={lib} "
              f"-Ddev.ludovic.netlib.lapack.nativeLibPath={lib}")
    # An explicit library: merged into the log4j options (one --driver-java-options), one BLAS thread.
    args, threads = submit("--master", "local[2]", RECSPARK_NATIVE_BLAS=str(lib))
    [driver] = java_opts(args, "--driver-java-options")
    assert "-Dlog4j2.configurationFile=" in driver and driver.endswith(netlib) and threads == "1"
    # Found by the loader: its soname; merged into your own driver options; your thread count is kept.
    loader = "\\tlibopenblas.so.0 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libopenblas.so.0\\n"
    args, threads = submit("--driver-java-options", "-Dmine=1", ldconfig=loader, OPENBLAS_NUM_THREADS="2")
    assert java_opts(args, "--driver-java-options") == [
        "-Dmine=1 -Ddev.ludovic.netlib.blas.nativeLibPath=libopenblas.so.0 "
        "-Ddev.ludovic.netlib.lapack.nativeLibPath=libopenblas.so.0"] and threads == "2"
    # local-cluster: the executor JVMs get it too, merged into your executor options.
    args, _ = submit("--master", "local-cluster[1,2,1024]", "--conf", "spark.executor.extraJavaOptions=-Dx=1",
                     RECSPARK_NATIVE_BLAS=str(lib))
    assert f"spark.executor.extraJavaOptions=-Dx=1 {netlib}" in args
    assert "spark.executorEnv.OPENBLAS_NUM_THREADS=1" in args
    # Nothing when turned off, absent, yours, missing, or on a cluster master.
    for opts, ldconfig, env in [(("--master", "local[2]"), loader, {"RECSPARK_NATIVE_BLAS": "0"}),
                                (("--master", "local[2]"), "\\tlibc.so.6 (libc6,x86-64) => /lib/libc.so.6\\n", {}),
                                (("--driver-java-options", "-Ddev.ludovic.netlib.blas.nativeLib=mkl_rt"), loader, {}),
                                ((), "", {"RECSPARK_NATIVE_BLAS": str(tmp_path / "missing.so")}),
                                (("--master", "yarn"), loader, {"RECSPARK_NATIVE_BLAS": str(lib)})]:
        args, threads = submit(*opts, ldconfig=ldconfig, **env)
        assert not any("nativeLibPath" in a or "OPENBLAS" in a for a in args), (opts, env, args)
        assert threads is None, (opts, env)
