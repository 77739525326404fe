"""The notebooks (jupytext percent sources) execute top to bottom without error, each in under
a minute (the budget on a 2-core machine), with no outputs committed."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
OWN = ["quickstart.py", "heterogeneous.py", "verify_theorem.py"]


def execute(path: Path, timeout: int = 120):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


@pytest.mark.parametrize("name", OWN)
def test_notebook_runs(name, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    jupytext = pytest.importorskip("jupytext")
    assert not any(c.get("outputs") for c in jupytext.read(NOTEBOOKS / name).cells if c.cell_type == "code")
    t0 = time.perf_counter()
    nb = execute(NOTEBOOKS / name)
    assert time.perf_counter() - t0 < 60
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "stream" for o in outputs)  # it printed its findings
