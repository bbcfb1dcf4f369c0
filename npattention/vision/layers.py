"""Convolutional substrate on ``(B, C, H, W)`` feature maps, each with a hand-written backward.

Convolution is computed as one matrix product with **im2col**: every output pixel's
receptive field is copied into a column, so that

.. math:: \\mathrm{out}[b, o, p] = \\sum_{k} W_2[o, k] \\, \\mathrm{cols}[b, k, p] + b_o,
   \\qquad k = (c, i, j),\\; p = (h, w).

The backward is the same product transposed, followed by **col2im**, which adds every
column back onto the pixels it was copied from (docs/vision.md derives it).  The copy
loops over the ``kh * kw`` kernel offsets only -- never over batch items or pixels.
"""
import math

from ..backend import get_rng, xp
from ..module import Module, Parameter, Sequential
from ..validate import check_array, check_positive_int


# ---------------------------------------------------------------- argument helpers
def _pair(value, name, where, minimum=1):
    """``3`` -> ``(3, 3)``; ``(3, 5)`` stays; anything else -> ValueError naming ``name``."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair)):
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{where}: {name!r} must be a {kind} int or a pair of them, got {value!r}")
    return tuple(pair)


def conv_output_size(size, kernel, stride, padding, dilation):
    """``floor((size + 2 p - d (k - 1) - 1) / s) + 1``, as in PyTorch's Conv2d docs."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_map(x, where, channels=None, name="x"):
    """``x`` must be a floating ``(B, C, H, W)`` array (with ``C == channels`` if given)."""
    check_array(x, name, where, shape=("B", "C" if channels is None else channels, "H", "W"))
    return x.shape


# ---------------------------------------------------------------- im2col / col2im
def im2col(x, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1), pad_value=0.0):
    """``(B, C, H, W)`` -> columns ``(B, C, kh, kw, Ho, Wo)``.

    ``cols[b, c, i, j, h, w] = x_pad[b, c, h*sh + i*dh, w*sw + j*dw]``.  One strided slice
    per kernel offset ``(i, j)``: the loop runs ``kh * kw`` times, whatever the image size.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    B, C, H, W = x.shape
    Ho = conv_output_size(H, kh, sh, ph, dh)
    Wo = conv_output_size(W, kw, sw, pw, dw)
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    cols = xp.empty((B, C, kh, kw, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            cols[:, :, i, j] = x[:, :, r:r + sh * (Ho - 1) + 1:sh, c:c + sw * (Wo - 1) + 1:sw]
    return cols


def col2im(cols, x_shape, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """The adjoint of :func:`im2col`: add each column entry back onto its source pixel.

    A pixel that lies in several receptive fields receives the sum of their gradients.
    Within one offset ``(i, j)`` the strided slice visits distinct pixels, so ``+=`` on the
    slice is exact.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    B, C, H, W = x_shape
    Ho, Wo = cols.shape[-2:]
    dx = xp.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            dx[:, :, r:r + sh * (Ho - 1) + 1:sh, c:c + sw * (Wo - 1) + 1:sw] += cols[:, :, i, j]
    return dx[:, :, ph:ph + H, pw:pw + W]


# ---------------------------------------------------------------- functional conv pair
def conv2d_forward(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """``out = conv(x, weight) + bias`` via im2col; returns ``(out, cache)``.

    ``x``: ``(B, C, H, W)``, ``weight``: ``(O, C / groups, kh, kw)``, ``bias``: ``(O,)`` or
    None, ``out``: ``(B, O, Ho, Wo)``.  With ``groups = G`` the channels are cut into ``G``
    groups; output group ``g`` (``O / G`` channels) sees only input group ``g``
    (``C / G`` channels).  ``groups = C = O`` is a **depthwise** conv: one filter per channel.
    Each group is one matrix product, all groups at once as a batched ``matmul``::

        out[b, g] = W[g] @ cols[b, g]      W[g]: (O/G, K),  cols[b, g]: (K, P),  K = (C/G) kh kw

    cache: ``(x.shape, cols (B, G, K, P), weight, has_bias, stride, padding, dilation, groups)``.
    """
    O, Cg, kh, kw = weight.shape
    G = groups
    cols = im2col(x, (kh, kw), stride, padding, dilation)          # (B, C, kh, kw, Ho, Wo)
    B, Ho, Wo = x.shape[0], cols.shape[-2], cols.shape[-1]
    cols2 = cols.reshape(B, G, Cg * kh * kw, Ho * Wo)               # (B, G, K, P): channels c = g Cg + c'
    out = weight.reshape(G, O // G, -1) @ cols2                     # (B, G, O/G, P)
    out = out.reshape(B, O, Ho * Wo)
    if bias is not None:
        out = out + bias[:, None]
    cache = (x.shape, cols2, weight, bias is not None, stride, padding, dilation, G)
    return out.reshape(B, O, Ho, Wo), cache


def conv2d_backward(grad_output, cache):
    """Gradients ``(dx, dweight, dbias)`` of :func:`conv2d_forward` (``dbias`` None without bias)."""
    x_shape, cols2, weight, has_bias, stride, padding, dilation, G = cache
    O, Cg, kh, kw = weight.shape
    B, _, Ho, Wo = grad_output.shape
    g = grad_output.reshape(B, G, O // G, Ho * Wo)                  # (B, G, O/G, P)
    # out[b, g] = W[g] @ cols[b, g]  =>  dW[g] = sum_b g[b, g] @ cols[b, g]^T
    dweight = (g @ xp.swapaxes(cols2, -1, -2)).sum(axis=0).reshape(weight.shape)
    dbias = grad_output.sum(axis=(0, 2, 3)) if has_bias else None
    # dcols[b, g] = W[g]^T @ g[b, g]; then scatter the columns back onto the pixels (col2im)
    dcols = xp.swapaxes(weight.reshape(G, O // G, -1), -1, -2) @ g  # (B, G, K, P)
    dx = col2im(dcols.reshape(B, G * Cg, kh, kw, Ho, Wo), x_shape, (kh, kw), stride, padding, dilation)
    return dx, dweight, dbias


# ---------------------------------------------------------------- convolution modules
def _check_groups(groups, in_channels, out_channels, where):
    groups = check_positive_int(groups, "groups", where)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{where}: 'groups' ({groups}) must divide both in_channels ({in_channels}) "
                         f"and out_channels ({out_channels})")
    return groups


class Conv2d(Module):
    """2-D convolution (cross-correlation, as in PyTorch), optionally grouped or dilated.

    ``x``: ``(B, in_channels, H, W)`` -> ``(B, out_channels, Ho, Wo)`` with
    ``Ho = floor((H + 2 p - d (kh - 1) - 1) / s) + 1`` (same for ``Wo``).
    ``weight``: ``(out_channels, in_channels / groups, kh, kw)``, ``bias``: ``(out_channels,)``,
    both from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, ``fan_in = (in_channels / groups) kh kw``
    (PyTorch's default init).

    ``groups``: output channels ``[g O/G, (g+1) O/G)`` see only input channels
    ``[g C/G, (g+1) C/G)``; ``groups = in_channels`` (with ``out_channels = in_channels``)
    is a depthwise conv, as in ``torch.nn.Conv2d``.  ``dilation d`` spreads the kernel taps
    ``d`` pixels apart (a ``k x k`` kernel covers ``d (k - 1) + 1`` pixels).
    cache: the ``conv2d_forward`` cache (``(x.shape, cols, weight, has_bias, stride, padding, dilation,
    groups)``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 groups=1):
        where = "Conv2d"
        self.in_channels = check_positive_int(in_channels, "in_channels", where)
        self.out_channels = check_positive_int(out_channels, "out_channels", where)
        self.kernel_size = _pair(kernel_size, "kernel_size", where)
        self.stride = _pair(stride, "stride", where)
        self.padding = _pair(padding, "padding", where, minimum=0)
        self.dilation = _pair(dilation, "dilation", where)
        self.groups = _check_groups(groups, in_channels, out_channels, where)
        cg = in_channels // self.groups
        bound = 1.0 / math.sqrt(cg * self.kernel_size[0] * self.kernel_size[1])
        rng = get_rng()
        self.weight = Parameter(rng.uniform((out_channels, cg) + self.kernel_size, -bound, bound))
        self.bias = Parameter(rng.uniform((out_channels,), -bound, bound)) if bias else None

    def forward(self, x):
        _, _, H, W = _check_map(x, type(self).__name__, self.in_channels)
        self._check_fits(H, W)
        out, self.cache = conv2d_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                         self.stride, self.padding, self.dilation, self.groups)
        return out

    def _check_fits(self, H, W):
        (kh, kw), (ph, pw), (dh, dw) = self.kernel_size, self.padding, self.dilation
        if H + 2 * ph < dh * (kh - 1) + 1 or W + 2 * pw < dw * (kw - 1) + 1:
            raise ValueError(
                f"{type(self).__name__}: input of size {H}x{W} (padded {H + 2 * ph}x{W + 2 * pw}) is smaller "
                f"than the dilated kernel {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}"
            )

    def backward(self, grad_output):
        dx, dweight, dbias = conv2d_backward(grad_output, self.cache)
        self.weight.grad += dweight
        if self.bias is not None:
            self.bias.grad += dbias
        return dx

    def extra_repr(self):
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}{groups}, bias={self.bias is not None}")


class Conv1d(Module):
    """1-D convolution: ``x`` ``(B, in_channels, L)`` -> ``(B, out_channels, Lo)``.

    ``weight``: ``(out_channels, in_channels / groups, k)`` as in PyTorch (``groups`` as in
    :class:`Conv2d`).  Computed as a
    :class:`Conv2d` on an image of height 1 (kernel ``(1, k)``, padding ``(0, p)``).
    cache: the ``conv2d_forward`` cache (``(x.shape, cols, weight, has_bias, stride, padding, dilation,
    groups)``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                 groups=1):
        where = "Conv1d"
        self.in_channels = check_positive_int(in_channels, "in_channels", where)
        self.out_channels = check_positive_int(out_channels, "out_channels", where)
        self.kernel_size = check_positive_int(kernel_size, "kernel_size", where)
        self.stride = check_positive_int(stride, "stride", where)
        self.dilation = check_positive_int(dilation, "dilation", where)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"{where}: 'padding' must be a non-negative int, got {padding!r}")
        self.padding = padding
        self.groups = _check_groups(groups, in_channels, out_channels, where)
        cg = in_channels // self.groups
        bound = 1.0 / math.sqrt(cg * kernel_size)
        rng = get_rng()
        self.weight = Parameter(rng.uniform((out_channels, cg, kernel_size), -bound, bound))
        self.bias = Parameter(rng.uniform((out_channels,), -bound, bound)) if bias else None

    def forward(self, x):
        check_array(x, "x", "Conv1d", shape=("B", self.in_channels, "L"))
        L = x.shape[2]
        if L + 2 * self.padding < self.dilation * (self.kernel_size - 1) + 1:
            raise ValueError(f"Conv1d: input length {L} (padded {L + 2 * self.padding}) is shorter than "
                             f"the dilated kernel {self.dilation * (self.kernel_size - 1) + 1}")
        out, self.cache = conv2d_forward(
            x[:, :, None, :], self.weight.data[:, :, None, :], None if self.bias is None else self.bias.data,
            (1, self.stride), (0, self.padding), (1, self.dilation), self.groups)
        return out[:, :, 0, :]

    def backward(self, grad_output):
        dx, dweight, dbias = conv2d_backward(grad_output[:, :, None, :], self.cache)
        self.weight.grad += dweight[:, :, 0, :]
        if self.bias is not None:
            self.bias.grad += dbias
        return dx[:, :, 0, :]

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}")


# ---------------------------------------------------------------- pooling
def _onehot_argmax(windows, axis):
    """Boolean array, True at the (first) maximum of ``windows`` along ``axis``."""
    idx = xp.expand_dims(xp.argmax(windows, axis=axis), axis)
    shape = [1] * windows.ndim
    shape[axis] = windows.shape[axis]
    return xp.arange(windows.shape[axis]).reshape(shape) == idx


class _WindowPool2d(Module):
    """Shared set-up of the window pools: ``kernel_size``, ``stride`` (default: the kernel
    size) and ``padding`` (at most half the kernel, as in PyTorch).

    cache: see the subclasses (the input shape, and the one-hot argmax or the divisor).
    """

    gradcheck_exempt = "abstract base of MaxPool2d / AvgPool2d (each is registered)"

    def __init__(self, kernel_size, stride=None, padding=0):
        where = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", where)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", where)
        self.padding = _pair(padding, "padding", where, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{where}: 'padding' must be at most half the kernel size "
                             f"{self.kernel_size}, got {self.padding}")

    def _check_input(self, x):
        """``(B, C, H, W)`` of ``x``, refusing a (padded) input smaller than the kernel."""
        where = type(self).__name__
        B, C, H, W = _check_map(x, where)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if H + 2 * ph < kh or W + 2 * pw < kw:
            raise ValueError(f"{where}: input {H}x{W} is smaller than the kernel {kh}x{kw}")
        return B, C, H, W

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_WindowPool2d):
    """Max over each ``kernel_size`` window, moved by ``stride`` (default: ``kernel_size``).

    Padding adds ``-inf`` borders (never chosen).  Backward routes each output gradient
    to the one input that was the window's maximum (the first one on ties), adding up
    where windows overlap.
    cache: ``(x.shape, onehot)``, the one-hot argmax of each window.
    """

    def forward(self, x):
        B, C, H, W = self._check_input(x)
        kh, kw = self.kernel_size
        cols = im2col(x, self.kernel_size, self.stride, self.padding, pad_value=-xp.inf)
        Ho, Wo = cols.shape[-2:]
        windows = cols.reshape(B, C, kh * kw, Ho, Wo)
        self.cache = (x.shape, _onehot_argmax(windows, axis=2))
        return windows.max(axis=2)

    def backward(self, grad_output):
        x_shape, is_max = self.cache
        B, C, Ho, Wo = grad_output.shape
        kh, kw = self.kernel_size
        dcols = is_max * grad_output[:, :, None]                     # (B, C, kh*kw, Ho, Wo)
        return col2im(dcols.reshape(B, C, kh, kw, Ho, Wo), x_shape, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_WindowPool2d):
    """Mean over each ``kernel_size`` window, moved by ``stride`` (default: ``kernel_size``).

    As ``torch.nn.AvgPool2d``: ``padding`` adds zero borders; with
    ``count_include_pad=True`` (default) every window is divided by ``kh * kw``, with
    ``False`` by the number of real (non-padding) pixels in it.  ``ceil_mode`` is not
    implemented (the output size rounds down).
    Backward: each output gradient, divided by its window's divisor, is spread over the
    window's pixels (``col2im`` adds where windows overlap).  cache: ``(x.shape, divisor)``.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        if not isinstance(count_include_pad, bool):
            raise TypeError(f"AvgPool2d: 'count_include_pad' must be True or False, got {count_include_pad!r}")
        self.count_include_pad = count_include_pad

    def forward(self, x):
        B, C, H, W = self._check_input(x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        cols = im2col(x, self.kernel_size, self.stride, self.padding)       # (B, C, kh, kw, Ho, Wo)
        if self.count_include_pad or not (ph or pw):
            divisor = float(kh * kw)
        else:  # real pixels per window: the same windows over an image of ones
            ones = xp.ones((1, 1, H, W), dtype=x.dtype)
            divisor = im2col(ones, self.kernel_size, self.stride, self.padding).sum(axis=(2, 3))[0, 0]  # (Ho, Wo)
        self.cache = (x.shape, divisor)
        return cols.sum(axis=(2, 3)) / divisor

    def backward(self, grad_output):
        x_shape, divisor = self.cache
        B, C, Ho, Wo = grad_output.shape
        kh, kw = self.kernel_size
        # out = sum(window) / divisor: every pixel of the window gets grad / divisor
        g = grad_output / divisor
        dcols = xp.broadcast_to(g[:, :, None, None], (B, C, kh, kw, Ho, Wo))
        return col2im(dcols, x_shape, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")


class _AdaptivePool2d(Module):
    """Shared set-up: ``output_size`` ``(oh, ow)`` that must divide ``H`` and ``W``.

    cache: see the subclasses (the window size, and for max the one-hot argmax).
    """

    gradcheck_exempt = "abstract base of AdaptiveAvgPool2d / AdaptiveMaxPool2d"

    def __init__(self, output_size):
        self.output_size = _pair(output_size, "output_size", type(self).__name__)

    def _windows(self, x):
        """``(B, C, H, W)`` -> ``(B, C, oh, ow, kh * kw)`` non-overlapping windows."""
        B, C, H, W = _check_map(x, type(self).__name__)
        oh, ow = self.output_size
        if H % oh or W % ow:
            raise ValueError(
                f"{type(self).__name__}: output_size {self.output_size} must divide the input size {H}x{W} "
                f"(uneven adaptive windows are not implemented); use a size that divides it, e.g. 1"
            )
        kh, kw = H // oh, W // ow
        win = x.reshape(B, C, oh, kh, ow, kw).transpose(0, 1, 2, 4, 3, 5)
        return win.reshape(B, C, oh, ow, kh * kw), (kh, kw)

    @staticmethod
    def _unwindow(dwin, kh, kw):
        """Inverse of :meth:`_windows` for gradients: ``(B, C, oh, ow, kh*kw)`` -> ``(B, C, H, W)``."""
        B, C, oh, ow, _ = dwin.shape
        return dwin.reshape(B, C, oh, ow, kh, kw).transpose(0, 1, 2, 4, 3, 5).reshape(B, C, oh * kh, ow * kw)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Average over ``(H/oh) x (W/ow)`` windows; ``output_size=1`` is global average pooling.

    ``x``: ``(B, C, H, W)`` -> ``(B, C, oh, ow)``.  Backward: every input of a window gets
    ``grad / window_size``.
    cache: ``(kh, kw)``, the window size.
    """

    def forward(self, x):
        win, (kh, kw) = self._windows(x)
        self.cache = (kh, kw)
        return win.mean(axis=-1)

    def backward(self, grad_output):
        kh, kw = self.cache
        dwin = xp.broadcast_to(grad_output[..., None] / (kh * kw), grad_output.shape + (kh * kw,))
        return self._unwindow(dwin, kh, kw)


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """Maximum over ``(H/oh) x (W/ow)`` windows; ``output_size=1`` is global max pooling.

    Backward: each window's gradient goes to its (first) maximum.
    cache: ``(kh, kw, onehot)``: the window size and the one-hot argmax of each window.
    """

    def forward(self, x):
        win, (kh, kw) = self._windows(x)
        self.cache = (kh, kw, _onehot_argmax(win, axis=-1))
        return win.max(axis=-1)

    def backward(self, grad_output):
        kh, kw, is_max = self.cache
        return self._unwindow(is_max * grad_output[..., None], kh, kw)


# ---------------------------------------------------------------- normalisation, reshaping
class BatchNorm2d(Module):
    """Batch normalisation per channel over ``(B, H, W)``.

    Train: ``y = gamma * (x - mu) / sqrt(var + eps) + beta`` with the batch mean and the
    *biased* batch variance; the buffers ``running_mean`` / ``running_var`` move towards
    the batch mean and the *unbiased* variance with ``momentum`` (PyTorch's convention:
    ``running = (1 - momentum) * running + momentum * batch``).  Eval: the running
    statistics are used instead, so the layer is a fixed per-channel affine map.
    ``weight`` (gamma) starts at 1, ``bias`` (beta) at 0.

    As in ``torch.nn.BatchNorm2d``: ``affine=False`` drops gamma and beta (``weight`` and
    ``bias`` are None, ``y = xhat``); ``track_running_stats=False`` keeps no running
    statistics (no buffers) and normalises with the batch statistics in eval mode too.
    cache: ``(xhat, inv_std, batch_stats)`` (``batch_stats``: were the batch's statistics used, i.e. training
    mode?).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        where = "BatchNorm2d"
        self.num_features = check_positive_int(num_features, "num_features", where)
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"{where}: 'eps' must be a positive float, got {eps!r}")
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
            raise ValueError(f"{where}: 'momentum' must be a float in [0, 1], got {momentum!r}")
        for name, flag in (("affine", affine), ("track_running_stats", track_running_stats)):
            if not isinstance(flag, bool):
                raise TypeError(f"{where}: {name!r} must be True or False, got {flag!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(xp.ones(num_features, dtype=xp.float32)) if affine else None
        self.bias = Parameter(xp.zeros(num_features, dtype=xp.float32)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", xp.zeros(num_features, dtype=xp.float32))
            self.register_buffer("running_var", xp.ones(num_features, dtype=xp.float32))

    def forward(self, x):
        B, _, H, W = _check_map(x, "BatchNorm2d", self.num_features)
        batch_stats = self.training or not self.track_running_stats
        if batch_stats:
            n = B * H * W
            if n < 2:
                raise ValueError(f"BatchNorm2d: normalising with batch statistics needs more than one value per "
                                 f"channel, got input {x.shape}")
            mean = x.mean(axis=(0, 2, 3))
            var = x.var(axis=(0, 2, 3))
            if self.training and self.track_running_stats:
                m = self.momentum
                self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(self.running_mean.dtype)
                self.running_var = ((1 - m) * self.running_var + m * var * n / (n - 1)).astype(self.running_var.dtype)
        else:
            mean, var = self.running_mean.astype(x.dtype), self.running_var.astype(x.dtype)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        xhat = (x - mean[:, None, None]) * inv_std[:, None, None]
        self.cache = (xhat, inv_std, batch_stats)
        if not self.affine:
            return xhat
        return self.weight.data[:, None, None] * xhat + self.bias.data[:, None, None]

    def backward(self, grad_output):
        xhat, inv_std, batch_stats = self.cache
        g = grad_output
        if self.affine:
            self.weight.grad += (g * xhat).sum(axis=(0, 2, 3))
            self.bias.grad += g.sum(axis=(0, 2, 3))
            dxhat = g * self.weight.data[:, None, None]
        else:
            dxhat = g                                 # y = xhat
        if not batch_stats:  # running statistics are constants
            return dxhat * inv_std[:, None, None]
        # mean and var depend on x: dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        mean_d = dxhat.mean(axis=(0, 2, 3), keepdims=True)
        mean_dx = (dxhat * xhat).mean(axis=(0, 2, 3), keepdims=True)
        return inv_std[:, None, None] * (dxhat - mean_d - xhat * mean_dx)

    def extra_repr(self):
        extra = "".join(f", {k}=False" for k in ("affine", "track_running_stats") if not getattr(self, k))
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}{extra}"


class Flatten(Module):
    """Flatten axes ``start_dim..end_dim`` into one (default: all but the batch axis).

    cache: ``x.shape``.
    """

    def __init__(self, start_dim=1, end_dim=-1):
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        check_array(x, "x", "Flatten")
        nd = x.ndim
        s, e = self.start_dim % nd, self.end_dim % nd
        if s > e:
            raise ValueError(f"Flatten: start_dim {self.start_dim} comes after end_dim {self.end_dim} "
                             f"for an input of rank {nd}")
        self.cache = x.shape
        merged = 1
        for n in x.shape[s:e + 1]:
            merged *= n       # (not -1: an empty batch, B = 0, must reshape too)
        return x.reshape(x.shape[:s] + (merged,) + x.shape[e + 1:])

    def backward(self, grad_output):
        return grad_output.reshape(self.cache)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class BasicConv2d(Module):
    """``Conv2d`` (+ optional ``BatchNorm2d``) + ReLU: the unit the vision blocks are built from.

    Same arguments as :class:`Conv2d` plus ``batch_norm``; with batch norm the conv has no
    bias (the norm's ``beta`` plays its role), as in torchvision's Inception.
    cache: the ReLU mask ``z > 0`` (the convolution and the norm keep theirs).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, batch_norm=False):
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not batch_norm)
        self.bn = BatchNorm2d(out_channels) if batch_norm else None

    def forward(self, x):
        z = self.conv(x)
        if self.bn is not None:
            z = self.bn(z)
        self.cache = z > 0
        return xp.where(self.cache, z, 0.0).astype(z.dtype)

    def backward(self, grad_output):
        dz = grad_output * self.cache  # ReLU: pass the gradient where z > 0
        if self.bn is not None:
            dz = self.bn.backward(dz)
        return self.conv.backward(dz)


def downsample(in_channels, out_channels, stride):
    """ResNet's shortcut projection: 1x1 conv (stride, no bias) + BatchNorm2d."""
    return Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), BatchNorm2d(out_channels))
