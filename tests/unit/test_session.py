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
    """Issue 18: netlib gets OpenBLAS (for BLAS and LAPACK) when the dynamic loader knows it, merged into the Java
    options already there; not with RECSPARK_NATIVE_BLAS=0, your own netlib options, or a cluster master."""
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    fake = tmp_path / "spark" / "bin"
    fake.mkdir(parents=True)
    (fake / "spark-submit").write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n')
    (fake / "spark-submit").chmod(0o755)
    tools = tmp_path / "tools"  # a fake ldconfig first on PATH: what the dynamic loader "knows"
    tools.mkdir()
    lib = tmp_path / "lib" / "libopenblas.so.0"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    base = {k: v for k, v in os.environ.items() if k != "RECSPARK_NATIVE_BLAS"}
    base.update(SPARK_HOME=str(tmp_path / "spark"), RECSPARK_SKIP_CONFIG_CHECK="1",
                PATH=f"{tools}{os.pathsep}{base['PATH']}")
    loader = "\\tlibopenblas.so.0 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libopenblas.so.0\\n"

    def submit(*opts: str, ldconfig: str = "", **env: str) -> list[str]:
        (tools / "ldconfig").write_text(f"#!/bin/sh\nprintf '%b' '{ldconfig}'\n")
        (tools / "ldconfig").chmod(0o755)
        out = subprocess.run([str(repo / "spark-submit.sh"), *opts, "jobs/train.py"], cwd=tmp_path,
                             env={**base, **env}, capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.splitlines()

    def values(args: list[str], flag: str) -> list[str]:
        return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]

    def netlib(path: str | Path) -> str:
        return f"-Ddev.ludovic.netlib.blas.nativeLibPath={path} -Ddev.ludovic.netlib.lapack.nativeLibPath={path}"

    # An explicit library, merged into the log4j options: spark-submit keeps one --driver-java-options.
    [driver] = values(submit("--master", "local[2]", RECSPARK_NATIVE_BLAS=str(lib)), "--driver-java-options")
    assert driver.startswith("-Dlog4j2.configurationFile=") and driver.endswith(netlib(lib))
    # Found by the loader (spark-submit's default master is local): its soname, after your own driver options.
    args = submit("--driver-java-options", "-Dmine=1", ldconfig=loader)
    assert values(args, "--driver-java-options") == [f"-Dmine=1 {netlib('libopenblas.so.0')}"]
    args = submit("--conf", "spark.driver.extraJavaOptions=-Dmine=1", ldconfig=loader)
    assert values(args, "--conf") == [f"spark.driver.extraJavaOptions=-Dmine=1 {netlib('libopenblas.so.0')}"]
    # local-cluster: the executor JVMs get it too, after your executor options.
    args = submit("--master", "local-cluster[1,2,1024]", "--conf", "spark.executor.extraJavaOptions=-Dx=1",
                  RECSPARK_NATIVE_BLAS=str(lib))
    assert f"spark.executor.extraJavaOptions=-Dx=1 {netlib(lib)}" in values(args, "--conf")
    # Nothing when turned off, absent, yours, missing, or on a cluster master.
    for opts, ldconfig, env in [(("--master", "local[2]"), loader, {"RECSPARK_NATIVE_BLAS": "0"}),
                                (("--master", "local[2]"), "\\tlibc.so.6 (libc6,x86-64) => /lib/libc.so.6\\n", {}),
                                (("--driver-java-options", "-Ddev.ludovic.netlib.blas.nativeLib=mkl_rt"), loader, {}),
                                ((), "", {"RECSPARK_NATIVE_BLAS": str(tmp_path / "missing.so")}),
                                (("--master", "yarn"), loader, {"RECSPARK_NATIVE_BLAS": str(lib)})]:
        args = submit(*opts, ldconfig=ldconfig, **env)
        assert not any("nativeLibPath" in a for a in args), (opts, env, args)


def test_spark_submit_sh_never_replaces_the_zip_a_running_driver_imports_from(tmp_path):
    """A driver imports lazily from its --py-files zip by path; a later submission with other code must get another
    file (the 2M benchmark's driver failed with ZipImportError when a test run re-zipped changed code under it)."""
    import os
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    checkout = tmp_path / "checkout"  # a copy of the wrapper beside a package whose code we change
    (checkout / "recspark").mkdir(parents=True)
    shutil.copy(repo / "spark-submit.sh", checkout)
    fake = tmp_path / "spark" / "bin"
    fake.mkdir(parents=True)
    (fake / "spark-submit").write_text('#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n')
    (fake / "spark-submit").chmod(0o755)
    env = {**os.environ, "SPARK_HOME": str(tmp_path / "spark"), "RECSPARK_SKIP_CONFIG_CHECK": "1",
           "PYSPARK_DRIVER_PYTHON": sys.executable}

    def submit(code: str) -> Path:
        (checkout / "recspark" / "__init__.py").write_text(code)
        args = subprocess.run([str(checkout / "spark-submit.sh"), "jobs/train.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
        return Path(args[args.index("--py-files") + 1])

    def code_in(path: Path) -> str:
        with zipfile.ZipFile(path) as z:
            return z.read("recspark/__init__.py").decode()

    first = submit("VERSION = 1\n")
    second = submit("VERSION = 2\n")
    assert first != second and first.parent == second.parent == checkout / "build"
    assert code_in(first) == "VERSION = 1\n" and code_in(second) == "VERSION = 2\n"
    before = first.stat().st_mtime_ns
    assert submit("VERSION = 1\n") == first and first.stat().st_mtime_ns == before  # same code: reused, not rewritten
