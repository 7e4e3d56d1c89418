"""Ingest: schema normalisation, errors that name the problem, and every reject reason."""

from __future__ import annotations

import datetime as dt
import logging
import math

import pytest

from recspark.data.columns import ITEM_ID, REASON, TIMESTAMP, USER_ID, WEIGHT
from recspark.data.ingest import REJECT_REASONS, TIMESTAMP_RAW, read_interactions, validate_interactions
from recspark.errors import DataValidationError

pytestmark = pytest.mark.spark

# One input file with a column of every kind the reader must handle.
MIXED_SCHEMA = (
    "uid string, iid string, uid_int int, iid_long long, plays int, udouble double, "
    "wstr string, tbool boolean, ts_str string, ts_fmt string, ts_long long, "
    "ts_double double, ts_ms long, ts_ts timestamp, extra string"
)
MIXED_ROW = (
    "a", "x", 7, 10**12, 3, 1.0,
    "3", True, "2024-01-01 10:00:00", "04/03/2024", 86400,
    1.5, 1_700_000_000_000, dt.datetime(2024, 3, 4, 5, 6, 7), "ignored",
)


@pytest.fixture(scope="module")
def mixed_path(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ingest") / "mixed")
    spark.createDataFrame([MIXED_ROW], MIXED_SCHEMA).write.parquet(path)
    return path


def test_read_normalises_names_and_types(spark, mixed_path):
    df = read_interactions(spark, mixed_path, user_col="uid", item_col="iid", weight_col="plays", timestamp_col="ts_str")
    assert df.dtypes == [(USER_ID, "string"), (ITEM_ID, "string"), (WEIGHT, "double"),
                         (TIMESTAMP, "timestamp"), (TIMESTAMP_RAW, "string")]
    row = df.first()
    assert (row[USER_ID], row[ITEM_ID], row[WEIGHT]) == ("a", "x", 3.0)
    assert row[TIMESTAMP] == dt.datetime(2024, 1, 1, 10, 0)
    assert row[TIMESTAMP_RAW] == "2024-01-01 10:00:00"


def test_read_casts_integer_ids_to_strings_and_defaults_weight_and_timestamp(spark, mixed_path):
    row = read_interactions(spark, mixed_path, user_col="uid_int", item_col="iid_long").first()
    assert (row[USER_ID], row[ITEM_ID], row[WEIGHT]) == ("7", "1000000000000", 1.0)
    assert row[TIMESTAMP] is None and row[TIMESTAMP_RAW] is None


def test_read_parses_each_timestamp_kind(spark, mixed_path):
    cases = {
        ("ts_long", None): dt.datetime(1970, 1, 2),  # epoch seconds
        ("ts_double", None): dt.datetime(1970, 1, 1, 0, 0, 1, 500000),
        ("ts_ts", None): dt.datetime(2024, 3, 4, 5, 6, 7),
        ("ts_fmt", "dd/MM/yyyy"): dt.datetime(2024, 3, 4),
        ("ts_ms", None): None,  # milliseconds are out of range: null, rejected by validation
        ("ts_fmt", None): None,  # not ISO: null, rejected by validation
    }
    for (col, fmt), expected in cases.items():
        df = read_interactions(spark, mixed_path, user_col="uid", item_col="iid", timestamp_col=col, timestamp_format=fmt)
        assert df.first()[TIMESTAMP] == expected, (col, fmt)


def test_read_glob(spark, tmp_path):
    for day in (1, 2):
        spark.createDataFrame([(f"u{day}", "i")], "u string, i string").write.parquet(str(tmp_path / f"day={day}"))
    df = read_interactions(spark, str(tmp_path / "day=*"), user_col="u", item_col="i")
    assert sorted(r[USER_ID] for r in df.collect()) == ["u1", "u2"]


def test_read_missing_path_names_it(spark, tmp_path):
    with pytest.raises(DataValidationError, match="no_such_folder"):
        read_interactions(spark, str(tmp_path / "no_such_folder"), user_col="u", item_col="i")


def test_read_missing_column_names_it_and_lists_available(spark, mixed_path):
    with pytest.raises(DataValidationError) as err:
        read_interactions(spark, mixed_path, user_col="uid", item_col="item")
    assert "item_col='item'" in str(err.value)
    assert "'iid'" in str(err.value) and "'ts_str'" in str(err.value)


def test_read_empty_input(spark, tmp_path):
    path = str(tmp_path / "empty")
    spark.createDataFrame([], "uid string, iid string").write.parquet(path)
    with pytest.raises(DataValidationError, match="no rows"):
        read_interactions(spark, path, user_col="uid", item_col="iid")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_col": "udouble"}, "'udouble'.*double"),
        ({"weight_col": "wstr"}, "'wstr'.*string"),
        ({"timestamp_col": "tbool"}, "'tbool'.*boolean"),
    ],
)
def test_read_rejects_unusable_types(spark, mixed_path, kwargs, message):
    args = {"user_col": "uid", "item_col": "iid", **kwargs}
    with pytest.raises(DataValidationError, match=message):
        read_interactions(spark, mixed_path, **args)


GOOD = [("u1", "good1", 1.0, "2024-01-01 00:00:00"), ("u2", "good2", 2.0, None)]
# One bad row per case; the expected reason is the first failing check.
BAD = {
    "null_user": (None, "null_user", 1.0, None, "missing_user_id"),
    "blank_user": ("  ", "blank_user", 1.0, None, "missing_user_id"),
    "null_item": ("u", None, 1.0, None, "missing_item_id"),
    "empty_item": ("u", "", 1.0, None, "missing_item_id"),
    "null_weight": ("u", "null_weight", None, None, "missing_weight"),
    "nan_weight": ("u", "nan_weight", math.nan, None, "missing_weight"),
    "inf_weight": ("u", "inf_weight", math.inf, None, "infinite_weight"),
    "neg_inf_weight": ("u", "neg_inf_weight", -math.inf, None, "infinite_weight"),
    "negative_weight": ("u", "negative_weight", -0.5, None, "negative_weight"),
    "zero_weight": ("u", "zero_weight", 0.0, None, "zero_weight"),
    "invisible_user": ("\t\u00a0\u200b\ufeff", "invisible_user", 1.0, None, "missing_user_id"),
    "invisible_item": ("u", "\u2003\u200b", 1.0, None, "missing_item_id"),
    "bad_time": ("u", "bad_time", 1.0, "not a time", "unparseable_timestamp"),
    "two_problems": (None, "two_problems", -1.0, "not a time", "missing_user_id"),
}


def _interactions(spark, tmp_path, rows):
    path = str(tmp_path / "in")
    spark.createDataFrame(rows, "u string, i string, w double, ts string").write.parquet(path)
    return read_interactions(spark, path, user_col="u", item_col="i", weight_col="w", timestamp_col="ts")


def test_validate_gives_each_bad_row_its_reason_and_counts_them(spark, tmp_path):
    df = _interactions(spark, tmp_path, [*GOOD, *(b[:4] for b in BAD.values())])
    clean, report = validate_interactions(df, rejects_path=str(tmp_path / "rej"), max_reject_fraction=1.0)

    assert report.counts == {r: sum(b[4] == r for b in BAD.values()) for r in REJECT_REASONS}
    assert report.rows_read == 16 and report.rows_rejected == 14 and report.rows_kept == 2
    assert report.fraction == pytest.approx(14 / 16)
    assert report.as_metrics()["rejects_missing_user_id"] == 4
    assert sorted(r[ITEM_ID] for r in clean.collect()) == ["good1", "good2"]
    assert clean.columns == [USER_ID, ITEM_ID, WEIGHT, TIMESTAMP]

    rejects = spark.read.parquet(str(tmp_path / "rej"))
    assert rejects.dtypes == [(c, "string") for c in (USER_ID, ITEM_ID, WEIGHT, TIMESTAMP, REASON)]
    got = {(r[USER_ID], r[ITEM_ID]): (r[WEIGHT], r[TIMESTAMP], r[REASON]) for r in rejects.collect()}
    expected = {
        (b[0], b[1]): (None if b[2] is None else str(float(b[2])).replace("nan", "NaN").replace("inf", "Infinity"), b[3], b[4])
        for b in BAD.values()
    }
    assert got == expected  # original values as strings, one reason each


def test_zero_weights_are_kept_when_asked(spark, tmp_path):
    df = _interactions(spark, tmp_path, [*GOOD, ("u", "zero", 0.0, None)])
    clean, report = validate_interactions(df, rejects_path=str(tmp_path / "rej"), keep_zero_weight=True)
    assert report.rows_rejected == 0 and sorted(r[ITEM_ID] for r in clean.collect()) == ["good1", "good2", "zero"]


def test_validate_without_rejects_writes_empty_dataset(spark, tmp_path):
    df = _interactions(spark, tmp_path, GOOD)
    clean, report = validate_interactions(df, rejects_path=str(tmp_path / "rej"))
    assert report.rows_rejected == 0 and report.rows_read == 2 and clean.count() == 2
    rejects = spark.read.parquet(str(tmp_path / "rej"))
    assert rejects.count() == 0
    assert rejects.columns == [USER_ID, ITEM_ID, WEIGHT, TIMESTAMP, REASON]


def test_validate_fails_above_max_reject_fraction_with_counts_example_and_setting(spark, tmp_path):
    df = _interactions(spark, tmp_path, [*GOOD, ("u", "i", -2.0, None), ("u", None, 1.0, None)])
    with pytest.raises(DataValidationError) as err:
        validate_interactions(df, rejects_path=str(tmp_path / "rej"), max_reject_fraction=0.1, config_prefix="data.")
    message = str(err.value)
    assert "2 of 4 rows" in message
    assert "negative_weight=1" in message and "missing_item_id=1" in message
    assert "raise data.max_reject_fraction" in message
    assert "Example rejected row: {" in message and "'reason': '" in message
    # the rejects are kept for inspection even though the run failed
    assert spark.read.parquet(str(tmp_path / "rej")).count() == 2


def test_report_and_log_name_the_published_rejects_path_and_a_failure_the_staged_one(spark, tmp_path, caplog):
    """A staged run's rejects move at publish: the report and the log say where they will be; a failed
    run is not published, so its message names the staging folder it keeps (and says so)."""
    df = _interactions(spark, tmp_path, [*GOOD, ("u", "i", -2.0, None)])
    staged, published = f"{tmp_path}/out.staging/rejects", f"{tmp_path}/out/rejects"
    reported = []
    with caplog.at_level(logging.INFO, logger="recspark.data.ingest"):
        _, report = validate_interactions(df, rejects_path=staged, published_path=published,
                                          max_reject_fraction=1.0, on_report=reported.append)
    assert report.rejects_path == published and reported == [report]
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("validate:"))
    assert published in line and "staging" not in line
    with pytest.raises(DataValidationError) as err:
        validate_interactions(df, rejects_path=staged, published_path=published, max_reject_fraction=0.1,
                              on_report=reported.append)
    assert f"All rejects are in {staged!r} (this run failed, so its output is not published" in str(err.value)
    assert len(reported) == 2 and reported[1].rows_rejected == 1  # counted before the run failed


# --------------------------------------------------------------------------- unreadable input files


def _day(path, user_ids) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": user_ids, "item_id": ["a", "b", "c"], "weight": [1.0, 2.0, 3.0]}).to_parquet(
        path, index=False)


def _read_and_validate(spark, folder, tmp_path):
    df = read_interactions(spark, str(folder), user_col="user_id", item_col="item_id", weight_col="weight",
                           timestamp_col=None)
    return validate_interactions(df, rejects_path=str(tmp_path / "rejects"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_file_is_a_data_error_naming_the_file(spark, tmp_path, damage):
    _day(tmp_path / "in" / "part-0.parquet", ["1", "2", "3"])
    bad = tmp_path / "in" / "part-1.parquet"
    _day(bad, ["4", "5", "6"])
    data = bad.read_bytes()
    bad.write_bytes(b"garbage" * 50 if damage == "garbage" else data[: len(data) // 2])
    why = "does not start with the Parquet magic" if damage == "garbage" else "no Parquet footer: truncated"
    with pytest.raises(DataValidationError, match=rf"part-1\.parquet: the file is not readable Parquet \({why}"):
        _read_and_validate(spark, tmp_path / "in", tmp_path)


def test_a_single_truncated_file_as_the_whole_input_is_named(spark, tmp_path):
    """Alone, it fails Spark's schema inference ("Unable to infer schema"): the error still names it."""
    only = tmp_path / "in" / "part-0.parquet"
    _day(only, ["1", "2", "3"])
    only.write_bytes(only.read_bytes()[:40])
    with pytest.raises(DataValidationError, match=r"1 of 1 files are not Parquet: \S*/in/part-0\.parquet \(no Parquet footer: truncated"):
        _read_and_validate(spark, tmp_path / "in", tmp_path)


@pytest.mark.parametrize("name, content", [("README.md", b"# about this folder\n"),
                                           ("export.csv", b"user_id,item_id,weight\n1,a,1.0\n" * 20)])
def test_a_file_of_another_format_in_the_folder_is_named(spark, tmp_path, name, content):
    """Spark's schema inference fails on it with a stack trace naming nothing; the error names the file."""
    _day(tmp_path / "in" / "part-0.parquet", ["1", "2", "3"])
    (tmp_path / "in" / name).write_bytes(content)
    (tmp_path / "in" / "_SUCCESS").write_bytes(b"")  # skipped by Spark, not a bad file
    with pytest.raises(DataValidationError, match=rf"1 of 2 files are not Parquet: \S*/in/{name} "):
        _read_and_validate(spark, tmp_path / "in", tmp_path)


def test_nanosecond_timestamps_name_the_column_and_the_fix(spark, tmp_path):
    """pandas writes nanoseconds by default, which Spark 4 refuses."""
    import pandas as pd

    (tmp_path / "in").mkdir()
    pd.DataFrame({"user_id": ["1"], "item_id": ["a"], "seen_at": pd.to_datetime(["2024-06-01 12:00:00.123456789"])}) \
        .to_parquet(tmp_path / "in" / "part-0.parquet", index=False, coerce_timestamps=None)
    with pytest.raises(DataValidationError, match=r"column\(s\) \['seen_at'\] of \S+part-0.parquet hold nanosecond "
                                                  r"timestamps .* coerce_timestamps='us'"):
        _read_and_validate(spark, tmp_path / "in", tmp_path)


def test_ids_that_changed_type_between_files_are_a_data_error_naming_file_and_column(spark, tmp_path):
    _day(tmp_path / "in" / "day=1.parquet", ["1", "2", "3"])  # strings one day
    _day(tmp_path / "in" / "day=2.parquet", [4, 5, 6])  # integers the next
    with pytest.raises(DataValidationError, match=r"column 'user_id' is .* schema changed between files"):
        _read_and_validate(spark, tmp_path / "in", tmp_path)


def test_an_empty_file_among_others_is_read_as_no_rows(spark, tmp_path):
    import pandas as pd

    _day(tmp_path / "in" / "part-0.parquet", ["1", "2", "3"])
    pd.DataFrame({"user_id": pd.Series([], dtype=str), "item_id": pd.Series([], dtype=str),
                  "weight": pd.Series([], dtype=float)}).to_parquet(tmp_path / "in" / "part-1.parquet", index=False)
    clean, report = _read_and_validate(spark, tmp_path / "in", tmp_path)
    assert report.rows_read == 3 and report.rows_rejected == 0
    assert sorted(r[USER_ID] for r in clean.collect()) == ["1", "2", "3"]
