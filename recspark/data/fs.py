"""Small-file operations on any filesystem Spark can write (local, HDFS, s3a://, gs://).

Parquet goes through Spark; the few small files and directory moves a job
needs (metadata JSON, staging renames) go through Hadoop's ``FileSystem`` API
in the driver's JVM, so a path that works for the data works for them too —
Python's ``open`` would only see the driver's local disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _resolve(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _resolve(spark, path)
    return bool(fs.exists(hpath))


def delete(spark: SparkSession, path: str, recursive: bool = True) -> None:
    """Delete ``path`` if it exists."""
    fs, hpath = _resolve(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, recursive)


def rename(spark: SparkSession, src: str, dst: str) -> None:
    fs, hsrc = _resolve(spark, src)
    if not fs.rename(hsrc, _resolve(spark, dst)[1]):
        raise OSError(f"could not rename {src} to {dst}; check that it exists, permissions and free space")


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write (overwrite) a UTF-8 text file, creating parent directories."""
    fs, hpath = _resolve(spark, path)
    stream = fs.create(hpath, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str:
    fs, hpath = _resolve(spark, path)
    if not fs.exists(hpath):
        raise OSError(f"{path} does not exist")
    stream = fs.open(hpath)
    try:
        return spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def list_files(spark: SparkSession, path: str) -> list[str]:
    """Every file under ``path`` (recursive), relative to it; empty when ``path`` does not exist."""
    fs, hpath = _resolve(spark, path)
    if not fs.exists(hpath):
        return []
    if fs.getFileStatus(hpath).isFile():
        return [""]
    base = str(fs.makeQualified(hpath).toUri().getPath()).rstrip("/") + "/"
    found, it = [], fs.listFiles(hpath, True)
    while it.hasNext():
        found.append(str(it.next().getPath().toUri().getPath())[len(base):])
    return sorted(found)


def list_dir(spark: SparkSession, path: str) -> list[str]:
    """The names of the entries directly in the directory ``path`` (checksum files hidden); empty when absent."""
    fs, hpath = _resolve(spark, path)
    if not fs.exists(hpath):
        return []
    return sorted(str(status.getPath().getName()) for status in fs.listStatus(hpath))


def is_empty_dir(spark: SparkSession, path: str) -> bool:
    """True when ``path`` does not exist or is a directory with no entries."""
    fs, hpath = _resolve(spark, path)
    if not fs.exists(hpath):
        return True
    return not fs.getFileStatus(hpath).isFile() and len(fs.listStatus(hpath)) == 0


def data_files(spark: SparkSession, path: str) -> list[tuple[str, int]]:
    """``(full path, size)`` of every file a Spark read of ``path`` (a file, folder or glob) would consider.

    Recursive; skips the names Spark's file sources skip (``_SUCCESS``,
    ``.crc`` files: a leading ``_`` or ``.``).
    """
    fs, hpath = _resolve(spark, path)
    statuses = fs.globStatus(hpath) or []
    found = []
    for status in statuses:
        if status.isFile():
            found.append((str(status.getPath()), int(status.getLen())))
            continue
        it = fs.listFiles(status.getPath(), True)
        while it.hasNext():
            entry = it.next()
            found.append((str(entry.getPath()), int(entry.getLen())))
    return sorted((p, n) for p, n in found if not p.rsplit("/", 1)[-1].startswith(("_", ".")))


def read_range(spark: SparkSession, path: str, offset: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``offset`` (a Parquet magic number or footer: small reads only)."""
    fs, hpath = _resolve(spark, path)
    stream = fs.open(hpath)
    try:
        stream.seek(offset)
        return bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream, length))
    finally:
        stream.close()
