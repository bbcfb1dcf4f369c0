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


# ------------------------------------------------------------------ the plain references of the optimised blocks
# The first versions of the forward / backward passes the optimised ones replaced (a mean over
# two axes, sum_to_shape of a full product, a one-hot argmax mask, plain a * g + d), kept as the
# reference: same weights, float64, outputs and every gradient compared at 1e-12.
def _ref_onehot_argmax(x, axis):
    idx = np.expand_dims(np.argmax(x, axis=axis), axis)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return np.arange(x.shape[axis]).reshape(shape) == idx


def _ref_sum_to_shape(grad, shape):
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True)


class _RefSE(SEBlock):
    def forward(self, x):
        s = x.mean(axis=(2, 3))
        z = self.fc1(s)
        gate = sigmoid(to_numpy(self.fc2(np.maximum(z, 0))))
        self.cache = (x, z, gate)
        return x * gate[:, :, None, None]

    def backward(self, grad_output):
        x, z, gate = self.cache
        H, W = x.shape[2:]
        dgate = (grad_output * x).sum(axis=(2, 3))
        dz = self.fc2.backward(dgate * gate * (1 - gate)) * (z > 0)
        ds = self.fc1.backward(dz)
        return grad_output * gate[:, :, None, None] + ds[:, :, None, None] / (H * W)


class _RefECA(ECA):
    def forward(self, x):
        gate = sigmoid(to_numpy(self.conv(x.mean(axis=(2, 3))[:, None, :])[:, 0, :]))
        self.cache = (x, gate)
        return x * gate[:, :, None, None]

    def backward(self, grad_output):
        x, gate = self.cache
        H, W = x.shape[2:]
        de = (grad_output * x).sum(axis=(2, 3)) * gate * (1 - gate)
        dy = self.conv.backward(de[:, None, :])[:, 0, :]
        return grad_output * gate[:, :, None, None] + dy[:, :, None, None] / (H * W)


class _RefSpatial(SpatialAttention):
    def forward(self, x):
        avg, mx = x.mean(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        gate = sigmoid(to_numpy(self.conv1(np.concatenate([avg, mx], axis=1))))
        self.cache = (x.shape[1], _ref_onehot_argmax(x, axis=1), gate)
        return gate

    def backward(self, grad_output):
        C, is_max, gate = self.cache
        d = self.conv1.backward(grad_output * gate * (1 - gate))
        return d[:, :1] / C + is_max * d[:, 1:]


class _RefCBAM(CBAM):
    def forward(self, x):
        first, second = self._stages()
        g1 = first(x)
        x1 = x * g1
        g2 = second(x1)
        self.cache = (x, g1, x1, g2)
        return x1 * g2

    def backward(self, grad_output):
        first, second = self._stages()
        x, g1, x1, g2 = self.cache
        dx1 = grad_output * g2 + second.backward(_ref_sum_to_shape(grad_output * x1, g2.shape))
        return dx1 * g1 + first.backward(_ref_sum_to_shape(dx1 * x, g1.shape))


def _with_ties(x):
    """Round to a few levels and clip at 0 (as after a ReLU): many channels share the maximum."""
    return np.maximum(np.round(x * 2) / 2, 0)


def _pair(fast, ref):
    ref = ref.double()
    fast = fast.double()
    fast.load_state_dict(ref.state_dict())
    return fast, ref


@pytest.mark.parametrize("shape", [(3, 16, 5, 7), (1, 16, 1, 1), (2, 32, 8, 3)])
@pytest.mark.parametrize("make", ["SEBlock", "ECA", "SpatialAttention", "CBAM channel-spatial", "CBAM spatial-channel"])
def test_optimised_channel_blocks_match_the_plain_reference(rng, make, shape):
    C = shape[1]
    if make == "SEBlock":
        fast, ref = _pair(SEBlock(C, 8), _RefSE(C, 8))
    elif make == "ECA":
        fast, ref = _pair(ECA(C), _RefECA(C))
    elif make == "SpatialAttention":
        fast, ref = _pair(SpatialAttention(3), _RefSpatial(3))
    else:
        order = make.split()[1]
        fast, ref = _pair(CBAM(C, ratio=4, order=order), _RefCBAM(C, ratio=4, order=order))
        # the reference CBAM runs on reference gates too
        ref.spatialattention = _pair(SpatialAttention(7), _RefSpatial(7))[1]
        ref.spatialattention.load_state_dict(fast.spatialattention.state_dict())
    for x in (rng.normal(shape, dtype=xp.float64), xp.asarray(_with_ties(to_numpy(rng.normal(shape, dtype=xp.float64))))):
        out_shape = (shape[0], 1) + shape[2:] if make == "SpatialAttention" else shape
        g = rng.normal(out_shape, dtype=xp.float64)
        fast.zero_grad()
        ref.zero_grad()
        np.testing.assert_allclose(to_numpy(fast(x)), to_numpy(ref(x)), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(to_numpy(fast.backward(g)), to_numpy(ref.backward(g)), rtol=1e-12, atol=1e-14)
        for (name, p), (_, q) in zip(fast.named_parameters(), ref.named_parameters()):
            np.testing.assert_allclose(to_numpy(p.grad), to_numpy(q.grad), rtol=1e-12, atol=1e-14, err_msg=name)
