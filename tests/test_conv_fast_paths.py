"""The fast convolution, pooling and BatchNorm2d paths against their plain references, in float64.

The references below are the obviously-correct versions the library used before it was tuned
for speed: im2col / col2im with one product per image for the convolutions, im2col + a one-hot
argmax for max pooling, im2col sums for average pooling, and the textbook BatchNorm formulas.
Every fast path must give the same outputs *and* gradients (dx, dweight, dbias, running
statistics) to ~1e-12, over strides, paddings, dilations, groups, odd and non-square sizes,
B = 1, and with the batch cut into many chunks.
"""
import numpy as np
import pytest

from npattention.backend import to_numpy, xp
from npattention.vision import layers
from npattention.vision.layers import (
    AvgPool2d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    MaxPool2d,
    _Windows,
    col2im,
    conv2d_backward,
    conv2d_forward,
    im2col,
)

TOL = 1e-12


def close(a, b, tol=TOL):
    a, b = to_numpy(a), to_numpy(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
    assert float(np.abs(a - b).max() if a.size else 0.0) <= tol * scale


# ---------------------------------------------------------------- the plain references
def conv2d_forward_reference(x, weight, bias, stride, padding, dilation, groups):
    """im2col, then one product per image and group (the original implementation)."""
    O, Cg, kh, kw = weight.shape
    G = groups
    cols = im2col(x, (kh, kw), stride, padding, dilation)           # (B, C, kh, kw, Ho, Wo)
    B, Ho, Wo = x.shape[0], cols.shape[-2], cols.shape[-1]
    cols2 = cols.reshape(B, G, Cg * kh * kw, Ho * Wo)
    out = (weight.reshape(G, O // G, -1) @ cols2).reshape(B, O, Ho * Wo)
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(B, O, Ho, Wo), (x.shape, cols2, weight, bias is not None, stride, padding, dilation, G)


def conv2d_backward_reference(grad_output, cache):
    x_shape, cols2, weight, has_bias, stride, padding, dilation, G = cache
    O, Cg, kh, kw = weight.shape
    B, _, Ho, Wo = grad_output.shape
    g = grad_output.reshape(B, G, O // G, Ho * Wo)
    dweight = (g @ xp.swapaxes(cols2, -1, -2)).sum(axis=0).reshape(weight.shape)
    dbias = grad_output.sum(axis=(0, 2, 3)) if has_bias else None
    dcols = xp.swapaxes(weight.reshape(G, O // G, -1), -1, -2) @ g
    dx = col2im(dcols.reshape(B, G * Cg, kh, kw, Ho, Wo), x_shape, (kh, kw), stride, padding, dilation)
    return dx, dweight, dbias


def maxpool_reference(x, kernel, stride, padding, grad_output=None):
    """im2col with -inf padding, the max, and the one-hot argmax routed back by col2im."""
    B, C = x.shape[:2]
    kh, kw = kernel
    cols = im2col(x, kernel, stride, padding, pad_value=-xp.inf)
    Ho, Wo = cols.shape[-2:]
    windows = cols.reshape(B, C, kh * kw, Ho, Wo)
    out = windows.max(axis=2)
    if grad_output is None:
        return out
    idx = xp.argmax(windows, axis=2)[:, :, None]
    is_max = xp.arange(kh * kw).reshape(1, 1, -1, 1, 1) == idx
    dcols = (is_max * grad_output[:, :, None]).reshape(B, C, kh, kw, Ho, Wo)
    return out, col2im(dcols, x.shape, kernel, stride, padding)


def avgpool_reference(x, kernel, stride, padding, count_include_pad, grad_output):
    B, C, H, W = x.shape
    (kh, kw), (ph, pw) = kernel, padding
    cols = im2col(x, kernel, stride, padding)
    if count_include_pad or not (ph or pw):
        divisor = float(kh * kw)
    else:
        ones = xp.ones((1, 1, H, W), dtype=x.dtype)
        divisor = im2col(ones, kernel, stride, padding).sum(axis=(2, 3))[0, 0]
    out = cols.sum(axis=(2, 3)) / divisor
    Ho, Wo = out.shape[-2:]
    dcols = xp.broadcast_to((grad_output / divisor)[:, :, None, None], (B, C, kh, kw, Ho, Wo))
    return out, col2im(dcols, x.shape, kernel, stride, padding)


def batchnorm_reference(x, gamma, beta, eps, grad_output, mean=None, var=None):
    """Train mode (batch statistics) when ``mean`` is None, else the given running statistics."""
    batch = mean is None
    if batch:
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = (x - mean[:, None, None]) * inv_std[:, None, None]
    y = gamma[:, None, None] * xhat + beta[:, None, None]
    g = grad_output
    dgamma, dbeta = (g * xhat).sum(axis=(0, 2, 3)), g.sum(axis=(0, 2, 3))
    dxhat = g * gamma[:, None, None]
    if not batch:
        return y, dxhat * inv_std[:, None, None], dgamma, dbeta
    mean_d = dxhat.mean(axis=(0, 2, 3), keepdims=True)
    mean_dx = (dxhat * xhat).mean(axis=(0, 2, 3), keepdims=True)
    return y, inv_std[:, None, None] * (dxhat - mean_d - xhat * mean_dx), dgamma, dbeta


@pytest.fixture(params=["default", "small", "large"])
def chunk(request, monkeypatch):
    """Run each test with the default sizes, with tiny window chunks and one product per image
    (``small``), and with one chunk and one product for the whole batch (``large``)."""
    if request.param == "small":
        monkeypatch.setattr(layers, "_CHUNK", 64)
        monkeypatch.setattr(layers, "_GEMM_COLUMNS", 1)
    elif request.param == "large":
        monkeypatch.setattr(layers, "_CHUNK", 1 << 40)
        monkeypatch.setattr(layers, "_GEMM_COLUMNS", 1 << 40)
    return request.param


# ---------------------------------------------------------------- convolution
CONV_CASES = [
    # B, C, O, H, W, kernel, stride, padding, dilation, groups
    (2, 3, 4, 7, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),          # 3x3 same
    (1, 4, 6, 5, 9, (3, 2), (2, 1), (1, 2), (1, 2), 2),          # non-square everything, groups 2, B = 1
    (2, 4, 4, 6, 5, (5, 5), (1, 1), (4, 4), (2, 2), 4),          # depthwise, dilated
    (3, 6, 6, 8, 7, (3, 3), (2, 2), (1, 1), (1, 1), 6),          # depthwise, stride 2, odd width
    (2, 3, 3, 6, 6, (7, 7), (1, 1), (9, 9), (3, 3), 3),          # MogaNet's 7x7 dilation-3 depthwise
    (2, 4, 4, 9, 9, (3, 3), (3, 2), (0, 1), (2, 1), 4),          # depthwise, stride 3 x 2
    (2, 5, 7, 5, 5, (1, 1), (1, 1), (0, 0), (1, 1), 1),          # pointwise: no im2col
    (2, 4, 6, 5, 5, (1, 1), (1, 1), (0, 0), (1, 1), 2),          # pointwise, grouped
    (2, 4, 4, 5, 5, (1, 1), (2, 2), (0, 0), (1, 1), 1),          # 1x1 stride 2 (im2col)
    (2, 2, 3, 4, 4, (1, 1), (1, 1), (1, 1), (1, 1), 1),          # 1x1 with padding (im2col)
    (2, 4, 8, 6, 7, (3, 3), (1, 1), (1, 1), (1, 1), 4),          # groups 4, two outputs per group
    (2, 3, 6, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 3),          # one input channel per group, O = 2 C
    (1, 3, 3, 1, 11, (1, 3), (1, 2), (0, 1), (1, 2), 1),         # height 1 (Conv1d)
    (2, 1, 1, 1, 9, (1, 5), (1, 1), (0, 2), (1, 1), 1),          # ECA's 1 -> 1 Conv1d (depthwise path)
    (5, 3, 5, 9, 9, (3, 3), (1, 1), (1, 1), (1, 1), 1),          # several images
    (1, 2, 2, 3, 3, (3, 3), (1, 1), (0, 0), (1, 1), 2),          # a single output pixel, depthwise
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_fast_path_matches_reference(rng, chunk, case, bias):
    B, C, O, H, W, kernel, stride, padding, dilation, G = case
    x = rng.normal((B, C, H, W), dtype=xp.float64)
    w = rng.normal((O, C // G) + kernel, dtype=xp.float64)
    b = rng.normal((O,), dtype=xp.float64) if bias else None
    ref, ref_cache = conv2d_forward_reference(x, w, b, stride, padding, dilation, G)
    out, cache = conv2d_forward(x, w, b, stride, padding, dilation, G)
    close(out, ref)
    g = rng.normal(ref.shape, dtype=xp.float64)
    for got, want in zip(conv2d_backward(g, cache), conv2d_backward_reference(g, ref_cache)):
        if want is None:
            assert got is None
        else:
            close(got, want)


def test_conv_modules_match_reference_on_non_contiguous_input(rng, chunk):
    # MultiOrderDWConv feeds channel slices of a map: a non-contiguous x
    big = rng.normal((3, 8, 6, 7), dtype=xp.float64)
    x = big[:, 2:6]
    for conv in (Conv2d(4, 4, 3, padding=2, dilation=2, groups=4).double(), Conv2d(4, 6, 3, padding=1).double(),
                 Conv2d(4, 5, 1).double()):
        ref, ref_cache = conv2d_forward_reference(xp.ascontiguousarray(x), conv.weight.data, conv.bias.data,
                                                  conv.stride, conv.padding, conv.dilation, conv.groups)
        close(conv(x), ref)
        g = rng.normal(ref.shape, dtype=xp.float64)
        dx, dw, db = conv2d_backward_reference(g, ref_cache)
        close(conv.backward(g), dx)
        close(conv.weight.grad, dw)
        close(conv.bias.grad, db)


@pytest.mark.parametrize("groups", [1, 4])
def test_conv1d_fast_path_matches_reference(rng, chunk, groups):
    conv = Conv1d(4, 4, 5, stride=1, padding=2, groups=groups).double()
    x = rng.normal((3, 4, 13), dtype=xp.float64)
    ref, ref_cache = conv2d_forward_reference(x[:, :, None], conv.weight.data[:, :, None], conv.bias.data,
                                              (1, 1), (0, 2), (1, 1), groups)
    close(conv(x), ref[:, :, 0])
    g = rng.normal(ref.shape, dtype=xp.float64)
    dx, dw, db = conv2d_backward_reference(g, ref_cache)
    close(conv.backward(g[:, :, 0]), dx[:, :, 0])
    close(conv.weight.grad, dw[:, :, 0])
    close(conv.bias.grad, db)


@pytest.mark.parametrize("wdtype, xdtype", [(xp.float32, xp.float32), (xp.float64, xp.float32),
                                             (xp.float32, xp.float64)])
@pytest.mark.parametrize("groups", [1, 3])
def test_conv2d_dtypes_follow_the_matmul(rng, wdtype, xdtype, groups):
    # out and dx take the promoted dtype of weight and x (as W @ cols does), on every path
    x = rng.normal((2, 3, 5, 5), dtype=xdtype)
    w = rng.normal((3, 3 // groups, 3, 3), dtype=wdtype)
    ref, ref_cache = conv2d_forward_reference(x, w, None, (1, 1), (1, 1), (1, 1), groups)
    out, cache = conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), groups)
    assert out.dtype == ref.dtype
    g = rng.normal(ref.shape, dtype=xdtype)
    for got, want in zip(conv2d_backward(g, cache)[:2], conv2d_backward_reference(g, ref_cache)[:2]):
        assert got.dtype == want.dtype
        close(got, want, tol=1e-5)


# ---------------------------------------------------------------- the windows themselves
@pytest.mark.parametrize("hw, kernel, stride, padding, dilation", [
    ((7, 6), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((9, 8), (3, 2), (2, 3), (1, 0), (1, 2)),
    ((5, 5), (2, 2), (2, 2), (0, 0), (1, 1)),
    ((8, 11), (5, 3), (3, 1), (2, 1), (1, 3)),
])
def test_windows_are_the_im2col_columns(rng, hw, kernel, stride, padding, dilation):
    x = rng.normal((2, 3) + hw, dtype=xp.float64)
    cols = im2col(x, kernel, stride, padding, dilation)              # (2, 3, kh, kw, Ho, Wo)
    win = _Windows(hw, kernel, stride, padding, dilation)
    planes = win.pad(x.reshape(1, 6, *hw))
    for i, j in win.offsets():
        frame = win.empty(1, 6, x.dtype)
        win.valid(frame)[...] = win.window(planes, i, j)
        close(win.crop(frame).reshape(cols[:, :, i, j].shape), cols[:, :, i, j], tol=0)
    # pad / unpad are adjoint: <pad(x), p> = <x, unpad(p)>
    p = rng.normal(planes.shape, dtype=xp.float64)
    back = xp.empty((1, 6) + hw, dtype=xp.float64)
    win.unpad(p, back)
    lhs, rhs = float(xp.sum(planes * p)), float(xp.sum(x.reshape(1, 6, *hw) * back))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))


# ---------------------------------------------------------------- pooling
POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0),
    ((2, 3, 7, 9), 2, None, 0),            # odd sizes: the last row / column is never pooled
    ((2, 2, 7, 5), 3, 2, 1),
    ((1, 1, 5, 5), 3, 1, 1),
    ((2, 3, 6, 6), (3, 2), (1, 2), (1, 1)),
    ((3, 2, 9, 9), 3, 3, 0),
    ((2, 2, 5, 5), 2, 3, 1),               # stride > kernel: pixels in no window
    ((2, 4, 4, 4), 4, None, 2),
    ((1, 2, 3, 3), 2, 1, 0),
]


@pytest.mark.parametrize("shape, kernel, stride, padding", POOL_CASES)
def test_maxpool_fast_path_matches_reference(rng, chunk, shape, kernel, stride, padding):
    x = rng.normal(shape, dtype=xp.float64)
    x[0, 0, 0, :2] = x[0, 0, 0, 0] + 10.0      # a tie in the first window(s): the first one wins
    x[-1, -1] = 0.5                            # a whole map of ties
    pool = MaxPool2d(kernel, stride, padding)
    ref = maxpool_reference(x, pool.kernel_size, pool.stride, pool.padding)
    close(pool(x), ref, tol=0)
    g = rng.normal(ref.shape, dtype=xp.float64)
    _, dref = maxpool_reference(x, pool.kernel_size, pool.stride, pool.padding, g)
    close(pool.backward(g), dref)


def test_maxpool_propagates_nan():
    x = xp.zeros((1, 1, 4, 4), dtype=xp.float32)
    x[0, 0, 1, 1] = xp.nan
    out = to_numpy(MaxPool2d(2)(x))
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1, 1])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape, kernel, stride, padding", POOL_CASES)
def test_avgpool_fast_path_matches_reference(rng, chunk, shape, kernel, stride, padding, count_include_pad):
    x = rng.normal(shape, dtype=xp.float64)
    pool = AvgPool2d(kernel, stride, padding, count_include_pad=count_include_pad)
    out = pool(x)
    g = rng.normal(out.shape, dtype=xp.float64)
    ref, dref = avgpool_reference(x, pool.kernel_size, pool.stride, pool.padding, count_include_pad, g)
    close(out, ref)
    close(pool.backward(g), dref)


def test_pools_keep_float32(rng):
    x = rng.normal((2, 3, 6, 6))
    for pool in (MaxPool2d(2), MaxPool2d(3, 2, 1), AvgPool2d(3, 1, 1), AvgPool2d(2)):
        out = pool(x)
        assert out.dtype == xp.float32 and pool.backward(xp.ones_like(out)).dtype == xp.float32


# ---------------------------------------------------------------- BatchNorm2d
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (1, 2, 3, 7), (2, 5, 1, 1), (3, 2, 4, 4)])
def test_batchnorm_train_matches_reference(rng, shape):
    C = shape[1]
    bn = BatchNorm2d(C, momentum=0.3).double()
    bn.weight.data = rng.normal((C,), dtype=xp.float64)
    bn.bias.data = rng.normal((C,), dtype=xp.float64)
    x = rng.normal(shape, 3.0, 2.0, dtype=xp.float64)
    g = rng.normal(shape, dtype=xp.float64)
    y = bn(x)
    dx = bn.backward(g)
    ref_y, ref_dx, ref_dgamma, ref_dbeta = batchnorm_reference(x, bn.weight.data, bn.bias.data, bn.eps, g)
    close(y, ref_y)
    close(dx, ref_dx)
    close(bn.weight.grad, ref_dgamma)
    close(bn.bias.grad, ref_dbeta)
    n = shape[0] * shape[2] * shape[3]
    xn = to_numpy(x)
    np.testing.assert_allclose(to_numpy(bn.running_mean), 0.3 * xn.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(bn.running_var), 0.7 + 0.3 * xn.var(axis=(0, 2, 3)) * n / (n - 1), rtol=1e-6)


def test_batchnorm_eval_and_no_affine_match_reference(rng):
    x = rng.normal((3, 2, 4, 5), dtype=xp.float64)
    g = rng.normal(x.shape, dtype=xp.float64)
    bn = BatchNorm2d(2).double()
    bn.weight.data = rng.normal((2,), dtype=xp.float64)
    bn.running_mean = rng.normal((2,), dtype=xp.float64)
    bn.running_var = rng.uniform((2,), 0.5, 2.0, dtype=xp.float64)
    bn.eval()
    y, dx = bn(x), bn.backward(g)
    ref_y, ref_dx, ref_dgamma, _ = batchnorm_reference(x, bn.weight.data, bn.bias.data, bn.eps, g,
                                                       bn.running_mean, bn.running_var)
    close(y, ref_y)
    close(dx, ref_dx)
    close(bn.weight.grad, ref_dgamma)
    plain = BatchNorm2d(2, affine=False).double()
    y, dx = plain(x), plain.backward(g)
    ones, zeros = xp.ones(2, dtype=xp.float64), xp.zeros(2, dtype=xp.float64)
    ref_y, ref_dx, _, _ = batchnorm_reference(x, ones, zeros, plain.eps, g)
    close(y, ref_y)
    close(dx, ref_dx)


def test_batchnorm_dtypes(rng):
    x = rng.normal((2, 3, 4, 4))
    bn = BatchNorm2d(3)
    y = bn(x)
    assert y.dtype == xp.float32 and bn.backward(xp.ones_like(y)).dtype == xp.float32
    bn64 = BatchNorm2d(3).double()                   # float64 parameters, float32 input: float64 out
    assert bn64(x).dtype == xp.float64


# ---------------------------------------------------------------- BasicConv2d's ReLU
def test_basic_conv_relu_matches_where_reference(rng):
    from npattention.vision.layers import BasicConv2d
    m = BasicConv2d(2, 3, 3, padding=1).double()
    x = rng.normal((2, 2, 5, 5), dtype=xp.float64)
    x[0, 0, 2, 2] = xp.nan                                  # NaN -> 0, as xp.where(z > 0, z, 0) gives
    z, _ = conv2d_forward(x, m.conv.weight.data, m.conv.bias.data, (1, 1), (1, 1))
    out = to_numpy(m(x))
    ref = to_numpy(xp.where(z > 0, z, 0.0))
    np.testing.assert_array_equal(out, ref)
    assert np.isnan(to_numpy(z)).any() and not np.isnan(out).any()


def test_images_per_product_divides_the_batch(monkeypatch):
    monkeypatch.setattr(layers, "_GEMM_COLUMNS", 1024)
    assert layers._images_per_product(32, 1024) == 1          # large images: one product each
    assert layers._images_per_product(32, 128) == 8           # 8 images side by side: 1024 columns
    assert layers._images_per_product(30, 128) == 6           # the largest divisor of B that fits
    assert layers._images_per_product(31, 128) == 1           # a prime batch: one product per image
    assert layers._images_per_product(4, 10) == 4             # never more than the batch
