"""Values of the core layers against closed forms computed here with NumPy, and their errors."""
import math

import numpy as np
import pytest

from npattention import backend
from npattention.backend import to_numpy, xp
from npattention.gradcheck import gradcheck
from npattention.layers import (
    GELU,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    erf,
)


def _np(a):
    return to_numpy(a).astype(np.float64)


# ------------------------------------------------------------------ Embedding
def test_embedding_looks_up_rows(rng):
    emb = Embedding(7, 3)
    ids = xp.asarray([[0, 6, 2], [2, 2, 5]])
    out = emb(ids)
    assert out.shape == (2, 3, 3) and out.dtype == backend.DEFAULT_DTYPE
    np.testing.assert_array_equal(to_numpy(out), to_numpy(emb.weight.data)[to_numpy(ids)])


def test_embedding_backward_scatter_adds_repeated_ids(rng):
    emb = Embedding(5, 2)
    ids = xp.asarray([1, 3, 1, 1])
    emb(ids)
    g = rng.normal((4, 2))
    assert emb.backward(g) is None  # ids are not differentiable
    expected = np.zeros((5, 2))
    np.add.at(expected, to_numpy(ids), _np(g))
    np.testing.assert_allclose(_np(emb.weight.grad), expected, rtol=1e-6)
    assert np.allclose(expected[1], _np(g)[[0, 2, 3]].sum(0))  # three contributions, not one


def test_embedding_padding_row_is_zero_and_gets_no_gradient(rng):
    emb = Embedding(6, 4, padding_idx=2)
    assert float(xp.abs(emb.weight.data[2]).sum()) == 0.0
    assert float(xp.abs(emb.weight.data[3]).sum()) > 0.0
    ids = xp.asarray([[2, 1, 2], [0, 2, 5]])
    out = emb(ids)
    assert float(xp.abs(out[0, 0]).sum()) == 0.0
    emb.backward(rng.normal((2, 3, 4)))
    grad = _np(emb.weight.grad)
    assert np.all(grad[2] == 0.0)
    assert np.all(grad[[0, 1, 5]] != 0.0) and np.all(grad[[3, 4]] == 0.0)
    assert Embedding(4, 2, padding_idx=-1).padding_idx == 3


def test_embedding_normal_init_statistics():
    w = _np(Embedding(200, 50).weight.data)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1.0) < 0.02


def test_embedding_rejects_bad_ids():
    emb = Embedding(4, 2)
    with pytest.raises(TypeError, match=r"Embedding: 'ids' must be a int array, got dtype float"):
        emb(xp.asarray([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"'ids' must lie in \[0, 4\), got values in \[0, 4\]"):
        emb(xp.asarray([0, 4]))
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\]"):
        emb(xp.asarray([-1, 1]))
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(4, 2, padding_idx=4)
    with pytest.raises(ValueError, match="embedding_dim"):
        Embedding(4, 0)


# ------------------------------------------------------------------ LayerNorm
def test_layernorm_output_has_mean_zero_and_unit_variance(rng):
    x = rng.normal((3, 4, 16), loc=5.0, scale=3.0, dtype=xp.float64)
    y = _np(LayerNorm(16).double()(x))
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-4)  # eps=1e-5 over var ~9 -> 1 - 1e-6


def test_layernorm_matches_formula_with_affine(rng):
    x = _np(rng.normal((5, 6)))
    ln = LayerNorm((6,), eps=1e-3)
    ln.weight.data = rng.normal((6,))
    ln.bias.data = rng.normal((6,))
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3)
    expected = expected * _np(ln.weight.data) + _np(ln.bias.data)
    np.testing.assert_allclose(_np(ln(xp.asarray(x, dtype=xp.float32))), expected, rtol=1e-5, atol=1e-5)


def test_layernorm_parameters_and_backward_sums(rng):
    ln = LayerNorm(5)
    assert [n for n, _ in ln.named_parameters()] == ["weight", "bias"]
    assert np.all(_np(ln.weight.data) == 1.0) and np.all(_np(ln.bias.data) == 0.0)
    assert LayerNorm(5, elementwise_affine=False).parameters() == []
    assert [n for n, _ in LayerNorm(5, bias=False).named_parameters()] == ["weight"]
    x = rng.normal((4, 5), dtype=xp.float64)
    ln.double()(x)
    dx = _np(ln.backward(xp.ones((4, 5), dtype=xp.float64)))
    # adding a constant to a row does not change the output: the input gradient sums to 0 per row
    np.testing.assert_allclose(dx.sum(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(_np(ln.bias.grad), 4.0)


def test_layernorm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="1-tuple"):
        LayerNorm((3, 4))
    with pytest.raises(ValueError, match="'eps' must be a positive float"):
        LayerNorm(3, eps=0)
    with pytest.raises(ValueError, match=r"LayerNorm: 'x' must have shape \(\.\.\., 3\), got \(2, 4\)"):
        LayerNorm(3)(xp.ones((2, 4), dtype=xp.float32))


# ------------------------------------------------------------------ Dropout
def test_dropout_eval_mode_and_p0_are_identity(rng):
    x = rng.normal((4, 5))
    d = Dropout(0.5).eval()
    assert d(x) is x
    assert d.backward(x) is x
    assert Dropout(0.0)(x) is x


def test_dropout_train_mode_zeros_p_and_scales_the_rest(rng):
    p = 0.3
    x = xp.ones((200, 500), dtype=xp.float32)
    d = Dropout(p)
    y = _np(d(x))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1.0 / (1.0 - p), rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 0.005  # 100000 draws: std of the fraction ~ 0.0014
    assert abs(y.mean() - 1.0) < 0.01  # inverted dropout keeps the expected value
    g = _np(d.backward(xp.full((200, 500), 2.0, dtype=xp.float32)))
    np.testing.assert_allclose(g, 2.0 * y)  # the same mask and scale


def test_dropout_is_reproducible_with_manual_seed():
    x = xp.ones((8, 8), dtype=xp.float32)
    backend.manual_seed(123)
    a = _np(Dropout(0.5)(x))
    backend.manual_seed(123)
    b = _np(Dropout(0.5)(x))
    c = _np(Dropout(0.5)(x))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_dropout_rejects_bad_p():
    for p in (-0.1, 1.0, 1.5, "0.5"):
        with pytest.raises(ValueError, match=r"Dropout: 'p' must be a float in \[0, 1\)"):
            Dropout(p)


# ------------------------------------------------------------------ activations
X = np.array([-30.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 30.0])


def _apply(layer, x=X):
    return _np(layer.double()(xp.asarray(x, dtype=xp.float64)))


def test_relu_tanh_sigmoid_values():
    np.testing.assert_array_equal(_apply(ReLU()), np.maximum(X, 0))
    np.testing.assert_allclose(_apply(Tanh()), np.tanh(X), rtol=1e-15)
    np.testing.assert_allclose(_apply(Sigmoid()), 1 / (1 + np.exp(-X)), rtol=1e-14, atol=1e-300)
    big = _np(Sigmoid()(xp.asarray([-1000.0, 1000.0], dtype=xp.float32)))  # no overflow warning, no NaN
    np.testing.assert_array_equal(big, [0.0, 1.0])


def test_activation_derivatives_at_known_points():
    x = xp.asarray([-1.0, 0.5, 2.0], dtype=xp.float64)
    ones = xp.ones(3, dtype=xp.float64)
    relu = ReLU().double()
    relu(x)
    np.testing.assert_array_equal(_np(relu.backward(ones)), [0.0, 1.0, 1.0])
    tanh = Tanh()
    tanh(x)
    np.testing.assert_allclose(_np(tanh.backward(ones)), 1 / np.cosh([-1.0, 0.5, 2.0]) ** 2, rtol=1e-14)
    sig = Sigmoid()
    s = 1 / (1 + np.exp(-np.array([-1.0, 0.5, 2.0])))
    sig(x)
    np.testing.assert_allclose(_np(sig.backward(ones)), s * (1 - s), rtol=1e-14)


def test_erf_matches_math_erf():
    z = np.linspace(-7, 7, 1401)
    expected = np.array([math.erf(v) for v in z])
    np.testing.assert_allclose(_np(erf(xp.asarray(z))), expected, rtol=0, atol=5e-15)


def test_gelu_exact_and_tanh_at_known_points():
    exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in X])
    np.testing.assert_allclose(_apply(GELU(approximate="none")), exact, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(_apply(GELU("none"), np.array([1.0])), [0.8413447460685429], rtol=1e-14)
    c = math.sqrt(2 / math.pi)
    tanh_form = 0.5 * X * (1 + np.tanh(c * (X + 0.044715 * X ** 3)))
    np.testing.assert_allclose(_apply(GELU("tanh")), tanh_form, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(_apply(GELU()), exact, rtol=1e-13, atol=1e-14)   # default: exact, as torch
    # the approximation is close to the exact function: within 5e-4 everywhere
    grid = np.linspace(-6, 6, 2401)
    ref = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in grid])
    assert np.max(np.abs(_apply(GELU("tanh"), grid) - ref)) < 5e-4
    assert _apply(GELU("tanh"), np.array([0.0]))[0] == 0.0


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match=r"GELU: 'approximate' must be 'tanh' or 'none', got 'erf'"):
        GELU(approximate="erf")


def test_activations_reject_integer_input():
    for layer in (ReLU(), GELU(), Tanh(), Sigmoid(), Softmax(), LogSoftmax(), Dropout(0.1)):
        with pytest.raises(TypeError, match=f"{type(layer).__name__}: 'x' must be a float array"):
            layer(xp.asarray([1, 2]))


# ------------------------------------------------------------------ Softmax, LogSoftmax
def test_softmax_and_log_softmax_along_dim(rng):
    x = _np(rng.normal((2, 3, 4)))
    for dim in (-1, 1, 0):
        e = np.exp(x - x.max(dim, keepdims=True))
        p = e / e.sum(dim, keepdims=True)
        xd = xp.asarray(x)
        np.testing.assert_allclose(_np(Softmax(dim)(xd)), p, rtol=1e-12)
        np.testing.assert_allclose(_np(LogSoftmax(dim=dim)(xd)), np.log(p), rtol=1e-12, atol=1e-14)
    big = _np(LogSoftmax()(xp.asarray([[1e4, 0.0, -1e4]])))
    np.testing.assert_allclose(big, [[0.0, -1e4, -2e4]])


def test_softmax_rejects_bad_dim():
    with pytest.raises(ValueError, match=r"Softmax: 'dim'=2 is out of range for an input with 2 axes"):
        Softmax(dim=2)(xp.ones((2, 3)))
    with pytest.raises(TypeError, match="'dim' must be an int"):
        LogSoftmax(dim=None)


# ------------------------------------------------------------------ composition
def test_mlp_block_gradcheck_passes(rng):
    from npattention import Sequential

    net = Sequential(Linear(6, 8), LayerNorm(8), GELU(), Dropout(0.25), Linear(8, 3), Tanh())
    report = gradcheck(net, (rng.normal((2, 3, 6)),))
    assert report.passed and report.worst_rel_error < 1e-5, str(report)


def test_wrong_backward_is_caught_by_gradcheck(rng):
    class NoMeanLayerNorm(LayerNorm):
        def backward(self, grad_output):  # forgets the two mean terms of the derivative
            xhat, rstd = self.cache
            self.weight.grad += (grad_output * xhat).sum(axis=0)
            self.bias.grad += grad_output.sum(axis=0)
            return rstd * grad_output * self.weight.data

    report = gradcheck(NoMeanLayerNorm(5), (rng.normal((4, 5)),))
    assert not report.passed
    assert {r.name: r.passed for r in report.rows} == {"input[0]": False, "weight": True, "bias": True}
    assert report.rows[0].max_rel_error > 0.1
