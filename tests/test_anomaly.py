"""Anomaly mode: the first non-finite value, forward or backward, names the module's path;
and the contract checks live in __call__ / one backward wrapper (forward is not wrapped)."""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from npattention import Linear, Module, Sequential, TransformerEncoder, TransformerEncoderLayer, manual_seed
from npattention.backend import xp
from npattention.layers import ReLU, Tanh
from npattention.module import AnomalyError, detect_anomaly, is_anomaly_enabled, set_detect_anomaly


class Log(Module):
    """y = log(x): NaN for x < 0, -inf at 0 (a module that *creates* non-finite values)."""

    def forward(self, x):
        self.cache = x
        return xp.log(x)

    def backward(self, grad_output):
        return grad_output / self.cache


class Block(Module):
    def __init__(self):
        self.fc = Linear(3, 3)
        self.log = Log()
        self.out = Linear(3, 2)

    def forward(self, x):
        return self.out(self.log(self.fc(x)))

    def backward(self, g):
        return self.fc.backward(self.log.backward(self.out.backward(g)))


def model():
    manual_seed(0)
    return Sequential(Linear(3, 3), ReLU(), Block(), Tanh())


def test_off_by_default_and_nan_flows_silently():
    assert not is_anomaly_enabled()
    net = model()
    x = xp.asarray(np.random.default_rng(0).normal(size=(4, 3)), dtype=xp.float32)
    with np.errstate(all="ignore"):
        y = net(x)
    assert not bool(xp.isfinite(y).all())   # the problem anomaly mode exists for


def test_forward_names_the_first_module_that_produced_nan():
    net = model()
    x = xp.asarray(np.random.default_rng(0).normal(size=(4, 3)), dtype=xp.float32)
    with detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(AnomalyError, match=r"forward of 'layers.2.log' \(Log\): output has \d+ NaN") as err:
            net(x)
    assert err.value.module_path == "layers.2.log" and err.value.phase == "forward"
    assert err.value.inputs_finite and "this module produced them" in str(err.value)
    assert not is_anomaly_enabled()   # the context manager restores the previous state


def test_forward_names_the_input_that_was_already_nonfinite():
    net = model()
    x = xp.ones((2, 3), dtype=xp.float32)
    x[1, 2] = xp.nan
    with detect_anomaly(), np.errstate(all="ignore"):
        with pytest.raises(AnomalyError, match=r"forward of '\(the model itself\)' \(Sequential\).*input 'x' was "
                                               r"already non-finite \(1 NaN and 0 inf among 6 entries\): the data "
                                               r"passed to the model holds NaN or inf") as err:
            net(x)
    assert not err.value.inputs_finite


def test_forward_names_a_nonfinite_parameter():
    net = model()
    net.layers[2].out.weight.data[0, 0] = xp.inf
    x = xp.ones((2, 3), dtype=xp.float32)   # log(relu(...)) may be -inf: use positive inputs only
    net.layers[2].fc.weight.data[...] = 0.1
    net.layers[2].fc.bias.data[...] = 1.0
    with detect_anomaly(), pytest.raises(AnomalyError, match=r"'layers.2.out' \(Linear\).*its parameter 'weight' is "
                                                             r"non-finite .*the weights themselves are bad"):
        net(x)


class Sqrt(Module):
    """y = sqrt(x): finite at x = 0, but its derivative 1 / (2 sqrt(x)) is inf there."""

    def forward(self, x):
        self.cache = xp.sqrt(x)
        return self.cache

    def backward(self, grad_output):
        return grad_output / (2 * self.cache)


def test_backward_names_the_first_module_whose_gradient_is_nonfinite():
    manual_seed(0)
    block = Block()
    block.log = Sqrt()
    net = Sequential(Linear(3, 3), ReLU(), block, Tanh())
    net.layers[2].fc.weight.data[...] = 0.0
    net.layers[2].fc.bias.data[...] = 0.0       # sqrt(0) = 0: a finite forward ...
    x = xp.ones((2, 3), dtype=xp.float32)
    with detect_anomaly():
        y = net(x)
        with np.errstate(all="ignore"), pytest.raises(AnomalyError, match=r"backward of 'layers.2.log' \(Sqrt\): "
                                                                          r"the returned input gradient has 0 NaN and 6 inf") as err:
            net.backward(xp.ones_like(y))       # ... but an infinite derivative
    assert err.value.phase == "backward" and err.value.inputs_finite


def test_backward_blames_a_nonfinite_grad_output_and_a_finite_chain_passes():
    net = model()
    x = xp.abs(xp.asarray(np.random.default_rng(1).normal(size=(2, 3)), dtype=xp.float32))
    net.layers[2].fc.bias.data[...] = 5.0      # log of a positive number: all finite
    with detect_anomaly():
        y = net(x)
        dx = net.backward(xp.ones_like(y))      # finite everywhere: no error, same numbers as without
        g = xp.ones_like(y)
        g[0, 0] = xp.nan
        net(x)
        with pytest.raises(AnomalyError, match=r"backward of '\(the model itself\)' \(Sequential\).*'grad_output' "
                                               r"was already non-finite .*the gradient passed to backward"):
            net.backward(g)
    net(x)
    np.testing.assert_array_equal(dx, net.backward(xp.ones_like(y)))


def test_transformer_path_names_the_attention_layer():
    manual_seed(0)
    enc = TransformerEncoder(TransformerEncoderLayer(8, 2, 16, dropout=0.0), num_layers=2)
    enc.layers[1].self_attn.in_proj_weight.data[0, 0] = xp.nan
    x = xp.asarray(np.random.default_rng(0).normal(size=(2, 4, 8)), dtype=xp.float32)
    with detect_anomaly(), pytest.raises(AnomalyError, match=r"forward of 'layers.1.self_attn' \(MultiheadAttention\): "
                                                             r"output\[0\] has .*its parameter 'in_proj_weight'"):
        enc(x)


class Halve(Module):
    """A parent whose own (inline) code makes the NaN that its child then receives."""

    def __init__(self):
        self.fc = Linear(3, 3)

    def forward(self, x):
        return self.fc(xp.sqrt(x - 10.0))     # sqrt of a negative: NaN made here, not in fc

    def backward(self, g):
        return self.fc.backward(g)


def test_a_child_fed_nan_by_its_parent_blames_the_parent():
    net = Sequential(Linear(3, 3), Halve())
    with detect_anomaly(), np.errstate(all="ignore"), pytest.raises(
            AnomalyError, match=r"forward of 'layers.1' \(Halve\): .*this module produced them"):
        net(xp.ones((2, 3), dtype=xp.float32))


def test_set_detect_anomaly_and_decorator_and_bad_arguments():
    set_detect_anomaly(True)
    try:
        assert is_anomaly_enabled()
    finally:
        set_detect_anomaly(False)

    @detect_anomaly()
    def run():
        return is_anomaly_enabled()

    assert run() and not is_anomaly_enabled()
    with pytest.raises(TypeError, match="'mode' must be True or False"):
        set_detect_anomaly("yes")
    with pytest.raises(TypeError, match="'enabled' must be True or False"):
        with detect_anomaly(1):
            pass


@pytest.mark.parametrize("value,ok", [("1", True), ("maybe", False)])
def test_environment_variable(value, ok):
    code = "import npattention.module as m; print(m.is_anomaly_enabled())"
    env = dict(os.environ, NPATTENTION_DETECT_ANOMALY=value)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if ok:
        assert r.stdout.strip() == "True"
    else:
        assert r.returncode != 0 and "NPATTENTION_DETECT_ANOMALY='maybe'" in r.stderr


def test_forward_is_not_wrapped_and_backward_wrapper_is_hidden():
    # stepping into layer.forward lands in the layer's own code
    assert Linear.forward.__code__.co_filename.endswith("layers.py")
    assert "__wrapped__" not in vars(Linear.forward)
    # backward: one wrapper, hidden from tracebacks, pointing at the layer's function
    assert Linear.backward.__wrapped__.__code__.co_filename.endswith("layers.py")
    assert "__tracebackhide__" in Linear.backward.__code__.co_varnames
    assert inspect.signature(Linear.backward) == inspect.signature(Linear.backward.__wrapped__)

    class Alias(Linear):
        backward = Linear.backward             # assigning a checked backward does not wrap twice

    assert Alias.backward is Linear.backward
