"""The notebooks run: each is executed top to bottom (nbclient) on small data, as a user would run it.

A notebook's parameters cell (tagged ``parameters``) holds its defaults; the
test inserts a cell after it with its own values (papermill's convention,
with plain nbformat) and appends one that prints a few values the notebook
computed as JSON, which the test checks. Any cell error fails the test.
The kernel runs this interpreter (``sys.executable``), from a kernel spec
written to a temporary folder, so a user's own Jupyter kernels never matter.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # the test extra: pip install -e .[test]
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import CellExecutionError  # noqa: E402

from recspark.config import TrainConfig, load_config  # noqa: E402
from recspark.pipeline.train import run_training  # noqa: E402
from test_train_job import small_demo_overrides  # noqa: E402  (tests/e2e is on sys.path: no __init__.py)

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 300  # one cell; the walk-through's training cell is the longest (~1 min on 2 cores)

pytestmark = [pytest.mark.e2e, pytest.mark.spark]


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> Path:
    """A folder holding one kernel spec, ``recspark-test``, that starts this interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "recspark-test"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "recspark tests", "language": "python"}))
    return root


def execute(name_or_nb, kernel_specs: Path, parameters: dict[str, object], report: dict[str, str]) -> dict:
    """Run a notebook with ``parameters`` injected; return the values of the ``report`` expressions.

    ``report`` maps a name to an expression evaluated in the kernel after the
    last cell; its value must be JSON-serialisable.
    """
    nb = nbformat.read(NOTEBOOKS / name_or_nb, as_version=4) if isinstance(name_or_nb, str) else name_or_nb
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert tagged, "the notebook has no cell tagged 'parameters'"
    injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
    values = ", ".join(f"{key!r}: {expr}" for key, expr in report.items())
    nb.cells.append(nbformat.v4.new_code_cell(f"import json as _json\nprint(_json.dumps({{{values}}}))"))
    km = KernelManager(kernel_name="recspark-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_specs)]))
    NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    printed = "".join(out.get("text", "") for out in nb.cells[-1].outputs if out.output_type == "stream")
    return json.loads(printed.strip().splitlines()[-1])


def test_a_failing_cell_fails_the_run(kernel_specs):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("assert X == 1, 'parameters not injected'\n1 / 0")])
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        execute(nb, kernel_specs, {"X": 1}, {})


@pytest.fixture(scope="module")
def small_run(spark, tmp_path_factory):
    """A small demo run (generated data, ALS + WARP with tags): its config and summary."""
    tmp = tmp_path_factory.mktemp("run")
    overrides = small_demo_overrides(tmp) + ["data.generate.n_interactions=30000"]
    conf = load_config(REPO / "conf" / "demo.yaml", TrainConfig, overrides)
    return conf, run_training(spark, conf)


def test_explore_run_reads_the_runs_outputs_and_mlflow_run(small_run, kernel_specs):
    conf, summary = small_run
    got = execute("explore_run.ipynb", kernel_specs,
                  {"OUT": conf.output.dir, "TRACKING_URI": summary.tracking_uri},
                  {"run_id": "run_id", "by_model": "by_model.to_dict(orient='index')",
                   "curves": "{m: curves[m].dropna().to_dict() for m in curves}", "model": "model",
                   "user": "user", "liked": "liked", "recommended": "user_recs.item_id.tolist()"})
    assert got["run_id"] == summary.run_id
    assert set(got["by_model"]) == {"als", "warp", "popularity", "random"}
    for model, row in got["by_model"].items():
        assert row["precision_at_5"] == pytest.approx(summary.metrics[model]["precision_at_5"])
        assert row["auc"] == pytest.approx(summary.metrics[model]["auc"])
    assert sorted(int(s) for s in got["curves"]["als"]) == [2, 6]  # als.learning_curve
    assert sorted(int(s) for s in got["curves"]["warp"]) == [3, 6]  # warp.eval_every=3 of 6 epochs
    assert got["curves"]["warp"]["6"] == pytest.approx(summary.metrics["warp"]["precision_at_5"])
    assert got["model"] == "warp"
    assert len(got["recommended"]) == conf.evaluation.recommend_k
    assert got["liked"] and not set(got["recommended"]) & set(got["liked"])  # seen items are excluded
