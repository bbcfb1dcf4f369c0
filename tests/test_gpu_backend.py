"""The CuPy backend, tested where there is no GPU (and, marked ``gpu``, where there is).

On a CPU-only machine (the normal CI) this checks:

* every backend-selection path: ``numpy``, ``auto`` falling back to NumPy, ``cupy``
  failing with the clear message -- with ``import cupy`` made to fail (or a fake CuPy
  without a device) so the tests hold even where CuPy is installed;
* that a checkpoint is plain host data that loads back anywhere;
* the conformance command line (``dump`` / ``compare``) round trip;
* a static scan of the library for NumPy-only idioms that break or silently synchronise
  on CuPy (``numpy.add.at``, ``xp.random``, ``float(array)`` in forward/backward, ...).

The tests marked ``gpu`` run only where CuPy and a CUDA device work: a checkpoint saved on
the GPU loads on the CPU and back, the same seeded training run gives the same losses on
both backends, and forward/backward keep every array on the device.
"""
import ast
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from npattention import backend
from npattention.checkpoint import load_checkpoint, save_checkpoint

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "npattention"
ROOT = PACKAGE.parent


needs_gpu = pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a CUDA device")

# Put in front of a child's code: ``import cupy`` then raises ImportError, as on a
# machine without CuPy, even where CuPy is installed.
_NO_CUPY = "import sys; sys.modules['cupy'] = None; sys.modules['cupyx'] = None\n"


def _python(code, backend_name, check=True):
    env = dict(os.environ, NPATTENTION_BACKEND=backend_name, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stderr
    return result


# ------------------------------------------------------------------ backend selection
def test_numpy_backend_in_a_fresh_process():
    out = _python(_NO_CUPY + "import npattention as n; print(n.BACKEND, n.xp.__name__)", "numpy").stdout
    assert out.split() == ["numpy", "numpy"]


def test_auto_falls_back_to_numpy_when_cupy_cannot_be_imported():
    code = _NO_CUPY + ("import npattention as n, npattention.backend as b\n"
                       "print(n.BACKEND, b.xp.__name__, b.DEFAULT_DTYPE.__name__)")
    assert _python(code, "auto").stdout.split() == ["numpy", "numpy", "float32"]


def test_cupy_without_cupy_fails_at_import_with_the_install_hint():
    result = _python(_NO_CUPY + "import npattention", "cupy", check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("npattention.backend.BackendError: NPATTENTION_BACKEND=cupy but CuPy is not installed")
    assert 'pip install "npattention[gpu]"' in last
    assert "unset NPATTENTION_BACKEND" in last


def _fake_cupy(count=None, error=None):
    """A stand-in for the cupy module whose device query returns ``count`` or raises ``error``."""

    def get_device_count():
        if error is not None:
            raise error
        return count

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return fake


def test_cupy_without_cupy_raises_backend_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(backend.BackendError, match=r'pip install "npattention\[gpu\]"'):
        backend.select_backend("cupy")
    assert backend.select_backend("auto") == ("numpy", np)


def test_cupy_without_a_working_driver_names_the_cause(monkeypatch):
    # what CuPy raises on a machine with the wheel but no (or a too old) NVIDIA driver
    err = RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(error=err))
    with pytest.raises(backend.BackendError) as info:
        backend.select_backend("cupy")
    message = str(info.value)
    assert "no CUDA device can be used" in message
    assert "cudaErrorInsufficientDriver" in message and "CUDA version" in message
    assert backend.select_backend("auto") == ("numpy", np)


def test_cupy_with_zero_devices(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=0))
    with pytest.raises(backend.BackendError, match="sees no CUDA device"):
        backend.select_backend("cupy")
    assert backend.select_backend("auto")[0] == "numpy"


def test_cupy_with_a_device_is_selected_by_cupy_and_auto(monkeypatch):
    fake = _fake_cupy(count=1)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert backend.select_backend("cupy") == ("cupy", fake)
    assert backend.select_backend("auto") == ("cupy", fake)
    assert backend.select_backend(" CuPy ") == ("cupy", fake)  # case and spaces do not matter


@pytest.mark.parametrize("value", [None, "", "numpy", " NumPy "])
def test_numpy_names(value):
    assert backend.select_backend(value) == ("numpy", np)


@pytest.mark.parametrize("value", ["gpu", "cuda", "torch"])
def test_other_names_are_rejected_with_the_choices(value):
    with pytest.raises(backend.BackendError, match=f"'numpy', 'cupy' or 'auto', got '{value}'"):
        backend.select_backend(value)


# ------------------------------------------------------------------ host <-> device helpers
def test_to_numpy_and_scalar_give_host_values():
    a = backend.xp.arange(6, dtype=backend.xp.float32).reshape(2, 3)
    h = backend.to_numpy(a)
    assert type(h) is np.ndarray and h.dtype == np.float32
    np.testing.assert_array_equal(h, [[0, 1, 2], [3, 4, 5]])
    assert type(backend.to_numpy([1, 2])) is np.ndarray
    total = backend.scalar(a.sum())  # a 0-d array -> a Python float (the one sync point)
    assert type(total) is float and total == 15.0


def test_generator_host_draws_match_numpy_and_the_backend_draws():
    g = backend.Generator(5)
    ids = g.integers(0, 10, size=(3, 4))
    assert backend.is_array(ids) and ids.dtype == np.int64
    ref = np.random.default_rng(5).integers(0, 10, (3, 4))
    np.testing.assert_array_equal(backend.to_numpy(ids), ref)
    # .host is the numpy Generator itself: data made there stays on the host
    assert isinstance(backend.Generator(5).host, np.random.Generator)


def test_add_at_multi_index_matches_a_python_loop(rng):
    # the scatter-add of the bilinear sampler's backward: (b, row, col) index triples, repeats
    target = backend.xp.zeros((2, 3, 3, 2))
    b = rng.integers(0, 2, size=(4, 5))
    r = rng.integers(0, 3, size=(4, 5))
    c = rng.integers(0, 3, size=(4, 5))
    v = rng.normal((4, 5, 2), dtype=backend.xp.float64)
    backend.add_at(target, (b, r, c), v)
    expected = np.zeros((2, 3, 3, 2))
    hb, hr, hc, hv = (backend.to_numpy(a) for a in (b, r, c, v))
    for i in range(4):
        for j in range(5):
            expected[hb[i, j], hr[i, j], hc[i, j]] += hv[i, j]
    np.testing.assert_allclose(backend.to_numpy(target), expected, rtol=1e-12)


# ------------------------------------------------------------------ checkpoints are host data
def _mha_and_input():
    from npattention.attention.multihead import MultiheadAttention

    backend.manual_seed(0)
    model = MultiheadAttention(8, 2)
    x = backend.Generator(1).normal((2, 5, 8))
    return model, x


def test_checkpoint_is_host_data_that_a_plain_numpy_process_reads(tmp_path):
    from npattention.optim import Adam

    model, x = _mha_and_input()
    opt = Adam(model.parameters(), lr=1e-2)
    out, _ = model(x, x, x)
    model.backward(backend.xp.ones_like(out))
    opt.step()
    path = save_checkpoint(tmp_path / "ckpt.npz", model, opt, step=1)
    # a process that never imports npattention (and has no CuPy) reads every array
    code = _NO_CUPY + (
        "import numpy as np, json\n"
        f"f = np.load({str(path)!r}, allow_pickle=False)\n"
        "print(json.dumps({k: [f[k].dtype.kind, list(f[k].shape)] for k in f.files}))")
    table = json.loads(_python(code, "numpy").stdout)
    assert table["model/in_proj_weight"] == ["f", [24, 8]]
    assert table["optim/state.0.exp_avg"] == ["f", [24, 8]]
    assert all(kind != "O" for kind, _ in table.values())  # nothing pickled


def test_checkpoint_loads_back_into_a_fresh_model(tmp_path):
    from npattention.attention.multihead import MultiheadAttention

    model, x = _mha_and_input()
    expected = backend.to_numpy(model(x, x, x)[0])
    save_checkpoint(tmp_path / "m.npz", model)
    backend.manual_seed(123)  # different initial weights
    fresh = MultiheadAttention(8, 2)
    assert not np.allclose(backend.to_numpy(fresh(x, x, x)[0]), expected)
    load_checkpoint(tmp_path / "m.npz", fresh)
    got = backend.to_numpy(fresh(x, x, x)[0])
    np.testing.assert_array_equal(got, expected)
    assert all(backend.is_array(p.data) and p.data.dtype == backend.DEFAULT_DTYPE for p in fresh.parameters())


def test_state_dict_of_host_arrays_loads():
    # what a GPU process does with a CPU checkpoint: host NumPy arrays in, backend arrays out
    from npattention.attention.multihead import MultiheadAttention

    model, _ = _mha_and_input()
    host_state = {k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    assert all(type(v) is np.ndarray for v in host_state.values())
    backend.manual_seed(7)
    other = MultiheadAttention(8, 2)
    other.load_state_dict(host_state)
    for name, p in other.named_parameters():
        assert backend.is_array(p.data)
        np.testing.assert_array_equal(backend.to_numpy(p.data), host_state[name])


# ------------------------------------------------------------------ conformance command line
def test_conformance_dump_and_compare_round_trip(tmp_path):
    names = ["Linear", "MultiheadAttention"]
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    for path in (first, second):
        out = _python(_NO_CUPY + f"from npattention.conformance import main; main(['dump', {str(path)!r}, *{names!r}])",
                      "auto").stdout
        assert out.startswith("numpy: ") and "from 2 modules" in out
    with np.load(first) as f:
        arrays = dict(f)
    assert {k.split("/")[0] for k in arrays} == set(names)
    assert any(k.endswith("/grad_in_proj_weight") for k in arrays)
    cmd = [sys.executable, "-m", "npattention.conformance", "compare", str(first), str(second)]
    same = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.strip().endswith(f"{len(arrays)} passed, 0 failed")
    # perturb one gradient beyond the tolerance: compare must name it and fail
    key = sorted(k for k in arrays if k.startswith("MultiheadAttention/0/grad_"))[0]
    arrays[key] = arrays[key] + 1e-6
    np.savez(second, **arrays)
    diff = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert diff.returncode == 1
    assert f"{key}: max abs difference 1.000e-06" in diff.stdout
    assert diff.stdout.strip().endswith(f"{len(arrays) - 1} passed, 1 failed")


# ------------------------------------------------------------------ static scan for NumPy-only idioms
#: Library code outside these is array code that must run unchanged on CuPy.
HOST_SIDE = {"backend.py", "viz.py", "checkpoint.py", "conformance.py", "gradcheck.py", "__main__.py",
             "datasets.py", "train.py", "optim.py", "validate.py", "vision/data.py"}
HOST_DIRS = {"demos", "gradcheck_cases", "data"}

#: Deliberate synchronisation points (each costs one device -> host round trip), with the reason.
ALLOWED_SYNCS = {
    "layers.py:Embedding.forward": "ids range check: CuPy wraps out-of-range indices silently",
    "losses.py:CrossEntropyLoss.forward": "target range check, same reason",
    "rnn.py:lengths_from": "validates lengths / padding masks given by the user",
    "seq2seq.py:_Decoder.greedy": "decoding stops when every row has produced <eos>",
    "transformer.py:greedy_decode": "decoding stops when every row has produced <eos>",
    "module.py:Module._plan_load_state_dict": "host arrays of a checkpoint move to the device",
    "module.py:_nonfinite": "anomaly mode (off by default) reads one flag per checked array",
    "decoding.py:greedy_search": "decoding stops when every row has produced <eos>",
    "decoding.py:generate": "generation stops when every row has produced <eos>",
    "decoding.py:beam_search": "the beams' bookkeeping (finished hypotheses per source) is host Python: "
                               "one copy of the 2k best candidates per step",
    "decoding.py:_left_pad": "prompts given as Python lists are padded on the host",
}

_TO_PYTHON = {"float", "int", "bool"}
_ARRAY_METHODS = {"min", "max", "any", "all", "sum", "mean", "item", "argmax", "argmin"}


def _makes_array(node):
    """True if the expression computes an array (a reduction method or an ``xp.`` call)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            if sub.func.attr in _ARRAY_METHODS:
                return True
            if isinstance(sub.func.value, ast.Name) and sub.func.value.id == "xp":
                return True
    return False


def _is_mask_index(index):
    return isinstance(index, ast.Compare) or (isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.Invert))


def _problems(node):
    """The CuPy-hostile idioms in one AST node (a list of short descriptions)."""
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in ("item", "tolist"):
            return [f".{f.attr}() (sync + host copy)"]
        if isinstance(f, ast.Name) and f.id == "to_numpy":
            return ["to_numpy() (host copy)"]
        if isinstance(f, ast.Name) and f.id in _TO_PYTHON and node.args and _makes_array(node.args[0]):
            return [f"{f.id}(array) (sync)"]
    elif isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy"):
            return [f"{node.value.id}.{node.attr} (host NumPy in array code)"]
        if node.attr == "random" and isinstance(node.value, ast.Name) and node.value.id == "xp":
            return ["xp.random (different numbers per backend: use backend.get_rng())"]
        if node.attr == "at" and isinstance(node.value, ast.Attribute) and node.value.attr == "add":
            return ["add.at (use backend.add_at)"]
    elif isinstance(node, (ast.Assign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Subscript) and _is_mask_index(t.slice) for t in targets):
            return ["a[bool_mask] = v (sync on CuPy: use xp.where / xp.copyto(where=))"]
    return []


def scan_source(source, rel="<string>"):
    """``{"file:Class.function": sorted problems}`` for one module's source."""
    found = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                probs = sorted({p for sub in ast.walk(child) for p in _problems(sub)})
                if probs:
                    found[f"{rel}:{prefix}{child.name}"] = probs
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_scanner_finds_the_idioms_it_looks_for():
    src = (
        "def forward(self, x, ids, g):\n"
        "    n = float(x.sum())\n"
        "    np.add.at(self.weight.grad, ids, g)\n"
        "    keep = xp.random.rand(3) > 0.5\n"
        "    x[x < 0] = 0\n"
        "    return x.item(), int(x.shape[0]), bool(self.training)\n"
    )
    found = scan_source(src)["<string>:forward"]
    assert found == sorted([
        ".item() (sync + host copy)", "add.at (use backend.add_at)",
        "float(array) (sync)", "np.add (host NumPy in array code)",
        "xp.random (different numbers per backend: use backend.get_rng())",
        "a[bool_mask] = v (sync on CuPy: use xp.where / xp.copyto(where=))",
    ])  # int(x.shape[0]) and bool(self.training) are plain Python: not reported


def test_array_code_has_no_numpy_only_idioms():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in HOST_SIDE or rel.split("/")[0] in HOST_DIRS:
            continue
        found.update(scan_source(path.read_text(), rel))
    unexpected = {k: v for k, v in found.items() if k not in ALLOWED_SYNCS}
    assert unexpected == {}, "NumPy-only idioms in array code (see docs/gpu.md):\n" + "\n".join(
        f"  {k}: {', '.join(v)}" for k, v in sorted(unexpected.items()))


def test_no_backend_specific_random_or_scatter_anywhere():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "backend.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and (
                    (node.attr == "random" and isinstance(node.value, ast.Name) and node.value.id in ("xp", "np"))
                    or (node.attr == "at" and isinstance(node.value, ast.Attribute) and node.value.attr == "add")):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


# ------------------------------------------------------------------ a CuPy-like array on the CPU
class DeviceLike(np.ndarray):
    """A NumPy array that behaves like a CuPy array where it matters for sync points:
    reductions return 0-d arrays (not scalars), and every conversion to a Python value
    (``bool``, ``float``, ``int``, ``.item()``, ``.tolist()``) and every boolean-mask
    index -- each a device -> host round trip on CuPy -- is recorded with its caller."""

    events = None  # a list, set while a test records

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        try:
            return np.ndarray.__array_wrap__(self, arr, context, False)
        except TypeError:  # NumPy 1.x: two arguments
            return np.ndarray.__array_wrap__(self, arr, context)

    @classmethod
    def _note(cls, kind):
        if cls.events is not None:
            caller = sys._getframe(2)
            code = caller.f_code  # co_qualname ("Embedding.forward") from Python 3.11 on
            cls.events.append((kind, code.co_filename, getattr(code, "co_qualname", code.co_name)))

    def __bool__(self):
        self._note("bool(array)")
        return np.ndarray.__bool__(self)

    def __float__(self):
        self._note("float(array)")
        return np.ndarray.__float__(self)

    def __int__(self):
        self._note("int(array)")
        return np.ndarray.__int__(self)

    def __index__(self):
        self._note("array used as an int")
        return np.ndarray.__index__(self)

    def item(self, *args):
        self._note(".item()")
        return np.ndarray.item(self, *args)

    def tolist(self):
        self._note(".tolist()")
        return np.ndarray.tolist(self)

    @staticmethod
    def _is_mask(index):
        items = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, np.ndarray) and i.dtype == bool for i in items)

    def __getitem__(self, index):
        if self._is_mask(index):
            self._note("a[bool_mask]")
        return np.ndarray.__getitem__(self, index)

    def __setitem__(self, index, value):
        if self._is_mask(index):
            self._note("a[bool_mask] = v")
        return np.ndarray.__setitem__(self, index, value)


def _device_like(a):
    return a.view(DeviceLike) if type(a) is np.ndarray else a


def _syncs_of_registered_cases():
    """Forward + backward of every registered gradcheck case on DeviceLike arrays;
    ``{"file:function": sorted kinds}`` for the sync points inside the package."""
    from npattention.gradcheck import _first, registered

    events = []
    for make in registered().values():
        backend.manual_seed(0)
        for case in make(backend.Generator(0)):
            m = case.module
            for _, p in m.named_parameters():
                p.data, p.grad = _device_like(p.data), _device_like(p.grad)
            for _, owner, buf in m.named_buffers():
                setattr(owner, buf, _device_like(getattr(owner, buf)))
            inputs = tuple(_device_like(x) for x in case.inputs)
            kwargs = {k: _device_like(v) for k, v in case.kwargs.items()}
            DeviceLike.events = events
            try:
                out = _first(m(*inputs, **kwargs))
                m.backward(_device_like(backend.Generator(1).normal(out.shape, dtype=out.dtype)))
            finally:
                DeviceLike.events = None
    found = {}
    for kind, filename, func in events:
        path = pathlib.Path(filename)
        if PACKAGE in path.parents:
            found.setdefault(f"{path.relative_to(PACKAGE).as_posix()}:{func}", set()).add(kind)
    return {k: sorted(v) for k, v in found.items()}


#: forward/backward functions that synchronise on purpose (see ALLOWED_SYNCS for the reasons)
ALLOWED_RUNTIME_SYNCS = {
    "layers.py:Embedding.forward",          # ids range check
    "losses.py:CrossEntropyLoss.forward",   # target range check
    "rnn.py:lengths_from",                  # lengths / mask validation
}


def _allowed(key):
    if key in ALLOWED_RUNTIME_SYNCS:
        return True
    if sys.version_info < (3, 11):  # no co_qualname: compare "file:function" only
        return key in {k.split(":")[0] + ":" + k.rsplit(".", 1)[-1] if "." in k.split(":")[1] else k
                       for k in ALLOWED_RUNTIME_SYNCS}
    return False


def test_device_like_array_records_what_would_synchronise():
    a = _device_like(np.arange(4.0))
    events = DeviceLike.events = []
    try:
        total = a.sum()
        assert type(total) is DeviceLike and total.ndim == 0  # a 0-d array, as on CuPy
        float(total)
        a[a > 1] = 0
    finally:
        DeviceLike.events = None
    assert [kind for kind, _, _ in events] == ["float(array)", "a[bool_mask] = v"]


def test_forward_backward_do_not_synchronise():
    # every registered module, run on CuPy-like arrays: the only conversions to Python
    # values are the deliberate checks listed above (each would be a GPU sync point)
    found = _syncs_of_registered_cases()
    unexpected = {k: v for k, v in found.items() if not _allowed(k)}
    assert unexpected == {}, "sync points in forward/backward (see docs/gpu.md):\n" + "\n".join(
        f"  {k}: {', '.join(v)}" for k, v in sorted(unexpected.items()))


# ------------------------------------------------------------------ on a GPU (skipped elsewhere)
_SAVE_MHA = """
import numpy as np, npattention as n
from npattention.attention.multihead import MultiheadAttention
from npattention.checkpoint import save_checkpoint
n.manual_seed(0)
m = MultiheadAttention(16, 4)
x = n.backend.Generator(1).normal((2, 7, 16))
out, w = m(x, x, x)
np.save({out!r}, n.to_numpy(out))
save_checkpoint({ckpt!r}, m)
print(n.BACKEND)
"""

_LOAD_MHA = """
import numpy as np, npattention as n
from npattention.attention.multihead import MultiheadAttention
from npattention.checkpoint import load_checkpoint
n.manual_seed(99)
m = MultiheadAttention(16, 4)
load_checkpoint({ckpt!r}, m)
x = n.backend.Generator(1).normal((2, 7, 16))
np.testing.assert_allclose(n.to_numpy(m(x, x, x)[0]), np.load({out!r}), rtol=1e-5, atol=1e-6)
print(n.BACKEND, "ok")
"""


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("saver,loader", [("cupy", "numpy"), ("numpy", "cupy")])
def test_checkpoint_moves_between_gpu_and_cpu(tmp_path, saver, loader):
    files = dict(ckpt=str(tmp_path / "m.npz"), out=str(tmp_path / "out.npy"))
    assert _python(_SAVE_MHA.format(**files), saver).stdout.split() == [saver]
    assert _python(_LOAD_MHA.format(**files), loader).stdout.split() == [loader, "ok"]


_TRAIN = """
import json, npattention as n
from npattention.data import make_spiral
from npattention.layers import Linear, ReLU
from npattention.losses import CrossEntropyLoss
from npattention.module import Sequential
from npattention.optim import Adam
from npattention.train import fit, accuracy
n.manual_seed(0)
X, y = make_spiral(60, 3, seed=0)
model = Sequential(Linear(2, 32), ReLU(), Linear(32, 3))
h = fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=0.02), (X, y), epochs=15, batch_size=30,
        progress=False)
print(json.dumps({"backend": n.BACKEND, "loss": h["step_loss"], "acc": accuracy(model, (X, y))}))
"""


@needs_gpu
@pytest.mark.gpu
def test_same_seeded_training_run_on_both_backends():
    cpu = json.loads(_python(_TRAIN, "numpy").stdout.strip().splitlines()[-1])
    gpu = json.loads(_python(_TRAIN, "cupy").stdout.strip().splitlines()[-1])
    assert (cpu["backend"], gpu["backend"]) == ("numpy", "cupy")
    # same initial weights and batch order; float32 sums in a different order -> tiny drift
    np.testing.assert_allclose(gpu["loss"][:10], cpu["loss"][:10], rtol=1e-4)
    np.testing.assert_allclose(gpu["loss"], cpu["loss"], rtol=2e-2)
    assert abs(gpu["acc"] - cpu["acc"]) <= 0.05


_ON_DEVICE = """
import cupy, npattention as n
from npattention.attention.multihead import MultiheadAttention
from npattention.masks import padding_mask
n.manual_seed(0)
m = MultiheadAttention(16, 4, dropout=0.1)
g = n.backend.Generator(1)
x = g.normal((3, 6, 16))
kpm = padding_mask(n.backend.asarray([6, 4, 2]), 6)
out, w = m(x, x, x, key_padding_mask=kpm, is_causal=True)
grads = m.backward(g.normal(out.shape))
arrays = [out, w, *grads] + [p.grad for p in m.parameters()] + [p.data for p in m.parameters()]
assert all(isinstance(a, cupy.ndarray) for a in arrays), [type(a) for a in arrays]
assert all(bool(cupy.isfinite(a).all()) for a in arrays)
print("ok")
"""


@needs_gpu
@pytest.mark.gpu
def test_forward_backward_keep_arrays_on_the_device():
    assert _python(_ON_DEVICE, "cupy").stdout.split() == ["ok"]
