"""The generic YAML -> frozen-dataclass loader: knows no job, only how to build, check and print a dataclass.

Every problem is reported at once under its dotted key, with the closest key
for a typo; ``--set section.key=value`` overrides are parsed as YAML 1.2 and
blamed by name when their value is the bad one. Schemas declare ranges with
:func:`bounded`; :class:`Checked` applies the same checks to values set from Python.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import math
import numbers
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from recspark.errors import ConfigError
from recspark.redact import redact

T = TypeVar("T")


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
             lt: float | None = None, doc: str = "", spark: str | None = None) -> Any:
    """A dataclass field with its numeric range, checked wherever a value is set (:func:`field_problems`).

    Hyperparameters also carry their ``doc`` and, when it is not the field
    name in camelCase, the name of their ``RankingFM`` Param (``spark``).
    """
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc, "spark": spark})


def listed(*items: Any) -> Any:
    return field(default_factory=lambda: list(items))


class Checked:
    """Dataclass mixin: constructing one checks every field's type and range, as the YAML loader does.

    So a value set from Python (``KernelParams(rho=1.0)``, a ``RankingFM``
    Param, a search trial) is refused with the same message as in YAML.
    """

    def __post_init__(self) -> None:
        problems = field_problems(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if problems:
            raise ConfigError(f"invalid {type(self).__name__}: " + "; ".join(problems))


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e6`` is a number, as a person means it (1.1 wants ``1.0e6``).

    A date that is not a calendar date (``2026-13-40``) stays a string, so the
    field that reads it reports it, instead of PyYAML raising a bare ValueError.
    """

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:  # type: ignore[override]
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def load_config(path: str | Path | None, cls: type[T], overrides: list[str] | None = None) -> T:
    """Load ``path`` (YAML; None for defaults only), apply ``key=value`` overrides, validate.

    Raises
    ------
    ConfigError
        Listing every problem found, each under its dotted key.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = _parse(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(redact(f"{path}: not valid YAML: {err}")) from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    problems: list[str] = []
    for item in overrides or []:
        _apply_override(raw, item, problems, cls)
    conf = _build(cls, raw, "", problems)
    if problems:
        where = f" in {path}" if path else ""
        problems = [_blame(problem, overrides or []) for problem in problems]
        raise ConfigError(redact(f"invalid configuration{where}:\n  - " + "\n  - ".join(problems)))
    return conf


def _blame(problem: str, overrides: list[str]) -> str:
    """Name the ``--set`` a problem comes from, when its value was given on the command line (the last one wins)."""
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if key and (problem.startswith(f"{key}:") or problem.startswith(f"{key}[")):
            return f"{problem} (from --set {item})"
    return problem


def _apply_override(raw: dict[str, Any], item: str, problems: list[str], cls: type) -> None:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        problems.append(f"override {item!r}: expected section.key=value")
        return
    parts = _key_parts(cls, key.strip().split("."))
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(f"override {item!r}: {part!r} is not a section")
            return
        node = child
    node[parts[-1]] = _parse(value) if value.strip() else None


def _key_parts(cls: type, parts: list[str]) -> list[str]:
    """Split a dotted key along the schema: under a free mapping (``spark.conf``) the rest is one key.

    So ``spark.conf.spark.ui.port=4079`` sets the Spark setting ``spark.ui.port``.
    """
    node: Any = cls
    for i, part in enumerate(parts[:-1]):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            break
        tp = _hints(node)[part]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
            typing.Union, types.UnionType) else [tp]
        node = inner[0] if len(inner) == 1 else None
        if typing.get_origin(node) is dict:
            return parts[:i + 1] + [".".join(parts[i + 1:])]
    return parts


def _build(cls: type, raw: Any, prefix: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from ``raw``, appending problems instead of raising."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or '<top>'}: expected a mapping, got {raw!r}")
        return None
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            problems.append(f"{prefix}{key}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        found = len(problems)
        value = _convert(hints[name], raw[name], f"{prefix}{name}", problems)
        if value is not _INVALID:
            _check_range(f, value, f"{prefix}{name}", problems)
        if len(problems) == found:  # a refused value is reported once, here, not again by the section
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a section's own __post_init__ checks
        problems.append(f"{prefix.rstrip('.')}: {err}" if prefix else str(err))
        return None


_INVALID = object()


def _convert(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    if tp is Any:  # checked where it is used (tune.space values, by the key they set)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, problems)
    if dataclasses.is_dataclass(tp):
        built = _build(tp, value, key + ".", problems)
        return _INVALID if built is None else built
    if origin is Literal:
        if value not in args:
            problems.append(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
            return _INVALID
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {value!r}")
            return _INVALID
        items = [_convert(args[0], v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
        return _INVALID if _INVALID in items else items
    if origin is tuple:
        if not isinstance(value, list) or len(value) != len(args):
            problems.append(f"{key}: expected a list of {len(args)} values, got {value!r}")
            return _INVALID
        items = [_convert(a, v, f"{key}[{i}]", problems) for i, (a, v) in enumerate(zip(args, value))]
        return _INVALID if _INVALID in items else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {value!r}")
            return _INVALID
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: expected true/false, got {value!r}")
            return _INVALID
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            problems.append(f"{key}: expected an integer, got {value!r}")
            return _INVALID
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            problems.append(f"{key}: expected a number, got {value!r}")
            return _INVALID
        if not math.isfinite(value):
            problems.append(f"{key}: expected a finite number, got {value!r}")
            return _INVALID
        return float(value)
    if tp is str:
        if isinstance(value, datetime.date):  # YAML reads 2024-06-01 as a date
            return value.isoformat()
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            problems.append(f"{key}: expected a string, got {value!r}")
            return _INVALID
        return str(value)
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module, not user input


def _check_range(f: dataclasses.Field, value: Any, key: str, problems: list[str]) -> None:
    if value is None or not isinstance(value, (int, float)):
        return
    ge, gt, le, lt = (f.metadata.get(bound) for bound in ("ge", "gt", "le", "lt"))
    if ge is not None and value < ge:
        problems.append(f"{key}: {value} is out of range; must be >= {ge}")
    if gt is not None and value <= gt:
        problems.append(f"{key}: {value} is out of range; must be > {gt}")
    if le is not None and value > le:
        problems.append(f"{key}: {value} is out of range; must be <= {le}")
    if lt is not None and value >= lt:
        problems.append(f"{key}: {value} is out of range; must be < {lt}")


def field_problems(cls: type, values: Mapping[str, Any], label: Callable[[str], str] = str) -> list[str]:
    """Type and range problems of ``values`` for dataclass ``cls``'s fields (absent ones are not checked).

    Each problem names its field as ``label(field name)``: the dotted YAML key,
    the field itself, or a Spark Param name.
    """
    hints = _hints(cls)
    problems: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in values:
            value = _convert(hints[f.name], values[f.name], label(f.name), problems)
            if value is not _INVALID:
                _check_range(f, value, label(f.name), problems)
    return problems


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def with_values(conf: T, values: Mapping[str, Any]) -> T:
    """A copy of ``conf`` with dotted keys set (``{"warp.learning_rate": 0.1}``), checked as YAML values are.

    For code that varies a loaded config (hyperparameter search trials): types, ranges and each
    section's own checks apply, so a trial never runs a config the YAML loader would refuse.

    Raises
    ------
    ConfigError
        Listing every problem, each under its dotted key.
    """
    problems: list[str] = []
    for key, value in values.items():
        conf = _with_value(conf, key.split("."), value, key, problems)
    if problems:
        raise ConfigError(redact("; ".join(problems)))
    return conf


def _with_value(node: Any, parts: list[str], value: Any, key: str, problems: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
    name = parts[0]
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1)
        problems.append(f"{key}: unknown key" + (f" (did you mean '{close[0]}' for '{name}'?)" if close else ""))
        return node
    if len(parts) > 1:
        new = _with_value(getattr(node, name), parts[1:], value, key, problems)
    else:
        found = len(problems)
        new = _convert(_hints(type(node))[name], value, key, problems)
        if new is not _INVALID:
            _check_range(fields[name], new, key, problems)
        if len(problems) > found:
            return node
    try:
        return dataclasses.replace(node, **{name: new})
    except ConfigError as err:  # the section's own __post_init__ checks
        problems.append(f"{key}: {err}")
        return node


# --------------------------------------------------------------------------- output


def to_dict(conf: Any) -> dict[str, Any]:
    """The resolved config as plain nested dicts (for the YAML artifact)."""
    return dataclasses.asdict(conf)


def flatten(conf: Any) -> dict[str, str]:
    """Dotted ``section.key -> str(value)`` pairs (for MLflow params)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
            for i, value in enumerate(node):  # features.items.sources.0.group
                walk(value, f"{prefix}{i}.")
        else:
            out[prefix[:-1]] = "" if node is None else str(node)

    walk(to_dict(conf), "")
    return out
