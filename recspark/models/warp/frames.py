"""User blocks to DataFrames through Arrow, not through one pickled Python tuple per user.

The fitted users live in the cluster as NumPy blocks (:class:`~recspark.models.warp.trainer.UserBlock`).
Turning each user into a tuple of Python floats, pickled to the JVM, made writing
1M users' factors and optimiser state most of a 20M-row run's save stage. Here
each block becomes Arrow record batches of about :data:`CHUNK_BYTES`, handed to
Spark as a few binary rows (Arrow IPC streams) and unpacked by ``mapInArrow``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
from pyspark import RDD
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

# Rows per Arrow chunk are chosen so a chunk holds about this many bytes: large
# enough that per-chunk costs vanish, small enough to stay far from JVM row limits.
CHUNK_BYTES = 16 << 20


def row_slices(n_rows: int, row_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> list[slice]:
    """Consecutive slices covering ``n_rows`` rows, each about ``chunk_bytes`` at ``row_bytes`` per row."""
    step = max(1, chunk_bytes // max(row_bytes, 1))
    return [slice(start, min(n_rows, start + step)) for start in range(0, n_rows, step)]


def vector_column(matrix: np.ndarray) -> pa.ListArray:
    """Rows of a 2-D float matrix as an Arrow ``list<float32>`` column (Spark ``array<float>``)."""
    n, k = matrix.shape
    return ragged_column(np.ascontiguousarray(matrix, dtype=np.float32).ravel(), np.full(n, k))


def ragged_column(values: np.ndarray, counts: np.ndarray) -> pa.ListArray:
    """``values`` cut into consecutive lists of ``counts`` entries, as an Arrow list column."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def arrow_frame(spark: SparkSession, batches: RDD, schema: T.StructType) -> DataFrame:
    """The DataFrame of an RDD whose partitions yield ``pa.RecordBatch`` es matching ``schema``.

    ``batches`` must be a lazy ``mapPartitions`` result (record batches are
    serialised here, never pickled as RDD elements).
    """

    def encode(parts: Iterable[pa.RecordBatch]) -> Iterator[tuple[bytes]]:
        for batch in parts:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            yield (sink.getvalue().to_pybytes(),)

    def decode(parts: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for part in parts:
            for blob in part.column(0):
                yield from pa.ipc.open_stream(blob.as_buffer())

    chunks = spark.createDataFrame(batches.mapPartitions(encode), T.StructType([T.StructField("ipc", T.BinaryType())]))
    return chunks.mapInArrow(decode, schema)
