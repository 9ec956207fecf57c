"""The notebooks in docs/notebooks run top to bottom on their small default data, and are committed without outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client import KernelManager  # noqa: E402  (installed with nbclient)

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "docs" / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 120  # per cell; each notebook takes ~10-20 s on 2 cores


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_runs_on_default_data(path, monkeypatch, tmp_path):
    for var in ("SKILD_STORE", "SKILD_TRUTH", "SKILD_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3")
    # jupyter_client replaces the kernelspec's "python" with sys.executable: the kernel runs in
    # this interpreter (the venv), where the package is installed.
    assert km.format_kernel_cmd()[0] == sys.executable
    client = nbclient.NotebookClient(nb, km=km, timeout=TIMEOUT_S, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
