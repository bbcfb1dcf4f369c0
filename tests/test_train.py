"""fit() learns the spiral, is deterministic, and its pieces behave as documented."""
import numpy as np
import pytest

from npattention import Linear, Sequential, manual_seed
from npattention.backend import Generator, to_numpy, xp
from npattention.data import make_spiral
from npattention.layers import ReLU
from npattention.losses import CrossEntropyLoss
from npattention.optim import SGD, Adam, WarmupCosine
from npattention.train import accuracy, batches, fit


def mlp(seed=0, hidden=64):
    manual_seed(seed)
    return Sequential(Linear(2, hidden), ReLU(), Linear(hidden, 3))


def train_spiral(seed=0, epochs=60, **kw):
    X, y = make_spiral(100, 3, noise=0.2, seed=0)
    net = mlp(seed)
    opt = Adam(net.parameters(), lr=2e-2)
    hist = fit(net, CrossEntropyLoss(), opt, (X, y), epochs=epochs, batch_size=32, metric=accuracy,
               seed=seed, progress=False, **kw)
    return net, hist, (X, y)


def test_make_spiral_shapes_and_determinism():
    X, y = make_spiral(50, 4, noise=0.1, seed=3)
    assert X.shape == (200, 2) and X.dtype == xp.float32 and y.shape == (200,) and y.dtype == xp.int64
    np.testing.assert_array_equal(np.bincount(to_numpy(y)), [50] * 4)
    assert float(xp.max(xp.sqrt((X ** 2).sum(-1)))) <= 1.0 + 1e-6  # radius r in [0, 1]
    X2, _ = make_spiral(50, 4, noise=0.1, seed=3)
    np.testing.assert_array_equal(to_numpy(X), to_numpy(X2))
    X3, _ = make_spiral(50, 4, noise=0.1, seed=4)
    assert not np.array_equal(to_numpy(X), to_numpy(X3))
    with pytest.raises(ValueError, match="'noise' must be a number >= 0"):
        make_spiral(10, noise=-1)


def test_mlp_learns_the_spiral():
    X, y = make_spiral(100, 3, noise=0.2, seed=0)
    untrained = accuracy(mlp(), (X, y))
    net, hist, data = train_spiral()
    final = accuracy(net, data)
    assert untrained < 0.6  # not separable by the initial (near-linear) net
    assert final >= 0.95, hist["metric"]
    assert hist["metric"][-1] == final
    assert hist["loss"][-1] < 0.25 * hist["loss"][0]
    assert len(hist["loss"]) == 60 and len(hist["step_loss"]) == 60 * 10  # 300 rows / 32 -> 10 batches


def test_fit_is_deterministic_for_a_seed():
    _, a, _ = train_spiral(seed=1, epochs=5)
    _, b, _ = train_spiral(seed=1, epochs=5)
    assert a == b  # every recorded number identical
    _, c, _ = train_spiral(seed=2, epochs=5)
    assert c["step_loss"] != a["step_loss"]


def test_fit_with_step_fn_schedule_clipping_and_validation():
    X, y = make_spiral(60, 3, noise=0.2, seed=0)
    Xv, yv = make_spiral(20, 3, noise=0.2, seed=1)
    net = mlp()
    loss_fn = CrossEntropyLoss()
    opt = SGD(net.parameters(), lr=0.5, momentum=0.9)
    sched = WarmupCosine(opt, warmup_steps=5, total_steps=30)
    seen = []

    def step_fn(batch):
        xb, yb = batch
        seen.append(int(xb.shape[0]))
        loss = loss_fn(net(xb), yb)
        net.backward(loss_fn.backward())
        return loss

    epochs_seen = []
    hist = fit(net, None, opt, (X, y), epochs=5, batch_size=30, step_fn=step_fn, scheduler=sched,
               clip_grad_norm=0.5, metric=accuracy, val_data=(Xv, yv), progress=False,
               callback=lambda e, h: epochs_seen.append(e) or e == 3)
    assert epochs_seen == [1, 2, 3]  # callback returned True after epoch 3: stopped
    assert seen == [30] * 18 and len(hist["step_loss"]) == 18
    assert hist["lr"][:3] == pytest.approx([0.5 / 6, 1.0 / 6, 1.5 / 6])  # warm-up values used
    assert len(hist["grad_norm"]) == 18 and all(g > 0 for g in hist["grad_norm"])
    assert len(hist["val_metric"]) == 3 and len(hist["metric"]) == 3
    assert "val_loss" not in hist  # no loss_fn given to fit


def test_fit_with_generated_batches_and_val_loss():
    X, y = make_spiral(30, 3, seed=0)

    def make_batch(rng):
        idx = rng.integers(0, 90, size=16)
        return X[idx], y[idx]

    net = mlp()
    hist = fit(net, CrossEntropyLoss(), Adam(net.parameters(), lr=1e-2), make_batch, epochs=2,
               steps_per_epoch=7, val_data=(X, y), progress=False)
    assert len(hist["step_loss"]) == 14 and len(hist["val_loss"]) == 2 and "metric" not in hist
    with pytest.raises(ValueError, match="needs 'steps_per_epoch'"):
        fit(net, CrossEntropyLoss(), Adam(net.parameters()), make_batch, progress=False)


def test_fit_stops_on_nan_loss_with_advice():
    X, y = make_spiral(10, 3, seed=0)
    net = mlp()
    net.layers[0].weight.data[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, step 1"):
        fit(net, CrossEntropyLoss(), SGD(net.parameters(), lr=0.1), (X, y), progress=False)


def test_fit_checks_its_arguments():
    net = mlp()
    X, y = make_spiral(10, 3, seed=0)
    with pytest.raises(TypeError, match="'optimizer' must be an npattention Optimizer"):
        fit(net, CrossEntropyLoss(), None, (X, y))
    with pytest.raises(ValueError, match="pass either 'loss_fn'"):
        fit(net, None, SGD(net.parameters(), lr=0.1), (X, y))
    with pytest.raises(ValueError, match="fit: 'batch_size' must be a positive int, got 0"):
        fit(net, CrossEntropyLoss(), SGD(net.parameters(), lr=0.1), (X, y), batch_size=0)


def test_batches_cover_every_row_once_and_shuffle_with_seed():
    X = xp.arange(10)[:, None] * xp.ones((1, 2))
    y = xp.arange(10)
    plain = list(batches((X, y), 4))
    assert [len(b[1]) for b in plain] == [4, 4, 2]
    np.testing.assert_array_equal(to_numpy(xp.concatenate([b[1] for b in plain])), np.arange(10))
    shuffled = [to_numpy(b) for b in batches(y, 3, shuffle=True, rng=Generator(5))]
    order = np.concatenate(shuffled)
    assert sorted(order) == list(range(10)) and list(order) != list(range(10))
    np.testing.assert_array_equal(order, np.random.default_rng(5).permutation(10))  # host PCG64 order
    assert [len(b) for b in batches(y, 4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="same number of rows"):
        list(batches((X, y[:5]), 2))


def test_fit_refuses_badly_shaped_data_with_the_argument_name():
    net = mlp()
    X, y = make_spiral(10, 3, seed=0)
    opt = SGD(net.parameters(), lr=0.1)
    loss = CrossEntropyLoss()
    cases = [
        (X, ValueError, "'data' must be \\(\\*inputs, target\\), e.g. \\(X, y\\).*got a bare ndarray"),
        ((X,), ValueError, "'data' must be \\(\\*inputs, target\\).*got a tuple of 1 array"),
        ((X[:0], y[:0]), ValueError, "'data' has 0 rows"),
        ((X, list(y)), TypeError, "'data' must be a tuple of arrays.*data\\[1\\]: list"),
        ((X, y[:5]), ValueError, "arrays in 'data' must have the same number of rows"),
        (3, TypeError, "'data' must be an array, a tuple of arrays"),
    ]
    for data, err, match in cases:
        with pytest.raises(err, match="fit: " + match):
            fit(net, loss, opt, data, progress=False)
    with pytest.raises(ValueError, match="fit: 'val_data' has 0 rows"):
        fit(net, loss, opt, (X, y), val_data=(X[:0], y[:0]), progress=False)
    with pytest.raises(TypeError, match="fit: 'step_fn' must return the loss .*got NoneType"):
        fit(net, None, opt, (X, y), step_fn=lambda batch: None, progress=False)
    with pytest.raises(TypeError, match="fit: 'step_fn' must be a function"):
        fit(net, None, opt, (X, y), step_fn=3, progress=False)
    with pytest.raises(ValueError, match="fit: 'clip_grad_norm' must be a finite number > 0"):
        fit(net, loss, opt, (X, y), clip_grad_norm=-1.0, progress=False)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_a_nonfinite_gradient_never_reaches_the_weights(clip):
    X, y = make_spiral(10, 3, seed=0)
    net = mlp()
    opt = SGD(net.parameters(), lr=0.1)

    def step_fn(batch):   # a finite loss but a NaN gradient (a broken backward)
        xb, yb = batch
        loss = CrossEntropyLoss()
        value = loss(net(xb), yb)
        net.backward(loss.backward())
        net.layers[2].bias.grad[0] = np.nan
        return value

    before = [to_numpy(p.data).copy() for p in net.parameters()]
    with pytest.raises(FloatingPointError, match="(NaN or inf at|at) epoch 1, step 1"):
        fit(net, None, opt, (X, y), step_fn=step_fn, clip_grad_norm=clip, progress=False)
    assert all(np.array_equal(b, to_numpy(p.data)) for b, p in zip(before, net.parameters()))
