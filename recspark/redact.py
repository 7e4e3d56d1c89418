"""Keep credentials out of everything recspark logs, prints or writes about its config.

A job config may carry secrets: ``spark.conf`` entries such as
``spark.hadoop.fs.s3a.secret.key``, or a tracking URI with ``user:password@``.
The SparkSession and the MLflow client get the real values; every *copy* that
leaves the process (MLflow params, ``config/resolved.yaml``, the tune job's
``best_config.yaml``, console summaries, log lines, error messages) goes
through :func:`redact` first.

Rules:

* a mapping value whose key names a credential (secret, password, passwd,
  token, credential, access/secret/private key, apikey/api_key, private) is
  replaced by :data:`REDACTED`, whatever it is;
* in any string, a URI's userinfo loses its password
  (``https://bob:pw@host`` -> ``https://bob:***redacted***@host``); a userinfo
  with no password (``https://TOKEN@host``) is replaced whole;
* in free text (error messages), ``<credential key>=value`` and
  ``<credential key>: value`` lose the value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***redacted***"

_SENSITIVE = r"secret|passw(?:or)?d|token|credential|private|(?:access|secret|api)[._-]?key"
_SENSITIVE_KEY = re.compile(_SENSITIVE, re.IGNORECASE)
# scheme://user:password@  or  scheme://token@  (no '/', '@' or whitespace inside the userinfo)
_URI_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:'\"]*)(?::(?P<pw>[^/\s'\"]*))?@")
# a credential-named key followed by = or : and a value, e.g. in "override 'x.secret.key=abc'"
_KEY_VALUE = re.compile(
    rf"(?P<key>[\w.-]*(?:{_SENSITIVE})[\w.-]*['\"]?\s*(?:=|:\s)\s*)(?P<quote>['\"]?)(?P<value>[^\s'\",}}\]]+)",
    re.IGNORECASE)


def is_sensitive_key(key: object) -> bool:
    """Whether a config key (``spark.hadoop.fs.s3a.secret.key``, ``api_key`` ...) names a credential."""
    return bool(_SENSITIVE_KEY.search(str(key)))


def _redact_text(text: str) -> str:
    def uri(m: re.Match) -> str:
        if m.group("pw") is None:
            return f"{m.group('scheme')}{REDACTED}@" if m.group("user") else m.group(0)
        return f"{m.group('scheme')}{m.group('user')}:{REDACTED}@"

    text = _URI_USERINFO.sub(uri, text)
    return _KEY_VALUE.sub(lambda m: f"{m.group('key')}{m.group('quote')}{REDACTED}"
                          if m.group("value") != REDACTED else m.group(0), text)


def redact(value: Any, key: object | None = None) -> Any:
    """A copy of ``value`` safe to log: credentials replaced by :data:`REDACTED`.

    ``value`` may be a config dataclass (returned as nested dicts), a mapping,
    a list, a string (URIs and ``key=value`` text), or anything else (returned
    as is). ``key`` is the name ``value`` is stored under, when known: a
    credential key redacts the whole value. Never use the result to configure
    Spark or MLflow -- only to show it.

    >>> redact({"spark.hadoop.fs.s3a.secret.key": "abc", "spark.sql.shuffle.partitions": "8"})
    {'spark.hadoop.fs.s3a.secret.key': '***redacted***', 'spark.sql.shuffle.partitions': '8'}
    >>> redact("https://bob:hunter2@mlflow.example.com:5000")
    'https://bob:***redacted***@mlflow.example.com:5000'
    """
    if key is not None and is_sensitive_key(key) and value not in (None, ""):
        return REDACTED
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return _redact_text(value)
    return value
