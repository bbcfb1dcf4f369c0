"""Recurrent cells and layers: equations, padding, BPTT gradients, errors."""
import numpy as np
import pytest

from npattention.backend import to_numpy, xp
from npattention.gradcheck import gradcheck
from npattention.module import Module
from npattention.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell


def sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def params(cell):
    W_ih, W_hh = to_numpy(cell.weight_ih.data), to_numpy(cell.weight_hh.data)
    b_ih, b_hh = to_numpy(cell.bias_ih.data), to_numpy(cell.bias_hh.data)
    return W_ih, W_hh, b_ih, b_hh


# ------------------------------------------------------------------ cells = the equations
def test_rnn_cell_matches_equation(rng):
    cell = RNNCell(3, 4).double()
    x, h = rng.normal((2, 3), dtype=xp.float64), rng.normal((2, 4), dtype=xp.float64)
    W_ih, W_hh, b_ih, b_hh = params(cell)
    want = np.tanh(to_numpy(x) @ W_ih.T + b_ih + to_numpy(h) @ W_hh.T + b_hh)
    np.testing.assert_allclose(to_numpy(cell(x, h)), want, rtol=1e-12)
    relu = RNNCell(3, 4, nonlinearity="relu").double()
    W_ih, W_hh, b_ih, b_hh = params(relu)
    want = np.maximum(to_numpy(x) @ W_ih.T + b_ih + to_numpy(h) @ W_hh.T + b_hh, 0)
    np.testing.assert_allclose(to_numpy(relu(x, h)), want, rtol=1e-12)


def test_gru_cell_matches_pytorch_equations(rng):
    cell = GRUCell(3, 4).double()
    x, h = to_numpy(rng.normal((2, 3), dtype=xp.float64)), to_numpy(rng.normal((2, 4), dtype=xp.float64))
    W_ih, W_hh, b_ih, b_hh = params(cell)
    H = 4
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    r = sig(gi[:, :H] + gh[:, :H])
    z = sig(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    want = (1 - z) * n + z * h
    np.testing.assert_allclose(to_numpy(cell(xp.asarray(x), xp.asarray(h))), want, rtol=1e-12)
    assert cell.weight_ih.shape == (12, 3) and cell.weight_hh.shape == (12, 4) and cell.bias_hh.shape == (12,)


def test_lstm_cell_matches_pytorch_equations(rng):
    cell = LSTMCell(3, 2).double()
    x, h, c = (to_numpy(rng.normal(s, dtype=xp.float64)) for s in [(4, 3), (4, 2), (4, 2)])
    W_ih, W_hh, b_ih, b_hh = params(cell)
    a = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    i, f, g, o = sig(a[:, 0:2]), sig(a[:, 2:4]), np.tanh(a[:, 4:6]), sig(a[:, 6:8])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    got_h, got_c = cell(*(xp.asarray(v) for v in (x, h, c)))
    np.testing.assert_allclose(to_numpy(got_h), h_new, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(got_c), c_new, rtol=1e-12)


def test_zero_state_is_the_default(rng):
    cell = GRUCell(3, 4)
    x = rng.normal((2, 3))
    np.testing.assert_array_equal(to_numpy(cell(x)), to_numpy(cell(x, xp.zeros((2, 4), dtype=xp.float32))))


def test_sigmoid_is_stable_for_large_inputs():
    cell = LSTMCell(1, 1).double()
    cell.weight_ih.data[...] = 1e4  # pre-activations of +-1e4: no overflow warning, no NaN
    with np.errstate(over="raise"):
        h, c = cell(xp.asarray([[1.0], [-1.0]]))
    assert np.isfinite(to_numpy(h)).all() and np.isfinite(to_numpy(c)).all()


# ------------------------------------------------------------------ sequence layers
@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
def test_layer_equals_the_cell_unrolled(cls, rng):
    layer = cls(3, 4).double()
    x = rng.normal((2, 5, 3), dtype=xp.float64)
    out, final = layer(x)
    cell = layer.cells[0]
    state = cell.initial_state(2, xp.float64)
    for t in range(5):
        state, _ = cell.step(x[:, t], state)
        np.testing.assert_allclose(to_numpy(out[:, t]), to_numpy(state[0]), rtol=1e-12)
    h_n = final[0] if cls is LSTM else final
    np.testing.assert_allclose(to_numpy(h_n[0]), to_numpy(state[0]), rtol=1e-12)


@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_steps_change_nothing(cls, bidirectional, rng):
    """Outputs and final states of a padded batch equal those of each sequence run alone."""
    layer = cls(3, 4, bidirectional=bidirectional).double()
    lengths = [5, 2, 3]
    x = rng.normal((3, 5, 3), dtype=xp.float64)
    x = x * (xp.arange(5)[None, :, None] < xp.asarray(lengths)[:, None, None])  # zero padding
    x[1, 3:] = 7.0  # garbage in the padding must not matter either
    out, final = layer(x, lengths=xp.asarray(lengths))
    finals = final if cls is LSTM else (final,)
    D = 2 if bidirectional else 1
    assert out.shape == (3, 5, D * 4) and finals[0].shape == (D, 3, 4)
    for b, L in enumerate(lengths):
        alone, alone_final = layer(x[b:b + 1, :L])
        alone_finals = alone_final if cls is LSTM else (alone_final,)
        np.testing.assert_allclose(to_numpy(out[b, :L]), to_numpy(alone[0]), rtol=1e-12, atol=1e-14)
        assert not np.any(to_numpy(out[b, L:]))  # outputs are zero at padding
        for f, fa in zip(finals, alone_finals):
            np.testing.assert_allclose(to_numpy(f[:, b]), to_numpy(fa[:, 0]), rtol=1e-12, atol=1e-14)


def test_mask_is_the_same_as_lengths(rng):
    layer = GRU(2, 3, bidirectional=True)
    x = rng.normal((2, 4, 2))
    mask = xp.asarray([[False, False, True, True], [False, False, False, False]])
    a, ha = layer(x, mask=mask)
    b, hb = layer(x, lengths=xp.asarray([2, 4]))
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    np.testing.assert_array_equal(to_numpy(ha), to_numpy(hb))


def test_bidirectional_backward_direction_reads_right_to_left(rng):
    layer = GRU(2, 3, bidirectional=True).double()
    x = rng.normal((1, 4, 2), dtype=xp.float64)
    out, h_n = layer(x)
    rev = layer.cells[1]
    state = rev.initial_state(1, xp.float64)
    for t in (3, 2, 1, 0):
        state, _ = rev.step(x[:, t], state)
        np.testing.assert_allclose(to_numpy(out[0, t, 3:]), to_numpy(state[0][0]), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(h_n[1]), to_numpy(state[0]), rtol=1e-12)


class FinalStateProbe(Module):
    """Loss-like wrapper that also sends a gradient into the final state (h_n, c_n)."""

    gradcheck_exempt = "test helper"

    def __init__(self, layer, lengths):
        self.layer, self.lengths = layer, lengths

    def forward(self, x):
        out, final = self.layer(x, lengths=self.lengths)
        finals = final if isinstance(final, tuple) else (final,)
        self.cache = [f.shape for f in finals]
        # concatenate outputs and final states along time so that one upstream gradient covers both
        B = x.shape[0]
        extra = [f.transpose(1, 0, 2).reshape(B, 1, -1) for f in finals]
        return xp.concatenate([out.reshape(B, 1, -1)] + extra, axis=-1)

    def backward(self, grad_output):
        B = grad_output.shape[0]
        n_out = self.layer.cache[0].shape[1] * self.layer.output_size
        g = grad_output.reshape(B, -1)
        d_out = g[:, :n_out].reshape(B, -1, self.layer.output_size)
        grads, pos = [], n_out
        for shape in self.cache:
            D, _, H = shape
            grads.append(g[:, pos:pos + D * H].reshape(B, D, H).transpose(1, 0, 2))
            pos += D * H
        return self.layer.backward(d_out, *grads)


@pytest.mark.parametrize("cls", [GRU, LSTM, RNN])
def test_gradient_through_the_final_state(cls, rng):
    probe = FinalStateProbe(cls(2, 3, bidirectional=True), xp.asarray([4, 2, 3]))
    report = gradcheck(probe, (rng.normal((3, 4, 2)),))
    assert report.passed and report.worst_rel_error < 1e-5, str(report)


def test_parameter_gradients_accumulate(rng):
    layer = LSTM(2, 3)
    x = rng.normal((2, 3, 2))
    out, _ = layer(x)
    layer.backward(xp.ones_like(out))
    first = to_numpy(layer.cells[0].weight_hh.grad).copy()
    layer(x)
    layer.backward(xp.ones_like(out))
    np.testing.assert_allclose(to_numpy(layer.cells[0].weight_hh.grad), 2 * first, rtol=1e-5)


# ------------------------------------------------------------------ bad input
def test_bad_input_errors(rng):
    layer = GRU(3, 4)
    with pytest.raises(ValueError, match=r"GRU: 'x' must have shape \(B, T, 3\)"):
        layer(rng.normal((2, 5, 2)))
    with pytest.raises(TypeError, match="'x' must be a float array"):
        layer(xp.zeros((2, 5, 3), dtype=xp.int64))
    with pytest.raises(ValueError, match=r"'lengths' must lie in \[1, T=5\]"):
        layer(rng.normal((2, 5, 3)), lengths=xp.asarray([6, 2]))
    with pytest.raises(ValueError, match="'lengths' must have shape"):
        layer(rng.normal((2, 5, 3)), lengths=xp.asarray([5, 2, 1]))
    with pytest.raises(ValueError, match="padding at the END"):
        layer(rng.normal((1, 3, 3)), mask=xp.asarray([[True, False, False]]))
    with pytest.raises(ValueError, match="'lengths' or 'mask', not both"):
        layer(rng.normal((1, 3, 3)), lengths=xp.asarray([3]), mask=xp.asarray([[False, False, False]]))
    with pytest.raises(ValueError, match=r"'h0' must have shape \(1, 2, 4\)"):
        layer(rng.normal((2, 5, 3)), rng.normal((2, 4)))
    with pytest.raises(ValueError, match="batch-first"):
        GRU(3, 4, batch_first=False)
    with pytest.raises(ValueError, match="'hidden_size' must be a positive int"):
        LSTM(3, 0)
    with pytest.raises(ValueError, match="give both 'h' and 'c'"):
        LSTMCell(2, 2)(rng.normal((1, 2)), rng.normal((1, 2)))
    with pytest.raises(ValueError, match="'nonlinearity' must be 'tanh' or 'relu'"):
        RNNCell(2, 2, nonlinearity="sigmoid")
    with pytest.raises(RuntimeError, match="before forward"):
        GRU(2, 2).backward(xp.zeros((1, 1, 2)))
