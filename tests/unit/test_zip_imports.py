"""The zip-directory cache that spares every Spark task a re-read of pyspark.zip (``recspark.zip_imports``)."""

import os
import sys
import zipfile
import zipimport

import pytest

import recspark  # noqa: F401  (installs the wrapper)

pytestmark = pytest.mark.skipif(sys.version_info >= (3, 13), reason="Python 3.13 reads zip directories lazily")


def write_zip(path, names):
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            zf.writestr(name, "X = 1\n")


def test_unchanged_archive_is_not_read_again(tmp_path):
    path = str(tmp_path / "lib.zip")
    write_zip(path, ["a.py"])
    importer = zipimport.zipimporter(path)
    importer.invalidate_caches()
    directory = zipimport._zip_directory_cache[path]
    zipimport.zipimporter(path + "/pkg").invalidate_caches()  # another importer of the same archive
    importer.invalidate_caches()
    assert zipimport._zip_directory_cache[path] is directory
    assert importer.find_spec("a") is not None


def test_changed_archive_is_read_again(tmp_path):
    path = str(tmp_path / "lib.zip")
    write_zip(path, ["a.py"])
    importer = zipimport.zipimporter(path)
    importer.invalidate_caches()
    assert importer.find_spec("b") is None
    write_zip(path, ["a.py", "b.py"])
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1))
    importer.invalidate_caches()
    assert importer.find_spec("b") is not None


def test_installed_once():
    wrapper = zipimport.zipimporter.invalidate_caches
    recspark.zip_imports.install()
    assert zipimport.zipimporter.invalidate_caches is wrapper
