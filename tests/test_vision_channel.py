"""SE, SE-ResNet, SE-Inception, CBAM, ECA and pixel attention: values, gates, kernel rule, errors."""
import numpy as np
import pytest

from npattention.backend import to_numpy, xp
from npattention.vision.channel import (
    CBAM,
    ECA,
    ChannelAttention,
    PixelAttention,
    SEBasicBlock,
    SEBlock,
    SEInception,
    SpatialAttention,
    eca_kernel_size,
)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_se_block_matches_the_notes_formula(rng):
    se = SEBlock(32).double()                        # ratio 16 -> 2 hidden units, no biases
    assert se.fc1.weight.shape == (2, 32) and se.fc1.bias is None and se.fc2.bias is None
    x = rng.normal((3, 32, 4, 5), dtype=xp.float64)
    xn = to_numpy(x)
    w1, w2 = to_numpy(se.fc1.weight.data), to_numpy(se.fc2.weight.data)
    gate = sigmoid(np.maximum(xn.mean(axis=(2, 3)) @ w1.T, 0) @ w2.T)
    np.testing.assert_allclose(to_numpy(se(x)), xn * gate[:, :, None, None], rtol=1e-12)
    np.testing.assert_allclose(to_numpy(se.last_gate), gate, rtol=1e-12)
    assert SEBlock(32, ratio=8).fc1.weight.shape == (4, 32)   # the notes' keyword


def test_gates_lie_strictly_between_0_and_1(rng):
    x = rng.normal((2, 16, 6, 6), 0.0, 5.0)
    blocks = [SEBlock(16), ECA(16), CBAM(16), PixelAttention(16)]
    for block in blocks:
        out = block(x)
        assert out.shape == x.shape
    gates = [blocks[0].last_gate, blocks[1].last_gate, blocks[2].last_channel_gate,
             blocks[2].last_spatial_gate, blocks[3].last_gate]
    shapes = [(2, 16), (2, 16), (2, 16, 1, 1), (2, 1, 6, 6), (2, 16, 6, 6)]
    for g, shape in zip(gates, shapes):
        g = to_numpy(g)
        assert g.shape == shape
        assert g.min() > 0 and g.max() < 1


def test_eca_kernel_sizes():
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 2048)] == [3, 5, 5, 5, 7]
    assert ECA(512).kernel_size == 5 and ECA(512).conv.weight.shape == (1, 1, 5)
    assert ECA(512).conv.bias is None and ECA(64, kernel_size=7).kernel_size == 7


def test_eca_is_a_local_1d_conv_across_channels(rng):
    eca = ECA(64).double()                          # k = 3: gate c depends on channels c-1, c, c+1 only
    x = rng.normal((1, 64, 3, 3), dtype=xp.float64)
    eca(x)
    g0 = to_numpy(eca.last_gate).copy()
    x2 = x.copy()
    x2[0, 10] += 5.0
    eca(x2)
    changed = np.nonzero(np.abs(to_numpy(eca.last_gate) - g0)[0] > 1e-12)[0].tolist()
    assert changed == [9, 10, 11]
    w = to_numpy(eca.conv.weight.data)[0, 0]
    y = to_numpy(x).mean(axis=(2, 3))[0]
    ypad = np.pad(y, 1)
    np.testing.assert_allclose(g0[0], sigmoid(np.convolve(ypad, w[::-1], mode="valid")), rtol=1e-12)


def test_channel_and_spatial_attention_return_gates_like_the_notes(rng):
    ca = ChannelAttention(16).double()              # ratio 8 (the notes' default): 16 -> 2 -> 16
    assert ca.fc1.weight.shape == (2, 16, 1, 1) and ca.fc1.bias is None
    x = rng.normal((2, 16, 4, 4), dtype=xp.float64)
    xn = to_numpy(x)
    w1, w2 = to_numpy(ca.fc1.weight.data)[:, :, 0, 0], to_numpy(ca.fc2.weight.data)[:, :, 0, 0]
    mlp = lambda v: np.maximum(v @ w1.T, 0) @ w2.T
    expected = sigmoid(mlp(xn.mean(axis=(2, 3))) + mlp(xn.max(axis=(2, 3))))
    np.testing.assert_allclose(to_numpy(ca(x))[:, :, 0, 0], expected, rtol=1e-12)

    sa = SpatialAttention(3).double()
    assert sa.conv1.weight.shape == (1, 2, 3, 3) and sa.conv1.bias is None and sa.conv1.padding == (1, 1)
    gate = to_numpy(sa(x))
    assert gate.shape == (2, 1, 4, 4)
    maps = np.concatenate([xn.mean(axis=1, keepdims=True), xn.max(axis=1, keepdims=True)], axis=1)
    w = to_numpy(sa.conv1.weight.data)[0]
    mp = np.pad(maps, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.array([[[(mp[b, :, i:i + 3, j:j + 3] * w).sum() for j in range(4)] for i in range(4)]
                    for b in range(2)])
    np.testing.assert_allclose(gate[:, 0], sigmoid(ref), rtol=1e-12)


def test_cbam_composition_and_order(rng):
    cbam = CBAM(16, ratio=4, kernel_size=7).double()
    x = rng.normal((2, 16, 5, 5), dtype=xp.float64)
    out = cbam(x)
    x1 = x * cbam.channelattention(x)
    np.testing.assert_allclose(to_numpy(out), to_numpy(x1 * cbam.spatialattention(x1)), rtol=1e-12)
    cbam.order = "spatial-channel"
    out2 = cbam(x)
    x1 = x * cbam.spatialattention(x)
    np.testing.assert_allclose(to_numpy(out2), to_numpy(x1 * cbam.channelattention(x1)), rtol=1e-12)
    assert not np.allclose(to_numpy(out), to_numpy(out2))


def test_pixel_attention(rng):
    pa = PixelAttention(4).double()
    x = rng.normal((2, 4, 3, 3), dtype=xp.float64)
    w, b = to_numpy(pa.conv.weight.data)[:, :, 0, 0], to_numpy(pa.conv.bias.data)
    gate = sigmoid(np.einsum("oc,bchw->bohw", w, to_numpy(x)) + b[:, None, None])
    np.testing.assert_allclose(to_numpy(pa(x)), to_numpy(x) * gate, rtol=1e-12)


def test_se_resnet_and_inception_shapes(rng):
    block = SEBasicBlock(8, 16, stride=2, downsample=True)
    out = block(rng.normal((2, 8, 7, 7)))
    assert out.shape == (2, 16, 4, 4) and float(out.min()) >= 0       # ends with a ReLU
    assert block.backward(xp.ones(out.shape, dtype=xp.float32)).shape == (2, 8, 7, 7)
    inc = SEInception(8, 4, 4, 8, 2, 2, 2, reduction=4)
    out = inc(rng.normal((2, 8, 6, 6)))
    assert out.shape == (2, 16, 6, 6)
    assert inc.last_gate.shape == (2, 16) and block.last_gate.shape == (2, 16)


def test_se_on_the_residual_branch_before_the_addition(rng):
    # with zero SE weights every gate is sigmoid(0) = 1/2, so the block must be
    # relu(branch(x) / 2 + x): SE scales the residual branch only, the shortcut is untouched
    block = SEBasicBlock(16, 16).double()
    block.se.fc2.weight.data[...] = 0
    x = rng.normal((2, 16, 4, 4), dtype=xp.float64)
    h = block(x)
    gate = 0.5
    branch = to_numpy(block.bn2(block.conv2(xp.maximum(block.bn1(block.conv1(x)), 0)))) * gate
    np.testing.assert_allclose(to_numpy(h), np.maximum(branch + to_numpy(x), 0), rtol=1e-10, atol=1e-12)


def test_bad_input_errors(rng):
    with pytest.raises(ValueError, match=r"SEBlock: channel \(30\) must be divisible by reduction \(16\)"):
        SEBlock(30)
    with pytest.raises(ValueError, match=r"ChannelAttention: in_planes \(12\) must be divisible by ratio \(8\)"):
        CBAM(12)
    with pytest.raises(ValueError, match="'kernel_size' must be 3 or 7"):
        SpatialAttention(5)
    with pytest.raises(ValueError, match="'order' must be"):
        CBAM(16, order="parallel")
    with pytest.raises(ValueError, match="pass downsample=True"):
        SEBasicBlock(8, 16)
    x3 = rng.normal((2, 16, 5))
    for block in (SEBlock(16), ECA(16), CBAM(16), PixelAttention(16)):
        with pytest.raises(ValueError, match=r"'x' must have shape \(B, 16, H, W\).*got \(2, 16, 5\)"):
            block(x3)
    with pytest.raises(ValueError, match=r"SEBlock: 'x' must have shape \(B, 16, H, W\).*got \(2, 8, 3, 3\)"):
        SEBlock(16)(rng.normal((2, 8, 3, 3)))
