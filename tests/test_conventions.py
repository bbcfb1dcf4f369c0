"""PyTorch conventions: exact GELU for activation="gelu", tables in the module's dtype, and the
layers PyTorch users reach for first (AvgPool2d, multi-layer RNNs, BatchNorm2d options,
class weights, grid_sample modes), each against a closed form computed here."""
import math

import numpy as np
import pytest

from npattention import PositionwiseFeedForward, SinusoidalPositionalEncoding, manual_seed
from npattention.backend import to_numpy, xp
from npattention.layers import GELU


def exact_gelu(x):
    return np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()]).reshape(x.shape)


def test_activation_gelu_is_the_exact_erf_form_and_gelu_tanh_is_named():
    manual_seed(0)
    ff = PositionwiseFeedForward(4, 6, dropout=0.0, activation="gelu").double()
    assert isinstance(ff.activation, GELU) and ff.activation.approximate == "none"
    x = xp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)))
    h = to_numpy(x @ ff.linear1.weight.data.T + ff.linear1.bias.data)
    expected = exact_gelu(h) @ to_numpy(ff.linear2.weight.data).T + to_numpy(ff.linear2.bias.data)
    np.testing.assert_allclose(to_numpy(ff(x)), expected, rtol=1e-12, atol=1e-14)
    assert PositionwiseFeedForward(4, 6, activation="gelu_tanh").activation.approximate == "tanh"
    with pytest.raises(ValueError, match=r"'activation' must be one of \['gelu', 'gelu_tanh', 'relu'\]"):
        PositionwiseFeedForward(4, 6, activation="swish")


def test_sinusoidal_table_is_built_in_the_modules_dtype():
    pe = SinusoidalPositionalEncoding(6, max_len=50).double()
    t = np.arange(50)[:, None]
    freq = 10000.0 ** (-np.arange(0, 6, 2) / 6)
    ref = np.zeros((50, 6))
    ref[:, 0::2], ref[:, 1::2] = np.sin(t * freq), np.cos(t * freq)
    assert pe.pe.dtype == xp.float64
    np.testing.assert_allclose(to_numpy(pe.pe), ref, rtol=0, atol=1e-15)   # float32-then-cast: only 3e-8
    assert SinusoidalPositionalEncoding(6, max_len=50).pe.dtype == xp.float32
