"""Imports between recspark's packages run one way: a layer never imports a layer above it.

Why: an upward import drags the higher layer's dependencies (and import time) into
everything below it, and makes cycles one edit away; e.g. the config once imported the
data generator, so reading a YAML file loaded NumPy and pyarrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "recspark"

#: Layer of each top-level package or module; a module may import its own layer and lower.
LAYERS: dict[str, int] = {
    "data": 1,
    "models": 2,
    "evaluation": 3,
    "tracking": 4,
    "runs": 4,  # run folders: staged outputs, publish, timing, the saved model folder
    "tuning": 5,
    "products": 5,
    "pipeline": 5,
    "cli": 6,
}
#: Foundation modules (below data): they may import each other, nothing else of recspark's.
FOUNDATION = {"config", "errors", "redact", "session", "zip_imports"}
#: The config is read before anything else runs, so it stays lighter still.
CONFIG_MAY_IMPORT = {"errors", "redact"}

def _top(module: str) -> str | None:
    """``recspark.models.topk`` -> ``models``; None for modules outside recspark or the package root."""
    parts = module.split(".")
    return parts[1] if parts[0] == "recspark" and len(parts) > 1 else None


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported recspark module) for every import in ``path``, also inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from recspark import cli`` imports the module recspark.cli.
            found += [(node.lineno, f"{target}.{a.name}" if target == "recspark" else target) for a in node.names]
    return [(line, name) for line, name in found if name.startswith("recspark.")]


def _violations(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        own = _top(module)
        if own is None:  # recspark/__init__.py
            continue
        for line, target in _imports(path, module):
            other = _top(target)
            if other is None or other == own:
                continue
            if own == "config":
                allowed = other in CONFIG_MAY_IMPORT
            elif other in FOUNDATION:
                allowed = True
            else:
                allowed = own not in FOUNDATION and LAYERS[other] <= LAYERS[own]
            if not allowed:
                problems.append(f"{path.relative_to(root.parent)}:{line} ({own}) imports {target}")
    return problems


def test_every_package_is_assigned_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name != "__init__.py"}
    assert names == set(LAYERS) | FOUNDATION


def test_no_module_imports_a_layer_above_it():
    assert _violations(PACKAGE) == []


def test_an_upward_import_is_caught(tmp_path):
    pkg = tmp_path / "recspark"
    (pkg / "models").mkdir(parents=True)
    (pkg / "models" / "topk.py").write_text("def f():\n    from recspark.evaluation.metrics import top_k\n")
    (pkg / "config.py").write_text("from recspark.data.synthetic import SyntheticSpec\nfrom recspark import errors\n")
    assert _violations(pkg) == [
        "recspark/config.py:1 (config) imports recspark.data.synthetic",
        "recspark/models/topk.py:2 (models) imports recspark.evaluation.metrics",
    ]


def test_the_package_ships_its_type_hints():
    """PEP 561: py.typed in the package and in setup.cfg's package data, so users' type checkers read recspark."""
    import configparser

    assert (PACKAGE / "py.typed").is_file()
    setup = configparser.ConfigParser()
    setup.read(PACKAGE.parent / "setup.cfg")
    assert "py.typed" in setup["options.package_data"]["recspark"]
