"""Backend conformance: the same seeded cases give the same numbers on NumPy and CuPy.

The CuPy half runs only where CuPy and a CUDA device work (marked ``gpu``); on a
CPU-only machine the harness itself is still exercised on NumPy.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from npattention import backend, conformance


gpu = pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a CUDA device")


def _dump(tmp_path, name, backend_name, *extra):
    path = tmp_path / f"{name}.npz"
    env = dict(os.environ, NPATTENTION_BACKEND=backend_name)
    result = subprocess.run([sys.executable, "-m", "npattention.conformance", "dump", str(path), *extra],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with np.load(path, allow_pickle=False) as f:
        return dict(f)


def test_numpy_runs_are_deterministic_and_cover_every_module():
    first = conformance.collect()
    second = conformance.collect()
    assert conformance.compare(first, second, rtol=0, atol=0) == []
    modules = {key.split("/")[0] for key in first}
    assert modules == set(conformance.registered())
    assert all(np.all(np.isfinite(v)) for v in first.values())


def test_compare_reports_differences():
    a = {"M/0/output": np.ones(3)}
    b = {"M/0/output": np.ones(3) + 1e-3, "M/0/grad_w": np.zeros(2)}
    problems = conformance.compare(a, b)
    assert problems == ["M/0/grad_w: only in the second", "M/0/output: max abs difference 1.000e-03"]


@gpu
@pytest.mark.gpu
def test_cupy_matches_numpy(tmp_path):
    cpu = _dump(tmp_path, "cpu", "numpy")
    gpu_ = _dump(tmp_path, "gpu", "cupy")
    assert conformance.compare(cpu, gpu_, rtol=1e-7, atol=1e-9) == []


@gpu
@pytest.mark.gpu
def test_gradcheck_passes_on_cupy():
    env = dict(os.environ, NPATTENTION_BACKEND="cupy")
    result = subprocess.run([sys.executable, "-m", "npattention", "gradcheck"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout
