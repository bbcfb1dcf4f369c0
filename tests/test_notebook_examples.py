"""Claims inside the notebooks that a reader relies on, checked outside nbmake.

The worked example of notebook 03 must be *computed* (change q, k, v and every number follows),
asymmetric (three different weights, a context that is none of the values), and the text
around it must not hard-code its numbers.
"""
import json
import pathlib
import re

import numpy as np
import pytest

NB = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def _cells(name):
    return json.loads((NB / name).read_text())["cells"]


def _code(cell):
    # drop IPython magics so the cell runs under plain exec
    return "".join(line for line in cell["source"] if not line.lstrip().startswith("%"))


@pytest.fixture()
def worked_example(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("NPATTENTION_FAST", "1")
    cells = _cells("03_three_steps.ipynb")
    code = [c for c in cells if c["cell_type"] == "code"]
    example = [c for c in code if re.search(r"^s_hand = ", "".join(c["source"]), re.M)]
    assert len(example) == 1, "notebook 03 must have one worked-example cell computing s_hand"
    ns = {}
    exec(_code(code[0]), ns)  # the imports cell
    exec(_code(example[0]), ns)
    plt.close("all")
    return ns, cells


def test_worked_example_is_computed_from_q_k_v(worked_example):
    ns, _ = worked_example
    to_numpy = ns["to_numpy"]
    q, k, v = (to_numpy(ns[n])[0] for n in ("q", "k", "v"))
    s = q @ k.T
    a = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    np.testing.assert_allclose(ns["s_hand"], s[0])
    np.testing.assert_allclose(ns["a_hand"], a[0])
    np.testing.assert_allclose(to_numpy(ns["c"])[0], a @ v)
    np.testing.assert_allclose(ns["c_hand"], (a @ v)[0])
    d = q.shape[-1]
    a_scaled = np.exp(s / np.sqrt(d)) / np.exp(s / np.sqrt(d)).sum()
    np.testing.assert_allclose(to_numpy(ns["a_scaled"])[0], a_scaled)


def test_worked_example_is_asymmetric(worked_example):
    ns, _ = worked_example
    a = np.asarray(ns["a_hand"])
    v = ns["to_numpy"](ns["v"])[0]
    gaps = np.abs(a[:, None] - a[None, :])[~np.eye(len(a), dtype=bool)]
    assert gaps.min() > 0.05, f"every key should get a clearly different weight, got {a}"
    assert np.min(np.abs(v - ns["c_hand"]).sum(-1)) > 0.1, "the context must not equal one of the values"
    assert np.ptp(ns["to_numpy"](ns["a_scaled"])) < np.ptp(a), "scaling by 1/sqrt(D) should flatten the weights"


def test_text_does_not_type_the_worked_numbers(worked_example):
    ns, cells = worked_example
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    numbers = list(ns["a_hand"]) + list(ns["c_hand"]) + list(ns["s_hand"] / np.sqrt(2))
    for x in numbers:
        for digits in (2, 3):
            token = f"{x:.{digits}f}"
            assert not re.search(rf"(?<![\d.]){re.escape(token)}(?!\d)", text), \
                f"markdown hard-codes {token}: print it from the code instead"


@pytest.mark.parametrize("path", sorted(NB.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
def test_notebooks_use_the_viz_colour_maps(path):
    """One colour-map convention: a notebook names no colour map other than viz's (or class colours)."""
    from npattention import viz

    src = "".join("".join(c["source"]) for c in _cells(path.name) if c["cell_type"] == "code")
    allowed = {viz.CMAP, viz.CMAP_SIGNED, viz.CMAP_MASK, viz.CMAP_IMAGE, "tab10", "tab20c", "brg"}  # + categorical colours
    literal = set(re.findall(r"cmap\s*=\s*['\"](\w+)['\"]", src)) - allowed
    assert not literal, f"{path.name}: use viz.CMAP / viz.CMAP_SIGNED / viz.CMAP_MASK, not {sorted(literal)}"


@pytest.mark.parametrize("path", sorted(NB.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
def test_notebooks_print_no_progress_bars(path):
    src = "".join("".join(c["source"]) for c in _cells(path.name) if c["cell_type"] == "code")
    assert "progress=True" not in src and "tqdm" not in src, f"{path.name}: no progress bars in notebooks"


def test_run_all_finds_every_notebook_in_order():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_all", NB / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    names = [p.name for p in run_all.notebooks()]
    assert names == sorted(p.name for p in NB.glob("[0-9][0-9]_*.ipynb")) and len(names) >= 11
    assert [p.name[:2] for p in run_all.notebooks(["07", "10"])] == ["07", "10"]
