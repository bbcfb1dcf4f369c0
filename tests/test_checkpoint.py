"""Checkpoints: round trip, atomic save, clear errors, plain NumPy on disk, no pickle."""
import json
import os

import numpy as np
import pytest

from npattention import Linear, Sequential, manual_seed
from npattention.backend import to_numpy, xp
from npattention.checkpoint import load_checkpoint, save_checkpoint
from npattention.data import make_spiral
from npattention.layers import LayerNorm, ReLU
from npattention.losses import CrossEntropyLoss
from npattention.optim import Adam, WarmupCosine
from npattention.train import fit


def net(seed=0, hidden=8):
    manual_seed(seed)
    return Sequential(Linear(2, hidden), LayerNorm(hidden), ReLU(), Linear(hidden, 3))


def trained(seed=0, epochs=2):
    model = net(seed)
    opt = Adam(model.parameters(), lr=1e-2)
    sched = WarmupCosine(opt, 3, 50)
    X, y = make_spiral(20, 3, seed=0)
    fit(model, CrossEntropyLoss(), opt, (X, y), epochs=epochs, batch_size=16, scheduler=sched, progress=False)
    return model, opt, sched, (X, y)


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        v, w = sa[k], sb[k]
        if hasattr(v, "shape"):
            np.testing.assert_array_equal(to_numpy(v), to_numpy(w), err_msg=k)
        else:
            assert v == w, k


def test_round_trip_model_optimizer_schedule_and_metadata(tmp_path):
    model, opt, sched, data = trained()
    path = tmp_path / "ckpt.npz"
    assert save_checkpoint(path, model, opt, sched, epoch=2, config={"hidden": 8}) == str(path)
    model2 = net(seed=1)
    opt2 = Adam(model2.parameters(), lr=1.0)
    sched2 = WarmupCosine(opt2, 3, 50)
    meta = load_checkpoint(path, model2, opt2, sched2)
    assert meta == {"epoch": 2, "config": {"hidden": 8}}
    assert_same_state(model, model2)
    assert_same_state(opt, opt2)
    assert sched2.last_step == sched.last_step == 8 and opt2.lr == opt.lr
    # training on from the checkpoint gives the same numbers as training on without stopping
    h1 = fit(model, CrossEntropyLoss(), opt, data, epochs=1, batch_size=16, scheduler=sched, progress=False, seed=9)
    h2 = fit(model2, CrossEntropyLoss(), opt2, data, epochs=1, batch_size=16, scheduler=sched2, progress=False, seed=9)
    assert h1 == h2
    assert_same_state(model, model2)


def test_file_is_plain_numpy_with_documented_names(tmp_path):
    model, opt, _, _ = trained()
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt, note="hello")
    with np.load(path, allow_pickle=False) as f:  # no object arrays: loads without pickle
        names = set(f.files)
        assert all(type(f[k]) is np.ndarray for k in names)
        meta = json.loads(str(f["metadata"]))
        w = f["model/layers.0.weight"]
    assert {"model/layers.0.weight", "model/layers.1.weight", "model/layers.3.bias", "optim/step", "optim/lr",
            "optim/state.0.exp_avg", "optim/state.5.exp_avg_sq", "metadata"} <= names
    assert meta == {"format": "npattention-checkpoint", "version": 1, "metadata": {"note": "hello"}}
    np.testing.assert_array_equal(w, to_numpy(model.layers[0].weight.data))
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]  # no temporary file left behind


def test_load_uses_allow_pickle_false(tmp_path, monkeypatch):
    model = net()
    path = tmp_path / "c.npz"
    save_checkpoint(path, model)
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    load_checkpoint(path, net(seed=1))
    assert calls == [False]
    # an object array (which would need pickle) is refused
    np.savez(tmp_path / "evil.npz", metadata=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_checkpoint(tmp_path / "evil.npz", net())


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = net()
    path = tmp_path / "last.npz"
    save_checkpoint(path, model, epoch=1)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", crash)
    model.layers[0].weight.data += 1.0
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["last.npz"]  # the temporary file was removed
    assert load_checkpoint(path, net(seed=1)) == {"epoch": 1}


def test_crash_halfway_through_writing(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    save_checkpoint(path, net())
    good = path.read_bytes()
    real = np.savez

    def write_some_then_crash(file, **arrays):
        real(file, **arrays)
        file.truncate(100)
        raise KeyboardInterrupt  # Ctrl-C after a partial write

    monkeypatch.setattr(np, "savez", write_some_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, net(seed=3))
    assert path.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["last.npz"]


def test_missing_extra_and_wrong_shape_keys_are_listed(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, net(hidden=8))
    with pytest.raises(ValueError, match=r"model/\]: load_state_dict: wrong shapes: layers.0.bias: "
                                         r"checkpoint \(8,\) vs model \(4,\); layers.0.weight"):
        load_checkpoint(path, net(hidden=4))
    bigger = Sequential(Linear(2, 8), LayerNorm(8), ReLU(), Linear(8, 3), Linear(3, 3))
    with pytest.raises(KeyError, match=r"missing keys \['layers.4.bias', 'layers.4.weight'\], unexpected keys \[\]"):
        load_checkpoint(path, bigger)
    smaller = Sequential(Linear(2, 8), LayerNorm(8))
    with pytest.raises(KeyError, match=r"c.npz \[model/\].*unexpected keys \['layers.3.bias', 'layers.3.weight'\]"):
        load_checkpoint(path, smaller)
    load_checkpoint(path, smaller, strict=False)  # non-strict: loads what matches
    np.testing.assert_array_equal(to_numpy(smaller.layers[0].weight.data), to_numpy(net(hidden=8).layers[0].weight.data))
    with pytest.raises(KeyError, match="holds no 'optim/' entries"):
        load_checkpoint(path, net(), Adam(net().parameters()))


def test_loads_arrays_written_by_plain_numpy(tmp_path):
    """A file whose arrays are NumPy (as one saved under CuPy is) loads into the active backend."""
    model = net()
    arrays = {f"model/{k}": np.asarray(to_numpy(v), dtype=np.float64) for k, v in model.state_dict().items()}
    arrays["metadata"] = np.array(json.dumps({"format": "npattention-checkpoint", "version": 1, "metadata": {}}))
    np.savez(tmp_path / "numpy.npz", **arrays)
    other = net(seed=5)
    assert load_checkpoint(tmp_path / "numpy.npz", other) == {}
    w = other.layers[0].weight.data
    assert isinstance(w, xp.ndarray) and w.dtype == xp.float32  # cast back to the model's dtype
    np.testing.assert_array_equal(to_numpy(w), to_numpy(model.layers[0].weight.data))


def test_not_a_checkpoint_and_bad_metadata(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not an npattention checkpoint"):
        load_checkpoint(tmp_path / "other.npz", net())
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        save_checkpoint(tmp_path / "x.npz", net(), when=object())
