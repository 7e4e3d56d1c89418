"""Credentials never leave the process in a logged copy of a config (issue 13)."""

from __future__ import annotations

import logging

import pytest
import yaml

from recspark import cli
from recspark.config import TrainConfig, flatten, load_config, to_dict
from recspark.redact import REDACTED, is_sensitive_key, redact
from recspark.runs.report import RunSummary, format_summary
from recspark.tracking import mlflow_log

SECRET = "SECRETVALUE123"
PASSWORD = "PASSWORD456"


@pytest.mark.parametrize("key", [
    "spark.hadoop.fs.s3a.secret.key", "spark.hadoop.fs.s3a.access.key", "spark.authenticate.secret",
    "spark.ssl.keyStorePassword", "db.passwd", "github_token", "gcp.credentials.json", "service.apikey",
    "service.api_key", "service.API-KEY", "fs.azure.account.key.private", "spark.hadoop.fs.s3a.session.token"])
def test_credential_keys_are_recognised(key):
    assert is_sensitive_key(key)
    assert redact({key: SECRET}) == {key: REDACTED}


def test_no_key_of_the_shipped_configs_is_mistaken_for_a_credential():
    for path in ("demo.yaml", "train_als.yaml"):
        conf = load_config(f"conf/{path}", TrainConfig)
        assert redact(flatten(conf)) == flatten(conf)
        assert redact(to_dict(conf)) == to_dict(conf)


@pytest.mark.parametrize("uri, shown", [
    (f"https://bob:{PASSWORD}@mlflow.example.com:5000/x", f"https://bob:{REDACTED}@mlflow.example.com:5000/x"),
    (f"postgresql://ml:{PASSWORD}@db:5432/mlflow", f"postgresql://ml:{REDACTED}@db:5432/mlflow"),
    (f"postgresql://ml:p@{PASSWORD}@db/mlflow", f"postgresql://ml:{REDACTED}@db/mlflow"),  # an unencoded '@'
    (f"https://{PASSWORD}@host/repo", f"https://{REDACTED}@host/repo"),  # a bare token as userinfo
    ("sqlite:///tmp/mlflow.db", "sqlite:///tmp/mlflow.db"),
    ("s3://bucket/mlflow", "s3://bucket/mlflow"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_uri_keeps_scheme_user_and_host_but_not_the_password(uri, shown):
    assert redact(uri) == shown
    assert redact(f"MLflow run abc at {uri} (experiment 'x')") == f"MLflow run abc at {shown} (experiment 'x')"


def test_nested_config_structures_keep_keys_and_types():
    data = {"spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": SECRET, "spark.sql.shuffle.partitions": "8"}},
            "mlflow": {"tracking_uri": f"http://u:{PASSWORD}@h", "run_name": None},
            "list": [1, 2.5, True, None, (f"s3a://k:{PASSWORD}@b/p",)]}
    assert redact(data) == {
        "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": REDACTED, "spark.sql.shuffle.partitions": "8"}},
        "mlflow": {"tracking_uri": f"http://u:{REDACTED}@h", "run_name": None},
        "list": [1, 2.5, True, None, (f"s3a://k:{REDACTED}@b/p",)]}
    assert redact({"token": None, "password": ""}) == {"token": None, "password": ""}  # nothing to hide


def test_free_text_loses_credential_values():
    text = (f"override 'spark.conf.spark.hadoop.fs.s3a.secret.key={SECRET}': not a section; "
            f"got ['fs.s3a.access.key={SECRET}', \"x.password: {SECRET}\", {{'api_key': '{SECRET}'}}]")
    shown = redact(text)
    assert SECRET not in shown and shown.count(REDACTED) == 4
    assert "spark.conf.spark.hadoop.fs.s3a.secret.key=" in shown


def _secret_conf(**extra: str) -> TrainConfig:
    return load_config(None, TrainConfig, [
        f"spark.conf={{spark.hadoop.fs.s3a.secret.key: {SECRET}, spark.sql.shuffle.partitions: '4'}}",
        f"mlflow.tracking_uri=https://bob:{PASSWORD}@mlflow.example.com"])


def test_the_real_config_keeps_the_real_values():
    conf = _secret_conf()
    assert conf.spark.conf["spark.hadoop.fs.s3a.secret.key"] == SECRET  # what the SparkSession gets
    assert conf.mlflow.tracking_uri == f"https://bob:{PASSWORD}@mlflow.example.com"
    assert mlflow_log.resolve_tracking_uri(conf.mlflow) == conf.mlflow.tracking_uri


def test_log_config_redacts_params_and_resolved_yaml(monkeypatch):
    logged: dict = {}
    monkeypatch.setattr(mlflow_log.mlflow, "log_params", lambda p: logged.setdefault("params", p))
    monkeypatch.setattr(mlflow_log.mlflow, "log_text", lambda text, name: logged.setdefault(name, text))
    mlflow_log.log_config(_secret_conf())
    params, resolved = logged["params"], logged["config/resolved.yaml"]
    assert params["spark.conf.spark.hadoop.fs.s3a.secret.key"] == REDACTED
    assert params["spark.conf.spark.sql.shuffle.partitions"] == "4"
    assert params["mlflow.tracking_uri"] == f"https://bob:{REDACTED}@mlflow.example.com"
    for text in (str(params), resolved):
        assert SECRET not in text and PASSWORD not in text
    assert "spark.hadoop.fs.s3a.secret.key: '***redacted***'" in resolved


def test_console_summary_redacts_the_tracking_uri():
    summary = RunSummary("r1", "e", f"https://bob:{PASSWORD}@mlflow.example.com", "out", counts={})
    text = format_summary(summary, [5])
    assert PASSWORD not in text and f"https://bob:{REDACTED}@mlflow.example.com" in text


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_config_errors_do_not_quote_credentials(capsys, restore_logging):
    bad = [f"spark.conf=['spark.hadoop.fs.s3a.secret.key={SECRET}']", f"mlflow.tracking_uri=[http://u:{PASSWORD}@h]"]
    with pytest.raises(Exception) as err:
        load_config(None, TrainConfig, bad)
    assert "spark.conf: expected a mapping" in str(err.value)
    assert SECRET not in str(err.value) and PASSWORD not in str(err.value)
    code = cli.run_job([*(x for b in bad for x in ("--set", b))], "t", TrainConfig, lambda spark, conf: None)
    assert code == cli.EXIT_CONFIG
    logged = capsys.readouterr().err  # the job logs to stderr (configure_logging replaces pytest's handlers)
    assert "invalid configuration" in logged and SECRET not in logged and PASSWORD not in logged


def test_tune_best_config_is_redacted_and_says_so():
    from recspark.config import TuneConfig
    from recspark.tuning.objective import TrialRecord
    from recspark.tuning.search import best_config_yaml

    conf = load_config("conf/tune.yaml", TuneConfig, [
        f"spark.conf={{spark.hadoop.fs.s3a.secret.key: {SECRET}}}",
        f"mlflow.tracking_uri=https://bob:{PASSWORD}@mlflow.example.com"])
    best = TrialRecord(number=3, params={"warp.learning_rate": 0.05}, state="COMPLETE", value=0.2)
    text = best_config_yaml(conf, best)
    assert SECRET not in text and PASSWORD not in text
    assert f"# Credentials are replaced by {REDACTED}" in text
    rerun = yaml.safe_load(text)
    assert rerun["spark"]["conf"]["spark.hadoop.fs.s3a.secret.key"] == REDACTED
    assert rerun["warp"]["learning_rate"] == 0.05
