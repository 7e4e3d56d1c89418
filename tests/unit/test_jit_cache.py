"""The compiled kernel's disk cache works from a zipped package, whichever folder Spark unpacks it into."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, numpy as np, scipy.sparse as sp
from recspark.models.warp import kernel
from recspark.models.warp.state import SideParams
assert ".zip" in kernel.__file__, kernel.__file__
sides = [SideParams.init(3, 4, "adagrad", np.random.default_rng(0)) for _ in range(2)]
eye = sp.identity(3, dtype=np.float32, format="csr")
kernel.fit_epoch(*sides, eye, eye, [0, 1], [1, 2], None, sp.csr_matrix(eye), kernel.KernelParams(),
                 np.random.default_rng(0))
print(json.dumps({"hits": len(kernel._run.stats.cache_hits), "misses": len(kernel._run.stats.cache_misses)}))
"""


def _zip_package(target: Path) -> Path:
    target.mkdir(parents=True)
    path = target / "recspark.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in (REPO / "recspark").rglob("*.py"):
            zf.write(file, file.relative_to(REPO).as_posix())
    return path


def _probe(zip_path: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(zip_path), "NUMBA_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=zip_path.parent, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_application_reuses_the_kernel_compiled_by_the_first(tmp_path):
    """Two "applications" import the package from zips in different folders, as Spark executors do."""
    cache = tmp_path / "numba-cache"
    first = _probe(_zip_package(tmp_path / "app-1"), cache)
    second = _probe(_zip_package(tmp_path / "app-2"), cache)
    assert first["misses"] == 1 and first["hits"] == 0  # compiled, and written to the cache
    assert second["hits"] == 1 and second["misses"] == 0  # loaded, not compiled again
    assert list((cache / "recspark-zip").glob("recspark_models_warp_kernel.py/*.nbi"))


def test_without_numba_cache_dir_the_cache_is_numbas_user_folder(monkeypatch, tmp_path):
    from recspark.models.jit import StableZipLocator

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    found = [StableZipLocator(_probe, f"/tmp/spark-{app}/userFiles/recspark.zip/recspark/models/warp/kernel.py")
             .get_cache_path() for app in ("a1", "b2")]
    assert found[0] == found[1] == str(tmp_path / "numba" / "recspark-zip" / "recspark_models_warp_kernel.py")
