"""The notebooks (jupytext percent sources) execute top to bottom without error, with no outputs
committed (each takes seconds; the client's timeout of 120 s per cell only stops a hang)."""
from __future__ import annotations

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
    nb = execute(NOTEBOOKS / name)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "stream" for o in outputs)  # it printed its findings
