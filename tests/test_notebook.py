"""The tutorial notebook executes without error (nbclient), built fresh from notebooks/make_tutorial.py."""

import importlib.util
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]


def _build():
    spec = importlib.util.spec_from_file_location("make_tutorial", ROOT / "notebooks" / "make_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def test_committed_notebook_is_current_and_has_no_outputs():
    committed = nbformat.read(str(ROOT / "notebooks" / "tutorial.ipynb"), as_version=4)
    assert [c.source for c in committed.cells] == [c.source for c in _build().cells], "run python notebooks/make_tutorial.py"
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")


@pytest.mark.timeout(300)
def test_tutorial_executes(tmp_path):
    nb = nbformat.read(str(ROOT / "notebooks" / "tutorial.ipynb"), as_version=4)
    env_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        if env_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backend
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "selected K:" in text
