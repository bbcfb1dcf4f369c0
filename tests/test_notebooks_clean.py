"""Notebooks are committed with outputs stripped and listed in notebooks/README.md."""
import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_listed(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code"
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name}: strip the outputs before committing"
    assert f"({path.name})" in (path.parent / "README.md").read_text(), f"list {path.name} in notebooks/README.md"
