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
    with pytest.raises(ValueError, match="evil.npz is not a valid npattention checkpoint .it holds an object array"):
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
    with pytest.raises(ValueError, match="not a valid npattention checkpoint .no 'metadata' entry"):
        load_checkpoint(tmp_path / "other.npz", net())
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        save_checkpoint(tmp_path / "x.npz", net(), when=object())


@pytest.mark.parametrize("kind", ["empty", "text", "npy", "truncated", "corrupted", "pickle", "bad json",
                                  "json list", "wrong format", "future version"])
def test_files_that_are_not_checkpoints_name_the_path(tmp_path, kind):
    """Every class of broken file: ValueError naming the path, never zip/pickle/JSON internals."""
    good = tmp_path / "good.npz"
    save_checkpoint(good, net())
    raw = good.read_bytes()
    path = tmp_path / "bad.npz"
    meta = {"bad json": "{not json", "json list": "[1, 2]",
            "wrong format": json.dumps({"format": "other", "version": 1, "metadata": {}}),
            "future version": json.dumps({"format": "npattention-checkpoint", "version": 99, "metadata": {}})}
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("epoch 3, loss 0.1\n")
    elif kind == "npy":
        path = tmp_path / "bad.npy"
        np.save(path, np.zeros(3))
    elif kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "corrupted":
        path.write_bytes(raw[:100] + bytes(50) + raw[150:])
    elif kind == "pickle":
        import pickle
        path.write_bytes(pickle.dumps({"model/layers.0.weight": 1}))
    else:
        np.savez(path, metadata=np.array(meta[kind]))
    model = net()
    before = {k: to_numpy(v).copy() for k, v in model.state_dict().items()}
    msg = "format" if kind in ("wrong format", "future version") else "is not a valid npattention checkpoint"
    with pytest.raises(ValueError, match=rf"load_checkpoint: .*{path.name}.* (has )?{msg}") as err:
        load_checkpoint(path, model)
    assert "allow_pickle" not in str(err.value)
    assert all(np.array_equal(before[k], to_numpy(v)) for k, v in model.state_dict().items())


def test_missing_file_directory_and_bad_path_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file: .*nothing.npz"):
        load_checkpoint(tmp_path / "nothing.npz", net())
    with pytest.raises(IsADirectoryError, match="'path' .* is a directory"):
        load_checkpoint(tmp_path, net())
    with pytest.raises(IsADirectoryError, match="'path' .* is a directory"):
        save_checkpoint(tmp_path, net())
    with pytest.raises(TypeError, match="'path' must be a str or os.PathLike, got int"):
        save_checkpoint(3, net())
    save_checkpoint(tmp_path / "x.npz", net(), Adam(net().parameters()))
    with pytest.raises(TypeError, match="'optimizer' must be an npattention Optimizer, got Linear"):
        load_checkpoint(tmp_path / "x.npz", net(), Linear(2, 2))


def test_a_failed_load_changes_nothing(tmp_path):
    """The optimiser section does not fit (different model size): the model must stay as it was."""
    model, opt, sched, _ = trained()
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt, sched)
    other = net(seed=4)
    other_opt = Adam(other.parameters()[:-1], lr=0.5)   # one parameter fewer: optim section mismatches
    other_sched = WarmupCosine(other_opt, 3, 50)
    before = {k: to_numpy(v).copy() for k, v in other.state_dict().items()}
    lr, step = other_opt.lr, other_sched.last_step
    with pytest.raises(KeyError, match=r"\[optim/\].*unexpected keys \['state.5.exp_avg'"):
        load_checkpoint(path, other, other_opt, other_sched)
    assert all(np.array_equal(before[k], to_numpy(v)) for k, v in other.state_dict().items())
    assert other_opt.lr == lr and other_opt.step_count == 0 and other_sched.last_step == step
    # a bad schedule section (written by hand) also leaves model and optimiser untouched
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["schedule/last_step"] = np.array(-3)
    np.savez(tmp_path / "s.npz", **arrays)
    fresh_opt = Adam(other.parameters(), lr=0.5)
    with pytest.raises(ValueError, match=r"\[schedule/\].*'last_step' must be a whole number >= 0, got"):
        load_checkpoint(tmp_path / "s.npz", other, fresh_opt, WarmupCosine(fresh_opt, 3, 50))
    assert all(np.array_equal(before[k], to_numpy(v)) for k, v in other.state_dict().items())
    assert fresh_opt.step_count == 0 and fresh_opt.state == [{} for _ in fresh_opt.params]


def test_saved_file_mode_follows_umask_or_the_replaced_file(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "a.npz", net())
        assert (os.stat(tmp_path / "a.npz").st_mode & 0o777) == 0o644
        os.chmod(tmp_path / "a.npz", 0o640)
        save_checkpoint(tmp_path / "a.npz", net())        # replacing keeps the file's own mode
        assert (os.stat(tmp_path / "a.npz").st_mode & 0o777) == 0o640
    finally:
        os.umask(old)


def test_saving_through_a_symlink_replaces_the_target(tmp_path):
    real = tmp_path / "runs" / "real.npz"
    real.parent.mkdir()
    save_checkpoint(real, net(seed=0))
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    save_checkpoint(link, net(seed=7), epoch=7)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load_checkpoint(real, net()) == {"epoch": 7}
    assert sorted(os.listdir(tmp_path)) == ["latest.npz", "runs"]


def test_a_killed_save_leaves_no_temporary_file_after_the_next_save(tmp_path):
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)                                # a process that has exited
    stale = tmp_path / f".c.npz.{pid}.abc123.tmp"         # what kill -9 during a save leaves
    stale.write_bytes(b"half a zip")
    unrelated = tmp_path / ".other.npz.1.x.tmp"
    unrelated.write_bytes(b"")
    save_checkpoint(tmp_path / "c.npz", net())
    assert sorted(os.listdir(tmp_path)) == [".other.npz.1.x.tmp", "c.npz"]
