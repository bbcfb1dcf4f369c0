"""Nadaraya-Watson attention pooling (values, learning the bandwidth) and the speech-like frames."""
import numpy as np
import pytest

from npattention.attention.kernel_regression import NadarayaWatson
from npattention.backend import to_numpy, xp
from npattention.data.kernel_regression import make_kernel_regression, target_function
from npattention.data.speech import PHONES, make_utterance


def H(a):
    return to_numpy(a)


def test_nadaraya_watson_matches_the_formula():
    q = xp.asarray([0.0, 1.0])
    k = xp.asarray([0.0, 0.5, 2.0])
    v = xp.asarray([1.0, 2.0, 4.0])
    m = NadarayaWatson(bandwidth=0.5, learnable=False)
    out = H(m(q, k, v))
    s = -0.5 * ((np.subtract.outer([0.0, 1.0], [0.0, 0.5, 2.0])) / 0.5) ** 2
    a = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    np.testing.assert_allclose(out, a @ [1.0, 2.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(H(m.last_weights).sum(1), 1.0, rtol=1e-6)
    assert m.parameters() == [] and m.bandwidth == pytest.approx(0.5)


def test_huge_bandwidth_is_the_average_and_leave_one_out_mask():
    x, y, xt, _ = make_kernel_regression(20, 5, seed=1)
    wide = NadarayaWatson(bandwidth=1e6, learnable=False)
    np.testing.assert_allclose(H(wide(xt, x, y)), H(y).mean(), rtol=1e-6)
    loo = NadarayaWatson(bandwidth=0.3)
    loo(x, x, y, mask=xp.eye(20, dtype=bool))
    assert np.all(np.diag(H(loo.last_weights)) == 0)


def test_learning_the_bandwidth_lowers_the_leave_one_out_error():
    x, y, xt, yt = make_kernel_regression(50, 50, seed=0)
    nw = NadarayaWatson(bandwidth=3.0).double()       # start far too wide
    mask = xp.eye(50, dtype=bool)
    losses = []
    for _ in range(100):
        nw.zero_grad()
        err = nw(x, x, y, mask=mask) - y
        losses.append(float((err ** 2).mean()))
        nw.backward(2 * err / 50)
        nw.w.data -= 0.5 * nw.w.grad
    assert losses[-1] < 0.6 * losses[0], (losses[0], losses[-1])
    assert 0.1 < nw.bandwidth < 1.5                   # ended near the noise scale (0.33 when written)
    test_mse = float(np.mean((H(nw(xt, x, y)) - H(yt)) ** 2))
    assert test_mse < 0.3


def test_kernel_regression_data():
    x, y, xt, yt = make_kernel_regression(30, 7, noise=0.0, seed=2)
    assert np.all(np.diff(H(x)) >= 0) and H(x).min() >= 0 and H(x).max() <= 5
    np.testing.assert_allclose(H(y), H(target_function(x)))
    np.testing.assert_allclose(H(xt), np.linspace(0, 5, 7))


def test_nadaraya_watson_errors():
    with pytest.raises(ValueError, match="'bandwidth' must be a positive number"):
        NadarayaWatson(0)
    with pytest.raises(ValueError, match="'value' must be"):
        NadarayaWatson()(xp.zeros(3), xp.zeros(4), xp.zeros(5))


def test_make_utterance_structure():
    frames, phones = make_utterance(800, bands=16, seed=3)
    f, p = H(frames), H(phones)
    assert f.shape == (800, 16) and p.shape == (800,) and f.dtype == np.float32
    np.testing.assert_allclose(f.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(f.std(1), 1, atol=1e-3)
    assert set(np.unique(p)) <= set(PHONES) and (p == 0).mean() > 0.1          # silences between words
    runs = np.diff(np.flatnonzero(np.diff(p) != 0))
    assert np.median(runs) >= 4                                                # phones last several frames
    # frames of the same phone are more alike than frames of different phones
    speech = p > 0
    a, b = f[:-5][speech[:-5]], f[5:][speech[:-5]]
    same = (p[:-5] == p[5:])[speech[:-5]]
    cos = (a * b).sum(1) / 16
    assert cos[same].mean() > cos[~same].mean() + 0.3
    np.testing.assert_array_equal(H(make_utterance(800, bands=16, seed=3)[1]), p)
