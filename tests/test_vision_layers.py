"""Conv2d/Conv1d against direct loops, pooling values, BatchNorm statistics, errors, the glyph data."""
import numpy as np
import pytest

from npattention.backend import to_numpy, xp
from npattention.data.glyphs import GLYPHS, make_glyphs
from npattention.vision.layers import (
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Flatten,
    MaxPool2d,
    col2im,
    im2col,
)


def conv2d_loop(x, w, b, stride, padding, dilation):
    """The textbook definition: one output pixel at a time."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    B, _, H, W = x.shape
    O, _, kh, kw = w.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((B, O, Ho, Wo))
    for n in range(B):
        for o in range(O):
            for h in range(Ho):
                for v in range(Wo):
                    patch = xpad[n, :, h * sh:h * sh + dh * (kh - 1) + 1:dh, v * sw:v * sw + dw * (kw - 1) + 1:dw]
                    out[n, o, h, v] = np.sum(patch * w[o]) + (0 if b is None else b[o])
    return out


@pytest.mark.parametrize("kernel, stride, padding, dilation, bias", [
    (3, 1, 1, 1, True),
    ((3, 2), (2, 1), (1, 2), (1, 2), False),
    (1, 2, 0, 1, True),
    (5, 3, 2, 1, True),
])
def test_conv2d_matches_loop_reference(rng, kernel, stride, padding, dilation, bias):
    conv = Conv2d(3, 4, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    x = rng.normal((2, 3, 9, 7), dtype=xp.float64)
    out = to_numpy(conv(x))
    ref = conv2d_loop(to_numpy(x), to_numpy(conv.weight.data), None if not bias else to_numpy(conv.bias.data),
                      conv.stride, conv.padding, conv.dilation)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_conv2d_shapes_and_init(rng):
    conv = Conv2d(4, 6, 3, stride=2, padding=1)
    assert conv.weight.shape == (6, 4, 3, 3) and conv.bias.shape == (6,)
    bound = 1 / np.sqrt(4 * 9)
    w = to_numpy(conv.weight.data)
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert conv(rng.normal((2, 4, 9, 8))).shape == (2, 6, 5, 4)


def test_col2im_is_the_adjoint_of_im2col(rng):
    # <im2col(x), c> == <x, col2im(c)> for any x, c: col2im is im2col's transpose
    args = ((3, 2), (2, 1), (1, 1), (2, 1))
    x = rng.normal((2, 3, 7, 6), dtype=xp.float64)
    cols = im2col(x, *args)
    c = rng.normal(cols.shape, dtype=xp.float64)
    lhs = float(xp.sum(cols * c))
    rhs = float(xp.sum(x * col2im(c, x.shape, *args)))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


def test_conv1d_matches_loop_reference(rng):
    conv = Conv1d(2, 3, 3, stride=2, padding=1, dilation=2).double()
    x = rng.normal((2, 2, 11), dtype=xp.float64)
    w = to_numpy(conv.weight.data)
    ref = conv2d_loop(to_numpy(x)[:, :, None], w[:, :, None], to_numpy(conv.bias.data), (1, 2), (0, 1), (1, 2))[:, :, 0]
    np.testing.assert_allclose(to_numpy(conv(x)), ref, rtol=1e-12, atol=1e-12)
    assert conv.weight.shape == (3, 2, 3)


def test_maxpool_values_and_gradient_routing():
    x = xp.asarray(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    pool = MaxPool2d(2)
    np.testing.assert_array_equal(to_numpy(pool(x))[0, 0], [[5, 7], [13, 15]])
    g = pool.backward(xp.ones((1, 1, 2, 2), dtype=xp.float32))
    expected = np.zeros((4, 4))
    expected[[1, 1, 3, 3], [1, 3, 1, 3]] = 1
    np.testing.assert_array_equal(to_numpy(g)[0, 0], expected)
    # overlapping windows: the centre pixel is the max of all four windows and gets 4
    y = xp.zeros((1, 1, 3, 3), dtype=xp.float32)
    y[0, 0, 1, 1] = 1
    pool3 = MaxPool2d(2, stride=1)
    assert to_numpy(pool3(y)).tolist() == [[[[1, 1], [1, 1]]]]
    assert float(pool3.backward(xp.ones((1, 1, 2, 2), dtype=xp.float32))[0, 0, 1, 1]) == 4.0
    # padding never wins: all-negative input keeps its own maxima
    neg = -xp.ones((1, 1, 3, 3), dtype=xp.float32)
    assert float(MaxPool2d(3, stride=1, padding=1)(neg).max()) == -1.0


def test_adaptive_pools(rng):
    x = xp.asarray(np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6))
    avg, mx = AdaptiveAvgPool2d(1), AdaptiveMaxPool2d(1)
    np.testing.assert_allclose(to_numpy(avg(x))[..., 0, 0], to_numpy(x).mean(axis=(2, 3)))
    np.testing.assert_array_equal(to_numpy(mx(x))[..., 0, 0], to_numpy(x).max(axis=(2, 3)))
    assert avg(x).shape == (2, 3, 1, 1)
    out = to_numpy(AdaptiveAvgPool2d((2, 3))(x))
    np.testing.assert_allclose(out[0, 0], [[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])
    assert to_numpy(AdaptiveMaxPool2d((2, 3))(x))[0, 0].tolist() == [[7, 9, 11], [19, 21, 23]]
    with pytest.raises(ValueError, match="must divide the input size 4x6"):
        AdaptiveAvgPool2d((3, 3))(x)


def test_batchnorm_train_statistics_and_running_update(rng):
    bn = BatchNorm2d(3, momentum=0.1)
    x = rng.normal((8, 3, 5, 5), 2.0, 3.0)
    y = to_numpy(bn(x))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)
    xn = to_numpy(x).astype(np.float64)
    n = 8 * 25
    np.testing.assert_allclose(to_numpy(bn.running_mean), 0.1 * xn.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(bn.running_var), 0.9 + 0.1 * xn.var(axis=(0, 2, 3)) * n / (n - 1), rtol=1e-5)
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}


def test_batchnorm_eval_uses_running_stats(rng):
    bn = BatchNorm2d(2, eps=1e-5)
    bn.running_mean = xp.asarray([1.0, -2.0], dtype=xp.float32)
    bn.running_var = xp.asarray([4.0, 0.25], dtype=xp.float32)
    bn.eval()
    x = rng.normal((3, 2, 2, 2))
    expected = (to_numpy(x) - np.array([1.0, -2.0])[:, None, None]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5)[:, None, None]
    np.testing.assert_allclose(to_numpy(bn(x)), expected, rtol=1e-5, atol=1e-6)
    before = to_numpy(bn.running_mean).copy()
    bn(x)
    np.testing.assert_array_equal(to_numpy(bn.running_mean), before)


def test_flatten(rng):
    f = Flatten()
    x = rng.normal((2, 3, 4, 5))
    assert f(x).shape == (2, 60)
    assert f.backward(xp.ones((2, 60), dtype=xp.float32)).shape == (2, 3, 4, 5)


def test_bad_input_errors(rng):
    conv = Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2d: 'x' must have shape \(B, 3, H, W\).*got \(2, 3, 5\)"):
        conv(rng.normal((2, 3, 5)))
    with pytest.raises(ValueError, match=r"Conv2d: 'x' must have shape \(B, 3, H, W\).*got \(2, 2, 5, 5\)"):
        conv(rng.normal((2, 2, 5, 5)))
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        conv(rng.normal((1, 3, 2, 5)))
    with pytest.raises(TypeError, match="must be a float array"):
        conv(xp.zeros((1, 3, 4, 4), dtype=xp.int64))
    with pytest.raises(ValueError, match="'kernel_size' must be a positive int"):
        Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match="'padding' must be a non-negative int"):
        Conv2d(3, 4, 3, padding=-1)
    with pytest.raises(ValueError, match="MaxPool2d: 'x' must have shape"):
        MaxPool2d(2)(rng.normal((4, 4)))
    with pytest.raises(ValueError, match="BatchNorm2d: 'x' must have shape"):
        BatchNorm2d(3)(rng.normal((2, 4, 3, 3)))


def test_make_glyphs_is_deterministic_and_balanced():
    x, y = make_glyphs(400, size=20, seed=3)
    x2, _ = make_glyphs(400, size=20, seed=3)
    assert x.shape == (400, 1, 20, 20) and x.dtype == xp.float32 and y.dtype == xp.int64
    np.testing.assert_array_equal(to_numpy(x), to_numpy(x2))
    counts = np.bincount(to_numpy(y), minlength=len(GLYPHS))
    assert counts.min() > 30                       # every class present
    x3, _ = make_glyphs(400, size=20, seed=4)
    assert not np.array_equal(to_numpy(x), to_numpy(x3))
    xc, _ = make_glyphs(5, size=16, channels=3, n_classes=4, seed=0)
    assert xc.shape == (5, 3, 16, 16)


def test_make_glyphs_distortion_theta():
    # a noise- and clutter-free distorted glyph, seen through theta, is the canonical glyph moved:
    # its centre of mass lands at theta's translation
    x, y, theta = make_glyphs(64, size=32, clutter=0, noise=0.0, distort=True, n_classes=3, seed=1,
                              return_theta=True)
    assert theta.shape == (64, 2, 3)
    img = to_numpy(x)[:, 0]
    centres = (2 * np.arange(32) + 1) / 32 - 1
    mass = img.sum(axis=(1, 2))
    cx = (img * centres[None, None, :]).sum(axis=(1, 2)) / mass
    cy = (img * centres[None, :, None]).sum(axis=(1, 2)) / mass
    t = to_numpy(theta)
    plus = to_numpy(y) == 0                        # the plus is symmetric about its centre
    assert np.abs(cx[plus] - t[plus, 0, 2]).max() < 0.05
    assert np.abs(cy[plus] - t[plus, 1, 2]).max() < 0.05
    with pytest.raises(ValueError, match="'n_classes' must be an int in"):
        make_glyphs(4, n_classes=9)
