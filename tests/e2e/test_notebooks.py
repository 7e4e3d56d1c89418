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
import sys
from pathlib import Path

import pytest

import nbformat
import pandas as pd
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 600  # per cell; the walk-through's training cell is the longest (minutes on a busy 2-core machine)

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
    # Paths as Path(...): a notebook's parameters cell imports pathlib.Path.
    injected = "\n".join(f"{key} = Path({str(value)!r})" if isinstance(value, Path) else f"{key} = {value!r}"
                         for key, value in parameters.items())
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


def test_explore_run_reads_the_runs_outputs_and_mlflow_run(demo_run, kernel_specs):
    conf, summary = demo_run  # the training job's tests' run (tests/e2e/conftest.py)
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


def tag_counts(lastfm: Path, min_taggers: int = 2) -> pd.DataFrame:
    """``name, tag, taggers``: artist tags given by at least ``min_taggers`` users, from the raw files."""
    tagged = pd.read_csv(lastfm / "user_taggedartists.dat", sep="\t")
    names = pd.read_csv(lastfm / "tags.dat", sep="\t", encoding="latin-1")
    artists = pd.read_csv(lastfm / "artists.dat", sep="\t").rename(columns={"id": "artistID"})
    df = tagged.merge(names, on="tagID").merge(artists, on="artistID")
    df["tag"] = df.tagValue.str.strip().str.lower()
    counted = df.groupby(["name", "tag"]).userID.nunique().rename("taggers").reset_index()
    return counted[counted.taggers >= min_taggers]


def top_tags(counts: pd.DataFrame, artist: str, k: int = 3) -> set[str]:
    """The ``k`` tags most users gave ``artist`` (ties by name)."""
    own = counts[counts.name == artist].sort_values(["taggers", "tag"], ascending=[False, True])
    return set(own.tag.head(k))


@pytest.fixture(scope="module")
def lastfm(data_dir) -> Path:
    path = data_dir / "hetrec2011-lastfm-2k"
    if not (path / "user_taggedartists.dat").is_file():
        pytest.skip(f"Last.fm HetRec 2011 data not found at {path} (set RECSPARK_DATA_DIR)")
    return path


def test_lastfm_walkthrough_trains_both_models_and_computes_the_products(lastfm, kernel_specs, tmp_path):
    got = execute("lastfm_walkthrough.ipynb", kernel_specs,
                  {"DATA": lastfm, "WORK": tmp_path, "TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
                   "ARTIFACTS": tmp_path / "mlruns",
                   "N_USERS": 500, "ALS_ITERATIONS": [2, 4], "WARP_EPOCHS": 6, "EVAL_EVERY": 3},
                  {"query": "QUERY_ARTIST", "cold": "COLD_ARTIST",
                   "similar": "{m: df.similar_item_id.tolist() for m, df in similar.items()}",
                   "curves": "{m: s.to_dict() for m, s in curves.items()}",
                   "metrics": "summary.metrics", "tag_artists": "{c: tag_artists[c].tolist() for c in tag_artists}",
                   "suggested": "suggested.feature.tolist()", "user": "user", "because": "because.because_item_id.tolist()",
                   "cold_neighbours": "cold_neighbours.similar_item_id.tolist()",
                   "cold_in_als": "COLD_ARTIST in set(als.items.keys)"})
    plays = pd.read_parquet(tmp_path / "data" / "plays")
    assert plays.user_id.nunique() == 500
    assert got["cold"] not in set(plays.item_id)  # the notebook removed its plays
    assert sorted(map(int, got["curves"]["als"])) == [2, 4]  # ALS_ITERATIONS
    assert sorted(map(int, got["curves"]["warp"])) == [3, 6]  # every EVAL_EVERY of WARP_EPOCHS
    assert got["metrics"]["warp"]["precision_at_5"] > got["metrics"]["popularity"]["precision_at_5"]
    assert got["metrics"]["als"]["precision_at_5"] > got["metrics"]["popularity"]["precision_at_5"]
    # Similar artists of a well-known artist: ten, not itself, most of them sharing one of its tags.
    for model in ("warp", "als"):
        assert len(got["similar"][model]) == 10 and got["query"] not in got["similar"][model]
    counts = tag_counts(lastfm)
    tags = counts.groupby("name").tag.agg(set).to_dict()
    query_top = top_tags(counts, got["query"])  # Metallica: metal, heavy metal, thrash metal
    # Measured: 10 of 10 (ALS: 8); a random artist has one of them 6% of the time.
    assert sum(bool(tags.get(a, set()) & query_top) for a in got["similar"]["warp"]) >= 7, got["similar"]["warp"]
    assert all(len(artists) == 8 for artists in got["tag_artists"].values()) and got["tag_artists"]
    # Tag suggestions are tags the artist does not have.
    assert got["suggested"] and not {f.removeprefix("tag_") for f in got["suggested"]} & tags[got["query"]]
    # An explanation is an artist the user played.
    assert got["because"] and set(got["because"]) <= set(plays[plays.user_id == got["user"]].item_id)
    # The cold-start artist: no ALS vector, but WARP neighbours from its tags alone.
    assert not got["cold_in_als"]
    cold_top = top_tags(counts, got["cold"])  # Daft Punk: electronic, dance, electronica (random artist: 23%)
    assert len(got["cold_neighbours"]) == 10 and got["cold"] not in got["cold_neighbours"]
    assert sum(bool(tags.get(a, set()) & cold_top) for a in got["cold_neighbours"]) >= 7, got["cold_neighbours"]
