"""Grouped / dilated Conv2d, SiLU, MHN's HighOrderAttention and MogaNet's MultiOrderGatedAggregation."""
import numpy as np
import pytest

from npattention.backend import Generator, to_numpy, xp
from npattention.layers import SiLU
from npattention.vision.layers import Conv1d, Conv2d
from npattention.vision.multi_order import (HighOrderAttention, MultiOrderDWConv, MultiOrderGatedAggregation,
                                            _products_of_others)


def H(a):
    return to_numpy(a)


@pytest.fixture
def rng():
    return Generator(12)


# ---------------------------------------------------------------- grouped convolution
@pytest.mark.parametrize("cin, cout, groups, kernel, dilation, stride, padding", [
    (4, 6, 2, 3, 1, 1, 1),
    (6, 6, 3, (3, 2), (2, 1), (2, 1), (2, 1)),
    (4, 4, 4, 5, 2, 1, 4),            # depthwise, dilated
    (3, 6, 3, 3, 3, 1, 3),            # depthwise with a channel multiplier of 2
])
def test_grouped_conv_equals_one_conv_per_group(rng, cin, cout, groups, kernel, dilation, stride, padding):
    conv = Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups).double()
    conv.bias.data[...] = rng.normal((cout,))
    x = rng.normal((2, cin, 9, 8))
    out = conv(x)
    cg, og = cin // groups, cout // groups
    dout = rng.normal(out.shape)
    dx = conv.backward(dout)
    for g in range(groups):
        ref = Conv2d(cg, og, kernel, stride=stride, padding=padding, dilation=dilation).double()
        ref.weight.data[...] = conv.weight.data[g * og:(g + 1) * og]
        ref.bias.data[...] = conv.bias.data[g * og:(g + 1) * og]
        np.testing.assert_allclose(H(out[:, g * og:(g + 1) * og]), H(ref(x[:, g * cg:(g + 1) * cg])), atol=1e-12)
        np.testing.assert_allclose(H(dx[:, g * cg:(g + 1) * cg]), H(ref.backward(dout[:, g * og:(g + 1) * og])),
                                   atol=1e-12)
        np.testing.assert_allclose(H(conv.weight.grad[g * og:(g + 1) * og]), H(ref.weight.grad), atol=1e-12)
    assert conv.weight.shape == (cout, cg) + conv.kernel_size


def test_depthwise_conv_hand_computed():
    # channel 0: a 3x3 box of ones (sums of 3x3 neighbourhoods); channel 1: 2 x the centre tap
    x = xp.asarray(np.arange(18, dtype=float).reshape(1, 2, 3, 3))
    conv = Conv2d(2, 2, 3, padding=1, groups=2, bias=False).double()
    conv.weight.data[...] = 0
    conv.weight.data[0, 0] = 1
    conv.weight.data[1, 0, 1, 1] = 2
    out = H(conv(x))
    box = np.array([[8, 15, 12], [21, 36, 27], [20, 33, 24]], dtype=float)   # 0..8 summed over 3x3
    np.testing.assert_array_equal(out[0, 0], box)
    np.testing.assert_array_equal(out[0, 1], 2 * np.arange(9, 18).reshape(3, 3))


def test_dilated_depthwise_conv_hand_computed():
    # a 3x3 kernel with dilation 2 and padding 2: the top-left tap reads the pixel 2 up, 2 left
    x = xp.asarray(np.arange(25, dtype=float).reshape(1, 1, 5, 5))
    conv = Conv2d(1, 1, 3, padding=2, dilation=2, groups=1, bias=False).double()
    conv.weight.data[...] = 0
    conv.weight.data[0, 0, 0, 0] = 1
    out = H(conv(x))[0, 0]
    expected = np.zeros((5, 5))
    expected[2:, 2:] = np.arange(25).reshape(5, 5)[:3, :3]
    np.testing.assert_array_equal(out, expected)
    # depthwise over two channels, each with its own dilated tap
    x2 = xp.concatenate([x, 10 * x], axis=1)
    dw = Conv2d(2, 2, 3, padding=2, dilation=2, groups=2, bias=False).double()
    dw.weight.data[...] = 0
    dw.weight.data[0, 0, 0, 0] = 1
    dw.weight.data[1, 0, 2, 2] = 1           # bottom-right tap: the pixel 2 down, 2 right
    out2 = H(dw(x2))[0]
    np.testing.assert_array_equal(out2[0], expected)
    down_right = np.zeros((5, 5))
    down_right[:3, :3] = 10 * np.arange(25).reshape(5, 5)[2:, 2:]
    np.testing.assert_array_equal(out2[1], down_right)


def test_conv1d_groups(rng):
    conv = Conv1d(4, 4, 3, padding=1, groups=4).double()
    x = rng.normal((2, 4, 7))
    out = H(conv(x))
    w, b, xn = H(conv.weight.data), H(conv.bias.data), np.pad(H(x), ((0, 0), (0, 0), (1, 1)))
    ref = np.stack([sum(w[c, 0, k] * xn[:, c, k:k + 7] for k in range(3)) + b[c] for c in range(4)], axis=1)
    np.testing.assert_allclose(out, ref, atol=1e-12)


def test_groups_errors():
    with pytest.raises(ValueError, match="'groups' \\(3\\) must divide both in_channels \\(4\\)"):
        Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match="groups"):
        Conv2d(4, 4, 3, groups=0)
    with pytest.raises(ValueError, match="in_channels"):
        Conv1d(4, 3, 3, groups=2)


# ---------------------------------------------------------------- SiLU
def test_silu_values_and_derivative():
    x = xp.asarray([-30.0, -1.0, 0.0, 1.0, 30.0])
    m = SiLU()
    y = H(m(x))
    s = 1 / (1 + np.exp(-H(x)))
    np.testing.assert_allclose(y, H(x) * s, rtol=1e-15)
    assert y[2] == 0.0 and abs(y[0]) < 3e-12
    np.testing.assert_allclose(H(m.backward(xp.ones(5))), s * (1 + H(x) * (1 - s)), rtol=1e-14)


# ---------------------------------------------------------------- MHN high-order attention
def test_high_order_attention_matches_the_formula(rng):
    m = HighOrderAttention(8, order=3).double()
    x = rng.normal((2, 8, 3, 4))
    out = H(m(x))
    xn = H(x)

    def conv1x1(conv, a):
        return np.einsum("oc,bchw->bohw", H(conv.weight.data)[:, :, 0, 0], a)

    gates = []
    for r in range(1, 4):
        p = np.ones((2, 2, 3, 4))
        for conv in m._convs_of_order(r):
            p = p * conv1x1(conv, xn)
        gates.append(1 / (1 + np.exp(-conv1x1(m.v_convs[r - 1], np.maximum(p, 0)))))
    np.testing.assert_allclose(out, xn * sum(gates) / 3, rtol=1e-12)
    np.testing.assert_allclose(H(m.last_gates), np.stack(gates, axis=1), rtol=1e-12)
    assert len(m.z_convs) == 6 and all(c.bias is None for c in m.z_convs + m.v_convs)


def test_products_of_others_has_no_division_and_handles_zeros():
    f = [xp.asarray([2.0, 0.0]), xp.asarray([3.0, 5.0]), xp.asarray([0.0, 7.0])]
    others = [H(o) for o in _products_of_others(f)]
    np.testing.assert_array_equal(others[0], [0.0, 35.0])
    np.testing.assert_array_equal(others[1], [0.0, 0.0])
    np.testing.assert_array_equal(others[2], [6.0, 0.0])
    np.testing.assert_array_equal(H(_products_of_others([xp.asarray([4.0])])[0]), [1.0])


# ---------------------------------------------------------------- MogaNet
def test_multi_order_dwconv_matches_its_definition(rng):
    m = MultiOrderDWConv(16).double()
    assert (m.c0, m.c1, m.c2) == (2, 6, 8)
    assert [c.padding for c in (m.dw_conv0, m.dw_conv1, m.dw_conv2)] == [(2, 2), (4, 4), (9, 9)]
    assert [c.dilation for c in (m.dw_conv0, m.dw_conv1, m.dw_conv2)] == [(1, 1), (2, 2), (3, 3)]
    x = rng.normal((2, 16, 6, 7))
    out = m(x)
    y0 = m.dw_conv0(x)
    cat = xp.concatenate([y0[:, :2], m.dw_conv1(y0[:, 2:8]), m.dw_conv2(y0[:, 8:])], axis=1)
    np.testing.assert_allclose(H(out), H(m.pw_conv(cat)), atol=1e-12)
    assert out.shape == x.shape


def test_moga_block_forward_by_hand(rng):
    m = MultiOrderGatedAggregation(8).double()
    m.sigma.data[...] = rng.normal((8,))
    x = rng.normal((2, 8, 5, 6))
    out = H(m(x))

    def silu(a):
        return a / (1 + np.exp(-a))

    def c1(conv, a):
        return np.einsum("oc,bchw->bohw", H(conv.weight.data)[:, :, 0, 0], a) + H(conv.bias.data)[:, None, None]

    y1 = c1(m.proj_1, H(x))
    y = y1 + H(m.sigma.data)[:, None, None] * (y1 - y1.mean(axis=(2, 3), keepdims=True))
    a = silu(y)
    g = c1(m.gate, a)
    v = H(m.value(xp.asarray(a)))
    np.testing.assert_allclose(out, c1(m.proj_2, silu(g) * silu(v)) + H(x), rtol=1e-10, atol=1e-12)
    assert float(MultiOrderGatedAggregation(8).sigma.data[0]) == pytest.approx(1e-5)


def test_multi_order_errors(rng):
    with pytest.raises(ValueError, match="multiple of sum\\(channel_split\\) = 8"):
        MultiOrderGatedAggregation(12)
    with pytest.raises(ValueError, match="dilations"):
        MultiOrderDWConv(8, dilations=(1, 2, 4))
    with pytest.raises(ValueError, match="order"):
        HighOrderAttention(8, order=0)
    with pytest.raises(ValueError, match="x"):
        HighOrderAttention(8)(rng.normal((2, 4, 3, 3)))


# ---------------------------------------------------------------- inside a CNN: it learns
@pytest.mark.parametrize("block", ["high_order", "moga"])
def test_attention_cnn_with_multi_order_block_learns(block):
    from npattention.backend import manual_seed
    from npattention.data.glyphs import make_glyphs
    from npattention.losses import CrossEntropyLoss
    from npattention.optim import Adam
    from npattention.train import accuracy, fit
    from npattention.vision.models import AttentionCNN

    train = make_glyphs(600, size=16, n_classes=4, clutter=3, seed=0)
    test = make_glyphs(200, size=16, n_classes=4, clutter=3, seed=1)
    manual_seed(0)
    model = AttentionCNN(1, 4, block=block, width=4, reduction=2)      # the block sees 8 channels at 8x8
    before = accuracy(model, test)
    history = fit(model, CrossEntropyLoss(), Adam(model.parameters(), lr=1e-2), train, epochs=3, batch_size=32,
                  progress=False)
    after = accuracy(model, test)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert before < 0.45 and after > 0.9, (before, after)              # chance is 0.25

