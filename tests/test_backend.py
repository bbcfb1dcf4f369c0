import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from npattention import backend

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "npattention"


def test_only_backend_imports_numpy_or_cupy():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "backend.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                if n.split(".")[0] in {"numpy", "cupy", "cupyx", "torch", "jax", "autograd"}:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}: import {n}")
    assert offenders == []


def _select_in_subprocess(value):
    env = dict(os.environ, NPATTENTION_BACKEND=value)
    code = "import npattention.backend as b; print(b.BACKEND)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_default_backend_is_numpy():
    assert _select_in_subprocess("numpy").stdout.strip() == "numpy"
    assert backend.select_backend(None)[0] == "numpy"


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy and a device are present here")
def test_auto_falls_back_to_numpy_without_cupy():
    assert _select_in_subprocess("auto").stdout.strip() == "numpy"


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy and a device are present here")
def test_cupy_without_cupy_fails_with_clear_message():
    result = _select_in_subprocess("cupy")
    assert result.returncode != 0
    assert "BackendError" in result.stderr
    assert 'pip install "npattention[gpu]"' in result.stderr or "no CUDA device" in result.stderr


def test_unknown_backend_name_is_rejected():
    with pytest.raises(backend.BackendError, match="'numpy', 'cupy' or 'auto'"):
        backend.select_backend("tensorflow")


def test_generator_is_seeded_and_uses_default_dtype():
    a = backend.Generator(3).normal((2, 3))
    b = backend.Generator(3).normal((2, 3))
    assert a.dtype == backend.DEFAULT_DTYPE == np.float32
    np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    expected = np.random.default_rng(3).normal(0, 1, (2, 3)).astype(np.float32)
    np.testing.assert_array_equal(backend.to_numpy(a), expected)


def test_generator_state_round_trip():
    g = backend.Generator(1)
    state = g.get_state()
    first = backend.to_numpy(g.random(4))
    g.set_state(state)
    np.testing.assert_array_equal(backend.to_numpy(g.random(4)), first)


def test_add_at_adds_repeated_indices():
    target = backend.xp.zeros(3)
    backend.add_at(target, backend.xp.asarray([0, 2, 0]), backend.xp.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(backend.to_numpy(target), [4.0, 0.0, 2.0])
