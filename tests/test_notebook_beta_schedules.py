"""notebooks/beta_schedules.py (jupytext percent source) executes top to bottom in the python3 kernel.

The notebook asserts its own finding (the bound holds for every β schedule at every step) and
prints its table; outputs are never committed. (It runs in a few seconds; the client's timeout
of 120 s per cell only stops a hang.)
"""
from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "beta_schedules.py"


@pytest.fixture(scope="module")
def kernel_name():
    """The venv's ``python3`` kernel, installed into the venv (``--sys-prefix``) when missing."""
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager

    if "python3" not in KernelSpecManager().find_kernel_specs():
        from ipykernel.kernelspec import install

        install(prefix=__import__("sys").prefix, kernel_name="python3")
    return "python3"


def test_beta_schedules_notebook_runs(kernel_name, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = jupytext.read(NOTEBOOK)
    assert not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")  # no committed outputs
    nbclient.NotebookClient(nb, timeout=120, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "β condition at this γ" in text and "adam 0.9999 (bias corr.)" in text
    assert "observed/bound, largest over the second half" in text
