import numpy as np
import pytest

from npattention import Linear, Module, Parameter, Sequential, backend
from npattention.backend import xp


class Scale(Module):
    def __init__(self):
        self.alpha = Parameter(xp.ones(1, dtype=xp.float32))
        self.register_buffer("count", xp.zeros(1, dtype=xp.float32))

    def forward(self, x):
        self.cache = x
        return self.alpha.data * x

    def backward(self, grad_output):
        self.alpha.grad += (grad_output * self.cache).sum(keepdims=True).reshape(1)
        return self.alpha.data * grad_output


def test_named_parameters_are_dotted_and_recursive():
    net = Sequential(Linear(3, 4), Scale(), Linear(4, 2, bias=False))
    names = [n for n, _ in net.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.alpha", "layers.2.weight"]
    assert net.num_parameters() == 12 + 4 + 1 + 8


def test_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match=r"Linear.backward\(\) called before forward\(\)"):
        Linear(2, 3).backward(xp.ones((1, 3)))


def test_grad_of_wrong_shape_raises():
    layer = Linear(2, 3)
    layer(xp.ones((4, 2), dtype=xp.float32))
    with pytest.raises(ValueError, match=r"grad_output.*\(4, 3\), got \(4, 2\)"):
        layer.backward(xp.ones((4, 2)))


def test_gradients_accumulate_until_zero_grad():
    layer = Linear(2, 1)
    x = xp.ones((1, 2), dtype=xp.float32)
    for _ in range(2):
        layer(x)
        layer.backward(xp.ones((1, 1), dtype=xp.float32))
    np.testing.assert_allclose(backend.to_numpy(layer.weight.grad), [[2.0, 2.0]])
    layer.zero_grad()
    assert float(xp.abs(layer.weight.grad).sum()) == 0.0


def test_train_eval_propagates():
    net = Sequential(Linear(2, 2), Scale())
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_state_dict_round_trip_includes_buffers():
    a, b = Scale(), Scale()
    a.alpha.data[...] = 3.0
    a.count[...] = 7.0
    b.load_state_dict(a.state_dict())
    assert float(b.alpha.data[0]) == 3.0 and float(b.count[0]) == 7.0
    assert set(a.state_dict()) == {"alpha", "count"}


def test_load_state_dict_lists_bad_keys_and_shapes():
    layer = Linear(2, 3)
    state = layer.state_dict()
    with pytest.raises(KeyError, match=r"missing keys \['bias'\], unexpected keys \['extra'\]"):
        layer.load_state_dict({"weight": state["weight"], "extra": state["bias"]})
    with pytest.raises(ValueError, match=r"weight: checkpoint \(3, 3\) vs model \(3, 2\)"):
        layer.load_state_dict({"weight": xp.zeros((3, 3)), "bias": state["bias"]})


def test_double_casts_parameters_and_buffers():
    m = Scale().double()
    assert m.alpha.data.dtype == xp.float64 and m.count.dtype == xp.float64 and m.alpha.grad.dtype == xp.float64


def test_linear_rejects_bad_input():
    layer = Linear(3, 2)
    with pytest.raises(ValueError, match=r"Linear: 'x' must have shape \(\.\.\., 3\), got \(4, 5\)"):
        layer(xp.ones((4, 5), dtype=xp.float32))
    with pytest.raises(TypeError, match="'x' must be a float array, got dtype int"):
        layer(xp.ones((4, 3), dtype=xp.int64))
    with pytest.raises(TypeError, match="must be an array"):
        layer([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="in_features"):
        Linear(0, 2)


def test_manual_seed_makes_init_reproducible():
    backend.manual_seed(5)
    w1 = backend.to_numpy(Linear(3, 3).weight.data)
    backend.manual_seed(5)
    w2 = backend.to_numpy(Linear(3, 3).weight.data)
    np.testing.assert_array_equal(w1, w2)
