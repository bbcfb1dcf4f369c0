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


# ------------------------------------------------------------------ add_at against a Python loop
def _loop_add_at(target, indices, values):
    """``target[indices] += values`` one index at a time: the obviously-correct reference."""
    target = target.copy()
    arrays = indices if isinstance(indices, tuple) else (indices,)
    arrays = np.broadcast_arrays(*[np.asarray(a) for a in arrays])
    values = np.broadcast_to(values, arrays[0].shape + target.shape[len(arrays):])
    for pos in np.ndindex(*arrays[0].shape):
        target[tuple(int(a[pos]) for a in arrays)] += values[pos]
    return target


def _add_at_cases():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, 40)   # 40 ids into 5 rows: every row repeats
    return {
        "1-D ids into a 1-D array": ((7,), rng.integers(0, 7, 30), rng.normal(size=30)),
        "1-D ids, rows of a 2-D array": ((5, 6), ids, rng.normal(size=(40, 6))),
        "ids of shape (4, 10), rows of (5, 2, 3)": ((5, 2, 3), ids.reshape(4, 10), rng.normal(size=(4, 10, 2, 3))),
        "a tuple of 2 arrays, all axes": ((4, 5), (ids % 4, ids), rng.normal(size=40)),
        "a tuple of 3 arrays, broadcast against each other": (
            (2, 3, 4), (rng.integers(0, 2, (6, 1)), rng.integers(0, 3, (1, 5)), rng.integers(0, 4, (6, 5))),
            rng.normal(size=(6, 5))),
        "a tuple of 2 arrays, the last axis whole": ((3, 5, 4), (ids % 3, ids), rng.normal(size=(40, 4))),
        "a scalar value": ((5, 5), (ids, ids[::-1].copy()), 1.0),
        "a row broadcast to every id": ((5, 6), ids, rng.normal(size=6)),
        "uint8 ids": ((5, 6), ids.astype(np.uint8), rng.normal(size=(40, 6))),
        "empty ids": ((5, 6), np.zeros(0, dtype=np.int64), np.zeros((0, 6))),
        "negative ids (counted from the end)": ((5, 6), ids - 5, rng.normal(size=(40, 6))),
        "rows of zero length": ((5, 0), ids, np.zeros((40, 0))),
        "more than one chunk": ((50, 64), rng.integers(0, 50, 3000), rng.normal(size=(3000, 64))),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(_add_at_cases()))
def test_add_at_matches_a_python_loop_and_numpy_add_at(case, dtype):
    shape, indices, values = _add_at_cases()[case]
    values = np.asarray(values, dtype=dtype) if np.ndim(values) else values
    start = np.arange(np.prod(shape), dtype=dtype).reshape(shape) / 7
    target = start.copy()
    assert backend.add_at(target, indices, values) is target   # in place, returns the target
    expected = start.copy()
    np.add.at(expected, indices, values)
    np.testing.assert_array_equal(target, expected)   # the same additions in the same order: bit for bit
    np.testing.assert_allclose(target, _loop_add_at(start, indices, values), rtol=1e-6 if dtype == np.float32 else 1e-13)


def test_add_at_chunks_add_up_like_one_call(monkeypatch):
    """Chunk boundaries anywhere (7 elements per chunk: mid-row and across rows) change nothing."""
    monkeypatch.setattr(backend, "_ADD_AT_CHUNK", 7)
    for case in ("1-D ids, rows of a 2-D array", "a tuple of 2 arrays, all axes", "ids of shape (4, 10), rows of (5, 2, 3)"):
        shape, indices, values = _add_at_cases()[case]
        target, expected = np.ones(shape), np.ones(shape)
        backend.add_at(target, indices, values)
        np.add.at(expected, indices, values)
        np.testing.assert_array_equal(target, expected)


def test_add_at_general_cases_fall_back_to_numpy_add_at():
    """Slices, boolean masks, non-contiguous targets and bad indices keep numpy.add.at's behaviour."""
    rng = np.random.default_rng(1)
    target = rng.normal(size=(4, 6))
    for indices, values in [((slice(None), np.array([0, 0, 2])), 1.0), (np.array([True, False, True, True]), 2.0),
                            ((np.array([1, 1]), slice(1, 3)), rng.normal(size=(2, 2)))]:
        got, expected = target.copy(), target.copy()
        backend.add_at(got, indices, values)
        np.add.at(expected, indices, values)
        np.testing.assert_array_equal(got, expected)
    view = target.copy().T   # not C-contiguous: reshape(-1) would copy, so the general path
    expected = view.copy()
    backend.add_at(view, np.array([0, 5, 5]), 1.0)
    np.add.at(expected, np.array([0, 5, 5]), 1.0)
    np.testing.assert_array_equal(view, expected)
    with pytest.raises(IndexError):
        backend.add_at(target.copy(), np.array([0, 4]), 1.0)   # row 4 of 4
    with pytest.raises(IndexError):
        backend.add_at(target.copy(), (np.array([0]), np.array([6])), 1.0)   # would wrap into the next row if flattened
    with pytest.raises(ValueError):
        backend.add_at(target.copy(), np.array([0, 1]), np.ones(5))   # values do not fit target[indices]
    counts = np.zeros((3, 3), dtype=np.int64)   # integer targets too
    backend.add_at(counts, (np.array([0, 0, 2]), np.array([1, 1, 0])), 1)
    np.testing.assert_array_equal(counts, [[0, 2, 0], [0, 0, 0], [1, 0, 0]])


def test_add_at_takes_the_flat_path_for_integer_array_scatters():
    from npattention.backend import _row_index
    fast = {k for k, (shape, indices, _) in _add_at_cases().items() if _row_index(np.zeros(shape), indices) is not None}
    assert fast == set(_add_at_cases()) - {"1-D ids into a 1-D array",   # already numpy.add.at's fast case
                                           "negative ids (counted from the end)"}   # numpy.add.at wraps them
