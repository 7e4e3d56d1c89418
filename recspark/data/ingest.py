"""Read raw interactions from Parquet, normalise them, and reject bad rows.

Two stages, both pure functions over DataFrames:

1. :func:`read_interactions` reads Parquet (a path or a glob), checks that the
   configured columns exist and have usable types, and returns the normalised
   columns ``user_id``, ``item_id``, ``weight``, ``timestamp`` plus
   ``timestamp_raw`` (the input timestamp as a string, needed by validation to
   tell "no timestamp" from "unparseable timestamp").
2. :func:`validate_interactions` tags every bad row with a ``reason``, writes
   all rejects to Parquet, counts them per reason in the same Spark job, and
   fails the run when too many rows were rejected.

Nothing is dropped silently: a row is either kept, or written to the rejects
dataset and counted.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recspark.data import fs
from recspark.data.columns import ITEM_ID, REASON, TIMESTAMP, USER_ID, WEIGHT
from recspark.errors import DataValidationError

log = logging.getLogger(__name__)

#: The input timestamp rendered as a string (null when absent); kept by
#: :func:`read_interactions` so validation can reject unparseable timestamps
#: and the rejects dataset can show the original value. Dropped by validation.
TIMESTAMP_RAW = "timestamp_raw"

#: Reject reasons in priority order: a row failing several checks is reported
#: under the first one only, so the counts add up to ``rows_rejected``.
#: ``-inf`` is reported as ``infinite_weight`` (it comes before ``negative_weight``).
REJECT_REASONS: tuple[str, ...] = (
    "missing_user_id",  # null, or nothing visible: whitespace (any Unicode space, tab, NBSP) and invisible
    "missing_item_id",  # characters (zero-width space, BOM, controls) only -- an id nobody typed
    "missing_weight",  # null or NaN weight
    "infinite_weight",  # +inf or -inf
    "negative_weight",  # weight < 0
    "zero_weight",  # weight == 0: no interaction (kept with data.keep_zero_weight)
    "unparseable_timestamp",  # raw timestamp present but could not be parsed
)

# Epoch seconds outside [0001-01-01, 9999-12-31] cannot be a real event time
# (often they are milliseconds); Spark's timestamp_seconds would overflow or
# produce nonsense, so such values are treated as unparseable.
_MIN_EPOCH_SECONDS = -62135596800
_MAX_EPOCH_SECONDS = 253402300799

_INTEGRAL_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_NUMERIC_TYPES = (*_INTEGRAL_TYPES, T.FloatType, T.DoubleType, T.DecimalType)


@dataclass(frozen=True)
class RejectReport:
    """Outcome of :func:`validate_interactions`, small enough to log to MLflow.

    Attributes
    ----------
    rows_read : int
        Rows in the input.
    rows_rejected : int
        Rows written to the rejects dataset (sum of ``counts``).
    counts : dict[str, int]
        Rejected rows per reason, every reason of :data:`REJECT_REASONS`
        present (zero included) so dashboards get a stable set of keys.
    fraction : float
        ``rows_rejected / rows_read``.
    rejects_path : str
        Where readers find the rejects dataset: the published path when the
        run writes into a staging folder published later.
    """

    rows_read: int
    rows_rejected: int
    counts: dict[str, int] = field(default_factory=dict)
    fraction: float = 0.0
    rejects_path: str = ""

    @property
    def rows_kept(self) -> int:
        """Rows that passed validation."""
        return self.rows_read - self.rows_rejected

    def as_metrics(self) -> dict[str, float]:
        """Flat ``name -> value`` mapping for ``mlflow.log_metrics``."""
        metrics: dict[str, float] = {
            "rows_read": self.rows_read,
            "rows_rejected": self.rows_rejected,
            "reject_fraction": self.fraction,
        }
        metrics.update({f"rejects_{reason}": n for reason, n in self.counts.items()})
        return metrics


def read_interactions(
    spark: SparkSession,
    path: str | list[str],
    *,
    user_col: str,
    item_col: str,
    weight_col: str | None = None,
    timestamp_col: str | None = None,
    timestamp_format: str | None = None,
) -> DataFrame:
    """Read interactions from Parquet and normalise names and types.

    Column names and types vary between sources; every later stage relies on
    the normalised schema below, so the variation is handled here once.

    Parameters
    ----------
    spark : SparkSession
    path : str or list of str
        Parquet file(s) or folder(s); Hadoop globs (``data/2024-*/``) work.
    user_col, item_col : str
        Input columns holding the external user and item ids. String or
        integer columns are accepted; integers are cast to their decimal
        string (``42`` -> ``"42"``) because id maps always hold strings, so a
        source switching between integer and string ids keeps its indices.
        Floating-point ids are refused (``1.0`` vs ``1`` would silently
        become two different ids).
    weight_col : str, optional
        Numeric column with the interaction strength (cast to double). When
        None every interaction has weight 1.0 (pure implicit feedback).
    timestamp_col : str, optional
        Event time. Timestamp/date columns are used as is; integer or
        floating-point columns are **epoch seconds** (values outside years
        1-9999, e.g. milliseconds, count as unparseable); string columns are
        parsed with ``timestamp_format`` (a Spark datetime pattern such as
        ``"yyyy-MM-dd HH:mm:ss"``) or Spark's default ISO-8601 parsing. Parse
        failures become null ``timestamp`` and are rejected by
        :func:`validate_interactions`. When None, ``timestamp`` is null.
    timestamp_format : str, optional
        Only used for string timestamp columns.

    Returns
    -------
    DataFrame
        Columns ``user_id`` (string), ``item_id`` (string), ``weight``
        (double), ``timestamp`` (timestamp), ``timestamp_raw`` (string, the
        input value as written; null when there is no timestamp column).
        Lazy apart from one tiny emptiness probe.

    Raises
    ------
    DataValidationError
        The path cannot be read, a column is missing (the message lists the
        available ones), a column has an unusable type, or the input is empty.
    """
    paths = [path] if isinstance(path, str) else list(path)
    try:
        raw = spark.read.parquet(*paths)
    except (Py4JJavaError, PySparkException) as err:
        raise DataValidationError(f"interactions: cannot read Parquet at {paths!r}: "
                                  f"{_unreadable_input(spark, paths, err)}") from None

    where = f"interactions at {paths!r}"
    fields = {f.name: f.dataType for f in raw.schema.fields}
    wanted = {"user_col": user_col, "item_col": item_col}
    if weight_col is not None:
        wanted["weight_col"] = weight_col
    if timestamp_col is not None:
        wanted["timestamp_col"] = timestamp_col
    missing = [f"{setting}={name!r}" for setting, name in wanted.items() if name not in fields]
    if missing:
        raise DataValidationError(
            f"{where}: missing column(s) {', '.join(missing)}; available columns: "
            f"{sorted(fields)}. Fix the column name setting(s) or the input."
        )

    user = _id_column(raw, user_col, "user_col", where).alias(USER_ID)
    item = _id_column(raw, item_col, "item_col", where).alias(ITEM_ID)
    weight = _weight_column(raw, weight_col, where).alias(WEIGHT)
    timestamp, timestamp_raw = _timestamp_columns(raw, timestamp_col, timestamp_format, where)

    with input_errors(where):
        empty = raw.isEmpty()
    if empty:
        raise DataValidationError(
            f"{where}: no rows. Check the path or glob points at the intended partition(s)."
        )
    return raw.select(user, item, weight, timestamp.alias(TIMESTAMP), timestamp_raw.alias(TIMESTAMP_RAW))


def validate_interactions(
    df: DataFrame,
    *,
    rejects_path: str,
    max_reject_fraction: float = 0.01,
    keep_zero_weight: bool = False,
    config_prefix: str = "",
    published_path: str | None = None,
    on_report: Callable[[RejectReport], None] | None = None,
) -> tuple[DataFrame, RejectReport]:
    """Tag bad rows with a reason, write them to ``rejects_path``, and count them.

    A bad row should never disappear without trace: it either fails the run or
    is kept in a rejects dataset someone can inspect. The rows are counted per
    reason in the **same** Spark job that writes the rejects (via a
    :class:`pyspark.sql.Observation`), so validation costs one pass over the
    input.

    Parameters
    ----------
    df : DataFrame
        Output of :func:`read_interactions` (``user_id``, ``item_id``,
        ``weight``, ``timestamp`` and optionally ``timestamp_raw``; without
        ``timestamp_raw`` the timestamp check is skipped).
    rejects_path : str
        Folder for the rejects Parquet dataset (overwritten). It is written
        even when there are no rejects (an empty dataset with the schema), so
        downstream readers need no special case. Columns: ``user_id``,
        ``item_id``, ``weight``, ``timestamp`` (all strings, the values as
        read; ``timestamp`` is the raw input value) and ``reason`` (one of
        :data:`REJECT_REASONS`).
    max_reject_fraction : float, default 0.01
        Largest tolerated ``rows_rejected / rows_read``; above it the run
        fails, because a sudden rise in bad rows usually means an upstream
        schema or export change, not noise.
    keep_zero_weight : bool, default False
        Keep rows of weight 0 instead of rejecting them as ``zero_weight``
        (a 0 usually means "no interaction": an export that writes the
        whole matrix, or a play counter never incremented).
    config_prefix : str, default ""
        Prefix of the setting in the job config (e.g. ``"data."``), so the
        error names the exact key to change.
    published_path : str, optional
        Where ``rejects_path`` will be once the run publishes its output
        (``<out>/rejects`` for ``<out>.staging/rejects``): the report and the
        log name it, since the staging folder is gone after publishing. A
        failing validation names ``rejects_path``: a failed run is not
        published and keeps its staging folder for inspection.
    on_report : callable, optional
        Called with the report once the rows are counted, before the checks
        that may fail the run, so a failed run still records its counts.

    Returns
    -------
    clean : DataFrame
        The good rows with ``user_id``, ``item_id``, ``weight``, ``timestamp``
        (lazy; re-reads the input when used).
    report : RejectReport

    Raises
    ------
    DataValidationError
        The input is empty, or the reject fraction exceeds
        ``max_reject_fraction`` (the message gives counts per reason, an
        example row and the setting to change). The rejects are written first,
        so they can be inspected after a failure.
    """
    if not 0.0 <= max_reject_fraction <= 1.0:
        raise DataValidationError(
            f"{config_prefix}max_reject_fraction={max_reject_fraction!r} must be in [0, 1]."
        )
    has_raw_ts = TIMESTAMP_RAW in df.columns
    reason = _reason_column(has_raw_ts, keep_zero_weight)
    tagged = df.withColumn(REASON, reason)

    # A unique name: observations are matched to queries by name.
    observation = Observation(f"validate_interactions_{uuid.uuid4().hex[:8]}")
    observed = tagged.observe(
        observation,
        F.count(F.lit(1)).alias("rows_read"),
        *[F.count(F.when(F.col(REASON) == r, True)).alias(r) for r in REJECT_REASONS],
    )
    raw_ts = F.col(TIMESTAMP_RAW) if has_raw_ts else F.col(TIMESTAMP).cast("string")
    rejects = observed.filter(F.col(REASON).isNotNull()).select(
        F.col(USER_ID).cast("string").alias(USER_ID),
        F.col(ITEM_ID).cast("string").alias(ITEM_ID),
        F.col(WEIGHT).cast("string").alias(WEIGHT),
        raw_ts.cast("string").alias(TIMESTAMP),
        F.col(REASON),
    )
    # One job: the observation counts every row on its way to the writer.
    with input_errors("interactions"):
        rejects.write.mode("overwrite").parquet(rejects_path)
    metrics = observation.get

    rows_read = int(metrics["rows_read"])
    counts = {r: int(metrics[r]) for r in REJECT_REASONS}
    rows_rejected = sum(counts.values())
    fraction = rows_rejected / rows_read if rows_read else 0.0
    report = RejectReport(rows_read, rows_rejected, counts, fraction, published_path or rejects_path)
    log.info(
        "validate: %d rows read, %d rejected (%.4f%%) -> %s; %s",
        rows_read,
        rows_rejected,
        100 * fraction,
        report.rejects_path,
        ", ".join(f"{r}={n}" for r, n in counts.items() if n) or "no rejects",
    )
    if on_report is not None:
        on_report(report)

    if rows_read == 0:
        raise DataValidationError(
            "interactions: no rows to validate. Check the input path or glob."
        )
    if fraction > max_reject_fraction:
        example = _first_reject(df.sparkSession, rejects_path)
        per_reason = ", ".join(f"{r}={n}" for r, n in counts.items() if n)
        kept = (" (this run failed, so its output is not published: the staging folder stays until the next "
                "run starts)") if report.rejects_path != rejects_path else ""
        raise DataValidationError(
            f"interactions: {rows_rejected} of {rows_read} rows rejected "
            f"({100 * fraction:.2f}%), above {config_prefix}max_reject_fraction="
            f"{max_reject_fraction} ({100 * max_reject_fraction:.2f}%). Per reason: "
            f"{per_reason}. Example rejected row: {example}. All rejects are in "
            f"{rejects_path!r}{kept}. Fix the input, or raise {config_prefix}max_reject_fraction "
            "if this many bad rows is expected."
        )

    clean = tagged.filter(F.col(REASON).isNull()).select(USER_ID, ITEM_ID, WEIGHT, TIMESTAMP)
    return clean, report


_FILE_IN_ERROR = re.compile(r"while reading file (\S+?)\.?\s")
_TYPE_MISMATCH = re.compile(r"Parquet column \[(\w+)\]\. Expected Spark type (\w+), actual Parquet type (\w+)")


@contextlib.contextmanager
def input_errors(where: str) -> Iterator[None]:
    """Turn Spark's unreadable-file errors into a DataValidationError naming the file and the problem.

    Spark reports them only when a job reads the file (a corrupt or truncated
    Parquet file, or a column whose type differs from the other files': int ids
    one day, strings the next) as a long Java stack trace; the job should exit
    as a data error (3) with one line a person can act on.
    """
    try:
        yield
    except (Py4JJavaError, PySparkException) as err:
        text = str(err)
        if "FAILED_READ_FILE" not in text:
            raise
        file = _FILE_IN_ERROR.search(text)
        name = file.group(1) if file else "one of the input files"
        mismatch = _TYPE_MISMATCH.search(text)
        if mismatch:
            column, expected, actual = mismatch.groups()
            problem = (f"column {column!r} is {actual} in this file but {expected} in the others: the schema "
                       "changed between files. Rewrite the odd files with the usual types, or read the "
                       "days separately")
        else:
            spark = SparkSession.getActiveSession()
            found = fs.data_files(spark, file.group(1)) if spark is not None and file else []
            why = _not_parquet(spark, *found[0]) if found else ""
            problem = f"the file is not readable Parquet ({why or 'corrupt'}); re-export or remove it"
        raise DataValidationError(f"{where}: cannot read {name}: {problem}.") from None


#: Shown when more files than this are bad: the first ones, and how many.
_FILES_NAMED = 5


def _unreadable_input(spark: SparkSession, paths: list[str], err: Exception) -> str:
    """Why Spark could not read the input, naming the file(s) and the fix (the failure path only: O(files) reads).

    Spark's own message is a Java stack trace that names neither: a README or
    CSV among the Parquet files, a file cut short by a failed copy, or
    nanosecond timestamps (pandas' default), which Spark refuses.
    """
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    files = [entry for p in paths for entry in fs.data_files(spark, p)]
    if not files:
        return (f"{first_line}. No data files found: check that the path (or glob) exists and is readable.")
    bad = [f"{name} ({why})" for name, size in files for why in [_not_parquet(spark, name, size)] if why]
    if bad:
        more = f" and {len(bad) - _FILES_NAMED} more" if len(bad) > _FILES_NAMED else ""
        return (f"{len(bad)} of {len(files)} files are not Parquet: {', '.join(bad[:_FILES_NAMED])}{more}. "
                "Remove them from the folder or point data.path at the Parquet files only (a glob such as "
                "'<folder>/*.parquet' works).")
    if "TIMESTAMP(NANOS" in str(err):
        name, size = files[0]
        columns = _nanosecond_columns(spark, name, size)
        which = f"column(s) {columns} of {name} hold" if columns else "a column holds"
        return (f"{which} nanosecond timestamps (pandas' default), which Spark cannot read. Write them as "
                "microseconds: df.to_parquet(path, coerce_timestamps='us', allow_truncated_timestamps=True) "
                "(pyarrow: pq.write_table(..., coerce_timestamps='us')).")
    return f"{first_line}. Check that the path (or glob) is readable and holds Parquet files."


def _not_parquet(spark: SparkSession, name: str, size: int) -> str:
    """Why ``name`` is not a Parquet file ('' when it looks like one): Parquet starts and ends with ``PAR1``."""
    if size < 12:
        return f"{size} bytes: too small to be Parquet"
    if fs.read_range(spark, name, 0, 4) != b"PAR1":
        return "does not start with the Parquet magic number: another format"
    if fs.read_range(spark, name, size - 4, 4) != b"PAR1":
        return "no Parquet footer: truncated (an interrupted copy?)"
    return ""


def _nanosecond_columns(spark: SparkSession, name: str, size: int) -> list[str]:
    """Columns of Parquet file ``name`` stored as nanosecond timestamps, from its footer alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tail = fs.read_range(spark, name, size - 8, 8)
    footer_length = int.from_bytes(tail[:4], "little")
    footer = fs.read_range(spark, name, size - 8 - footer_length, footer_length)
    schema = pq.read_schema(pa.BufferReader(b"PAR1" + footer + tail))
    return [f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"]


#: Characters that leave an id looking empty: Unicode separators, controls, format characters (Java regex).
_INVISIBLE = r"[\s\p{Z}\p{Cc}\p{Cf}]"


def _reason_column(has_raw_ts: bool, keep_zero_weight: bool) -> Column:
    """First failing check of :data:`REJECT_REASONS` (null when the row is good)."""
    user, item, weight = F.col(USER_ID), F.col(ITEM_ID), F.col(WEIGHT)
    checks: list[tuple[str, Column]] = [
        ("missing_user_id", user.isNull() | (F.regexp_replace(user, _INVISIBLE, "") == "")),
        ("missing_item_id", item.isNull() | (F.regexp_replace(item, _INVISIBLE, "") == "")),
        ("missing_weight", weight.isNull() | F.isnan(weight)),
        ("infinite_weight", weight.isin(float("inf"), float("-inf"))),
        ("negative_weight", weight < 0),
    ]
    if not keep_zero_weight:
        checks.append(("zero_weight", weight == 0))
    if has_raw_ts:
        checks.append(
            ("unparseable_timestamp", F.col(TIMESTAMP_RAW).isNotNull() & F.col(TIMESTAMP).isNull())
        )
    expr = F.when(checks[0][1], F.lit(checks[0][0]))
    for name, cond in checks[1:]:
        expr = expr.when(cond, F.lit(name))
    return expr.otherwise(F.lit(None).cast("string"))


def _first_reject(spark: SparkSession, rejects_path: str) -> dict[str, Any]:
    """One rejected row for an error message (reads the small rejects dataset)."""
    rows = spark.read.parquet(rejects_path).limit(1).collect()
    return rows[0].asDict() if rows else {}


def _id_column(raw: DataFrame, name: str, setting: str, where: str) -> Column:
    dtype = raw.schema[name].dataType
    if isinstance(dtype, T.StringType):
        return F.col(name)
    if isinstance(dtype, _INTEGRAL_TYPES):
        return F.col(name).cast("string")
    raise DataValidationError(
        f"{where}: column {name!r} ({setting}) has type {dtype.simpleString()}; "
        "ids must be string or integer. Cast it upstream, or point "
        f"{setting} at the right column."
    )


def _weight_column(raw: DataFrame, name: str | None, where: str) -> Column:
    if name is None:
        return F.lit(1.0).cast("double")
    dtype = raw.schema[name].dataType
    if isinstance(dtype, _NUMERIC_TYPES):
        return F.col(name).cast("double")
    raise DataValidationError(
        f"{where}: column {name!r} (weight_col) has type {dtype.simpleString()}; "
        "weights must be numeric. Cast it upstream, point weight_col at a numeric "
        "column, or unset weight_col to give every interaction weight 1.0."
    )


def _timestamp_columns(
    raw: DataFrame, name: str | None, fmt: str | None, where: str
) -> tuple[Column, Column]:
    """(parsed timestamp, raw value as string) for the configured column."""
    if name is None:
        return F.lit(None).cast("timestamp"), F.lit(None).cast("string")
    col = F.col(name)
    dtype = raw.schema[name].dataType
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        parsed = col.cast("timestamp")
    elif isinstance(dtype, (*_INTEGRAL_TYPES, T.FloatType, T.DoubleType, T.DecimalType)):
        seconds = col.cast("double") if not isinstance(dtype, _INTEGRAL_TYPES) else col.cast("long")
        in_range = (
            ~F.isnan(seconds.cast("double"))
            & (seconds >= _MIN_EPOCH_SECONDS)
            & (seconds <= _MAX_EPOCH_SECONDS)
        )
        # CASE WHEN evaluates the branch only when the guard holds, so
        # out-of-range values cannot overflow timestamp_seconds under ANSI mode.
        parsed = F.when(in_range, F.timestamp_seconds(seconds))
    elif isinstance(dtype, T.StringType):
        # try_to_timestamp returns null instead of failing the job (ANSI mode).
        parsed = F.try_to_timestamp(col, F.lit(fmt)) if fmt else F.try_to_timestamp(col)
    else:
        raise DataValidationError(
            f"{where}: column {name!r} (timestamp_col) has type {dtype.simpleString()}; "
            "expected timestamp, date, epoch seconds (integer or floating point) or "
            "string. Fix the input or point timestamp_col at another column."
        )
    return parsed.cast("timestamp"), col.cast("string")
