"""Convolutional substrate on ``(B, C, H, W)`` feature maps, each with a hand-written backward.

Convolution is computed as one matrix product with **im2col**: every output pixel's
receptive field is copied into a column, so that

.. math:: \\mathrm{out}[b, o, p] = \\sum_{k} W_2[o, k] \\, \\mathrm{cols}[b, k, p] + b_o,
   \\qquad k = (c, i, j),\\; p = (h, w).

The backward is the same product transposed, followed by **col2im**, which adds every
column back onto the pixels it was copied from (docs/vision.md derives it).  The copy
loops over the ``kh * kw`` kernel offsets only -- never over batch items or pixels.

A depthwise convolution and the window pools need no product: they run one kernel offset at a
time over whole maps (:class:`_Windows`).  Every such fast path is checked against the plain
im2col / col2im version in ``tests/test_conv_fast_paths.py``; docs/vision.md, section 9, says
what each optimisation buys.
"""
import math

from ..backend import BACKEND, get_rng, xp
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


# ---------------------------------------------------------------- kernel-offset windows
# The depthwise conv and the pools need no matrix product: they are kh*kw element-wise passes,
# one per kernel offset, over that offset's *window* of the padded input (im2col without the
# copy).  _Windows lays the input out so that every window is one contiguous run of memory;
# tests/test_conv_fast_paths.py checks each path built on it against im2col / col2im above,
# in float64.
_CHUNK = 1 << 18 if BACKEND == "numpy" else 1 << 62   # numbers per buffer; see _Windows.chunks


def _row_dots(a, b):
    """``sum_l a[r, l] b[r, l]`` for every row ``r`` of two ``(R, L)`` arrays -> ``(R,)``: a batch
    of ``(1, L) @ (L, 1)`` products (BLAS dots; twice as fast here as ``einsum("rl,rl->r")``)."""
    return (a[:, None, :] @ b[:, :, None])[:, 0, 0]


class _Windows:
    """The ``kh * kw`` kernel-offset windows of ``N`` maps ``(H, W)``, as contiguous runs.

    ``window_(i,j)[n, h, w] = xpad[n, h sh + i dh, w sw + j dw]`` (``h < Ho``, ``w < Wo``).

    **Phase planes.**  :meth:`pad` pads ``x`` and splits it by the stride phase
    ``(u, v) = (row mod sh, column mod sw)`` into planes of ``Hs x Ws`` pixels, all ``N`` maps of a
    phase one after the other: ``planes[a, u, v, (n, r, q)] = xpad[a, n, r sh + u, q sw + v]``.
    Offset ``(i, j)`` reads phase ``(i dh mod sh, j dw mod sw)`` shifted by
    ``(i dh // sh, j dw // sw)``, so in the flattened ``(n, r, q)`` axis its window is **one run**
    starting at ``(i dh // sh) Ws + j dw // sw``.  The outputs are computed at all ``N Hs Ws``
    positions of that axis (a *frame*); those with ``r >= Ho`` or ``q >= Wo`` straddle a border and
    are dropped by :meth:`crop`.  An element-wise pass then runs over ``A`` long rows instead of
    ``A N Ho`` rows of ``Wo`` numbers (NumPy pays a fixed cost per row, and strided rows are slow).
    """

    def __init__(self, hw, kernel, stride, padding, dilation=(1, 1)):
        (self.H, self.W), (self.kh, self.kw), (self.sh, self.sw), (self.ph, self.pw), (self.dh, self.dw) = \
            hw, kernel, stride, padding, dilation
        self.Ho = conv_output_size(self.H, self.kh, self.sh, self.ph, self.dh)
        self.Wo = conv_output_size(self.W, self.kw, self.sw, self.pw, self.dw)
        self.Hs = -(-(self.H + 2 * self.ph) // self.sh)            # phase plane: ceil(Hp / sh) rows
        self.Ws = -(-(self.W + 2 * self.pw) // self.sw)
        self.last = ((self.kh - 1) * self.dh // self.sh) * self.Ws + (self.kw - 1) * self.dw // self.sw

    def offsets(self):
        return [(i, j) for i in range(self.kh) for j in range(self.kw)]

    def chunks(self, N, maps_per_item=1):
        """``[(n0, n1), ...]`` covering ``range(N)``, each chunk at most ``_CHUNK`` numbers of phase
        planes (about 1 MB: the ``kh kw`` passes over a chunk then stay in the CPU's L2 cache)."""
        nb = max(1, min(N, _CHUNK // (maps_per_item * self.sh * self.sw * self.Hs * self.Ws)))
        return [(n0, min(N, n0 + nb)) for n0 in range(0, N, nb)]

    def _phase(self, u, v):
        """Where phase ``(u, v)`` meets the image: ``(rows, cols)`` of ``x`` and of the plane (slices)."""
        y0, x0 = (u - self.ph) % self.sh, (v - self.pw) % self.sw    # first image row / column in the phase
        ny, nx = len(range(y0, self.H, self.sh)), len(range(x0, self.W, self.sw))
        r0, q0 = (y0 + self.ph) // self.sh, (x0 + self.pw) // self.sw
        return (slice(y0, None, self.sh), slice(x0, None, self.sw), slice(r0, r0 + ny), slice(q0, q0 + nx))

    def pad(self, x, value=0.0):
        """``x (A, N, H, W)`` (any strides) -> phase planes ``(A, sh, sw, N Hs Ws)`` padded with
        ``value`` (read-only: without padding and stride it may be ``x`` itself)."""
        A, N = x.shape[:2]
        if (self.sh, self.sw, self.ph, self.pw) == (1, 1, 0, 0):
            return x.reshape(A, 1, 1, -1)                            # one phase, no border: a view (or copy)
        planes = xp.full((A, self.sh, self.sw, N, self.Hs, self.Ws), value, dtype=x.dtype)
        for u in range(self.sh):
            for v in range(self.sw):
                ys, xs, rs, qs = self._phase(u, v)
                planes[:, u, v, :, rs, qs] = x[:, :, ys, xs]
        return planes.reshape(A, self.sh, self.sw, -1)

    def unpad(self, dplanes, out):
        """The adjoint of :meth:`pad`: write the image part of phase planes into ``out (A, N, H, W)``."""
        A = dplanes.shape[0]
        dplanes = dplanes.reshape(A, self.sh, self.sw, -1, self.Hs, self.Ws)
        for u in range(self.sh):
            for v in range(self.sw):
                ys, xs, rs, qs = self._phase(u, v)
                out[:, :, ys, xs] = dplanes[:, u, v, :, rs, qs]

    def window(self, planes, i, j):
        """Offset ``(i, j)``'s window: a run ``(A, L)`` of the phase planes (a view)."""
        r, c = i * self.dh, j * self.dw
        start = (r // self.sh) * self.Ws + c // self.sw
        return planes[:, r % self.sh, c % self.sw, start:start + planes.shape[-1] - self.last]

    def empty(self, A, N, dtype):
        """A frame ``(A, N Hs Ws)`` for the outputs of ``A x N`` maps (uninitialised)."""
        return xp.empty((A, N * self.Hs * self.Ws), dtype=dtype)

    def valid(self, frame):
        """The part of a frame the windows compute, ``(A, L)`` like a window (a view)."""
        return frame[:, :frame.shape[1] - self.last]

    def crop(self, frame):
        """A frame's outputs ``(A, N, Ho, Wo)`` (a view)."""
        return frame.reshape(frame.shape[0], -1, self.Hs, self.Ws)[:, :, :self.Ho, :self.Wo]

    def frame(self, g):
        """The adjoint of ``valid(crop(.))``: ``g (A, N, Ho, Wo)`` in a frame ``(A, L)``, zero at the
        dropped positions (so that they add nothing in a backward)."""
        A, N = g.shape[:2]
        out = xp.zeros((A, N, self.Hs, self.Ws), dtype=g.dtype)
        out[:, :, :self.Ho, :self.Wo] = g
        return self.valid(out.reshape(A, -1))


# ---------------------------------------------------------------- functional conv pair
#: columns per matrix product of a convolution: images are put side by side until a product
#: has about this many (see _images_per_product)
_GEMM_COLUMNS = 1024


def conv2d_forward(x, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """``out = conv(x, weight) + bias`` via im2col; returns ``(out, cache)``.

    ``x``: ``(B, C, H, W)``, ``weight``: ``(O, C / groups, kh, kw)``, ``bias``: ``(O,)`` or
    None, ``out``: ``(B, O, Ho, Wo)``.  With ``groups = G`` the channels are cut into ``G``
    groups; output group ``g`` (``O / G`` channels) sees only input group ``g``
    (``C / G`` channels).  ``groups = C = O`` is a **depthwise** conv: one filter per channel.
    Each group is a matrix product over the columns of ``n`` images side by side
    (``n = 1`` for large images, more for small ones: :func:`_images_per_product`)::

        out[m, g] = W[g] @ cols[m, g]    W[g]: (O/G, K),  cols[m, g]: (K, n Ho Wo),  K = (C/G) kh kw

    for the ``m = 1 .. B/n`` products (one batched ``matmul``).  A 1x1 conv with stride 1 and
    no padding needs no im2col when ``n = 1``: its columns are ``x`` itself.  A depthwise conv
    would be products with one row (the slowest GEMM shape there is); it runs as ``kh kw``
    multiply-adds of whole windows instead (:func:`_depthwise_forward`).

    cache: ``(x.shape, cols (B/n, G, K, n Ho Wo), weight, has_bias, stride, padding, dilation, groups)``;
    depthwise: ``x`` in place of ``cols``.
    """
    O, Cg, kh, kw = weight.shape
    G = groups
    B = x.shape[0]
    if Cg == 1 and O == G:
        out = _depthwise_forward(x, weight, stride, padding, dilation)
        if bias is not None:
            out += bias[:, None, None]
        return out, (x.shape, x, weight, bias is not None, stride, padding, dilation, G)
    cols = _im2col_batched(x, (kh, kw), stride, padding, dilation)   # (B/n, C, kh, kw, n, Ho, Wo)
    M, _, _, _, n, Ho, Wo = cols.shape
    cols = cols.reshape(M, G, Cg * kh * kw, n * Ho * Wo)            # channels c = g Cg + c'
    z = weight.reshape(G, O // G, -1) @ cols                        # (B/n, G, O/G, n Ho Wo)
    z = z.reshape(M, O, n, Ho, Wo).transpose(0, 2, 1, 3, 4)         # back to (B/n, n, O, Ho, Wo): a view
    if n == 1:                                                      # z is (B, O, Ho, Wo) already
        out = z.reshape(B, O, Ho, Wo)
        if bias is not None:
            out += bias[:, None, None]                              # in place, no second array
    else:                                                           # one transposing copy
        out = xp.empty((B, O, Ho, Wo), dtype=z.dtype)
        out5 = out.reshape(M, n, O, Ho, Wo)
        if bias is None:
            out5[...] = z
        else:
            xp.add(z, bias[:, None, None], out=out5)                # the bias rides on the copy
    cache = (x.shape, cols, weight, bias is not None, stride, padding, dilation, G)
    return out, cache


def conv2d_backward(grad_output, cache):
    """Gradients ``(dx, dweight, dbias)`` of :func:`conv2d_forward` (``dbias`` None without bias)."""
    x_shape, cols, weight, has_bias, stride, padding, dilation, G = cache
    O, Cg, kh, kw = weight.shape
    B, _, Ho, Wo = grad_output.shape
    dbias = grad_output.sum(axis=(0, 2, 3)) if has_bias else None
    if Cg == 1 and O == G:                                          # forward was: _depthwise_forward
        dx, dweight = _depthwise_backward(grad_output, cols, weight, stride, padding, dilation)
        return dx, dweight, dbias
    M = cols.shape[0]
    n = B // M
    g = grad_output.reshape(M, n, O, Ho * Wo).transpose(0, 2, 1, 3)  # (B/n, O, n, P), the forward's layout
    g = xp.ascontiguousarray(g).reshape(M, G, O // G, n * Ho * Wo)
    # out[m, g] = W[g] @ cols[m, g]  =>  dW[g] = sum_m g[m, g] @ cols[m, g]^T,  dcols[m, g] = W[g]^T @ g[m, g]
    dweight = (g @ xp.swapaxes(cols, -1, -2)).sum(axis=0).reshape(weight.shape)
    W2t = xp.swapaxes(weight.reshape(G, O // G, -1), -1, -2)       # (G, K, O/G)
    if _is_pointwise(weight, stride, padding) and n == 1:
        return (W2t @ g).reshape(x_shape), dweight, dbias           # forward was: cols = x
    # dcols = W^T g, then col2im, a few products at a time: the columns' gradient (kh kw times the
    # input) never exists for the whole batch -- fresh memory (page faults) that col2im would then
    # read back from RAM; a chunk is still in cache.  About 10% of the step for a 3x3 conv.
    dx = xp.empty(x_shape, dtype=xp.result_type(g.dtype, weight.dtype))
    step = max(1, _CHUNK // cols[0].size)
    for m0 in range(0, M, step):
        m1 = min(M, m0 + step)
        dcols = (W2t @ g[m0:m1]).reshape(m1 - m0, G * Cg, kh, kw, n, Ho, Wo)
        dx[m0 * n:m1 * n] = _col2im_batched(dcols, ((m1 - m0) * n,) + tuple(x_shape[1:]), (kh, kw), stride,
                                            padding, dilation)
    return dx, dweight, dbias


def _is_pointwise(weight, stride, padding):
    """A 1x1 conv with stride 1 and no padding: its im2col columns are the input itself."""
    return weight.shape[2:] == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def _images_per_product(B, P):
    """How many images share one matrix product: the largest divisor ``n`` of ``B`` with
    ``n P <= max(P, _GEMM_COLUMNS)``.  Small images give small per-image products (one BLAS call
    each, too little work for a second thread); putting images side by side costs a transposing
    copy of ``out`` and of its gradient, and very wide products are slower (their operand rows
    lie far apart), so large images keep one product each."""
    n = max(1, min(B, _GEMM_COLUMNS // max(1, P)))
    while B % n:
        n -= 1
    return n


def _im2col_batched(x, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """:func:`im2col` with ``n`` images side by side (:func:`_images_per_product`):
    ``(B/n, C, kh, kw, n, Ho, Wo)``, ``cols[m, c, i, j, a] = im2col(x)[m n + a, c, i, j]``.
    For ``n = 1`` this is im2col's own layout; a 1x1 conv with stride 1 and no padding then
    returns ``x`` itself (a view)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    B, C, H, W = x.shape
    Ho = conv_output_size(H, kh, sh, ph, dh)
    Wo = conv_output_size(W, kw, sw, pw, dw)
    n = _images_per_product(B, Ho * Wo)
    if n == 1 and (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):   # 1x1: the columns are x (a view)
        return x.reshape(B, C, 1, 1, 1, H, W)
    if ph or pw:
        x = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    x = x.reshape(B // n, n, C, H + 2 * ph, W + 2 * pw).transpose(0, 2, 1, 3, 4)   # (B/n, C, n, Hp, Wp)
    cols = xp.empty((B // n, C, kh, kw, n, Ho, Wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            cols[:, :, i, j] = x[..., r:r + sh * (Ho - 1) + 1:sh, c:c + sw * (Wo - 1) + 1:sw]
    return cols


def _col2im_batched(cols, x_shape, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """The adjoint of :func:`_im2col_batched` (:func:`col2im` for that layout)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    B, C, H, W = x_shape
    M, _, _, _, n, Ho, Wo = cols.shape
    dx = xp.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    dx5 = dx.reshape(M, n, C, H + 2 * ph, W + 2 * pw).transpose(0, 2, 1, 3, 4)   # a view of dx
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            dx5[..., r:r + sh * (Ho - 1) + 1:sh, c:c + sw * (Wo - 1) + 1:sw] += cols[:, :, i, j]
    return dx[:, :, ph:ph + H, pw:pw + W]


def _depthwise_forward(x, weight, stride, padding, dilation):
    """Depthwise conv ``(B, C, H, W)`` -> ``(B, C, Ho, Wo)``, weight ``(C, 1, kh, kw)``, no bias.

    ``out[c] = sum_(i,j) W[c, 0, i, j] * window_(i,j)[c]``: one multiply-add per kernel offset
    over all pixels.  Per chunk of ``nb`` images the input is laid out channels first, so that
    a channel's ``nb`` maps form one run (:class:`_Windows` with ``A = C``).
    """
    B, C = x.shape[:2]
    win = _Windows(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    dtype = xp.result_type(x.dtype, weight.dtype)                  # as a matmul of the two would give
    out = xp.empty((B, C, win.Ho, win.Wo), dtype=dtype)
    for b0, b1 in win.chunks(B, C):
        planes = win.pad(x[b0:b1].transpose(1, 0, 2, 3))           # (C, sh, sw, nb Hs Ws)
        z = win.empty(C, b1 - b0, dtype)
        acc = win.valid(z)
        for t, (i, j) in enumerate(win.offsets()):
            w = weight[:, 0, i, j, None]                            # (C, 1): one weight per row
            if t == 0:
                xp.multiply(w, win.window(planes, i, j), out=acc)
            else:
                acc += w * win.window(planes, i, j)
        out[b0:b1] = win.crop(z).transpose(1, 0, 2, 3)
    return out


def _depthwise_backward(grad_output, x, weight, stride, padding, dilation):
    """``(dx, dweight)`` of :func:`_depthwise_forward`, chunk by chunk as in the forward.

    For each offset ``(i, j)``: ``dW[c, 0, i, j] = sum g[c] * window_(i,j)[c]`` (over the chunk's
    pixels) and the window of ``dx``'s planes receives ``W[c, 0, i, j] * g[c]`` (col2im in place).
    """
    B, C = x.shape[:2]
    win = _Windows(x.shape[2:], weight.shape[2:], stride, padding, dilation)
    dx = xp.empty(x.shape, dtype=xp.result_type(grad_output.dtype, weight.dtype))
    dweight = xp.zeros(weight.shape, dtype=xp.result_type(grad_output.dtype, x.dtype))
    for b0, b1 in win.chunks(B, C):
        planes = win.pad(x[b0:b1].transpose(1, 0, 2, 3))           # the forward's planes, rebuilt
        g = win.frame(grad_output[b0:b1].transpose(1, 0, 2, 3))    # (C, L), 0 at dropped positions
        dplanes = xp.zeros(planes.shape, dtype=dx.dtype)
        for i, j in win.offsets():
            dweight[:, 0, i, j] += _row_dots(g, win.window(planes, i, j))
            dwin = win.window(dplanes, i, j)
            dwin += weight[:, 0, i, j, None] * g
        win.unpad(dplanes, dx[b0:b1].transpose(1, 0, 2, 3))        # forward was: pad, channels first
    return dx, dweight


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

    Padding adds ``-inf`` borders (never chosen).  The maximum is taken one kernel offset at a
    time over whole maps (:class:`_Windows`), remembering which offset won.  Backward routes
    each output gradient to the one input that was the window's maximum (the first one on ties),
    adding up where windows overlap.  (A window holding NaN outputs NaN; its gradient goes to
    the largest number before the first NaN, or to the NaN when it comes first.)
    cache: ``(x.shape, argmax)``, the winning offset ``i kw + j`` of each window ``(B, C, Ho, Wo)``.
    """

    def forward(self, x):
        B, C, H, W = self._check_input(x)
        win = _Windows((H, W), self.kernel_size, self.stride, self.padding)
        maps = x.reshape(1, B * C, H, W)                            # every (b, c) map alike: A = 1
        out = xp.empty((1, B * C, win.Ho, win.Wo), dtype=x.dtype)
        index = xp.int16 if len(win.offsets()) < 2 ** 15 else xp.int32
        argmax = xp.empty(out.shape, dtype=index)
        for n0, n1 in win.chunks(B * C):
            planes = win.pad(maps[:, n0:n1], -xp.inf)
            best, arg = win.empty(1, n1 - n0, x.dtype), win.empty(1, n1 - n0, index)
            best_v, arg_v = win.valid(best), win.valid(arg)
            for t, (i, j) in enumerate(win.offsets()):
                v = win.window(planes, i, j)
                if t == 0:
                    best_v[...] = v
                    arg_v[...] = 0
                else:
                    # t grows, so max(arg, t [v > best]) is t where v wins (strictly: the first maximum
                    # wins ties) and arg elsewhere; a multiply, where xp.where / copyto(where=) are ~20x slower
                    xp.maximum(arg_v, (v > best_v) * index(t), out=arg_v)
                    xp.maximum(best_v, v, out=best_v)
            out[:, n0:n1] = win.crop(best)
            argmax[:, n0:n1] = win.crop(arg)
        self.cache = (x.shape, argmax.reshape(B, C, win.Ho, win.Wo))
        return out.reshape(B, C, win.Ho, win.Wo)

    def backward(self, grad_output):
        x_shape, argmax = self.cache
        B, C, H, W = x_shape
        win = _Windows((H, W), self.kernel_size, self.stride, self.padding)
        g = grad_output.reshape(1, B * C, win.Ho, win.Wo)
        argmax = argmax.reshape(g.shape)
        dx = xp.empty((1, B * C, H, W), dtype=grad_output.dtype)
        for n0, n1 in win.chunks(B * C):
            g_f, arg_f = win.frame(g[:, n0:n1]), win.frame(argmax[:, n0:n1])
            dplanes = xp.zeros((1, win.sh, win.sw, (n1 - n0) * win.Hs * win.Ws), dtype=g.dtype)
            for t, (i, j) in enumerate(win.offsets()):
                dwin = win.window(dplanes, i, j)
                dwin += g_f * (arg_f == t)                          # the gradient goes to the winner only
            win.unpad(dplanes, dx[:, n0:n1])
        return dx.reshape(x_shape)


class AvgPool2d(_WindowPool2d):
    """Mean over each ``kernel_size`` window, moved by ``stride`` (default: ``kernel_size``).

    As ``torch.nn.AvgPool2d``: ``padding`` adds zero borders; with
    ``count_include_pad=True`` (default) every window is divided by ``kh * kw``, with
    ``False`` by the number of real (non-padding) pixels in it.  ``ceil_mode`` is not
    implemented (the output size rounds down).  The window sums are added one kernel offset
    at a time over whole maps (:class:`_Windows`).
    Backward: each output gradient, divided by its window's divisor, is spread over the
    window's pixels (added where windows overlap).  cache: ``(x.shape, divisor)``.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        if not isinstance(count_include_pad, bool):
            raise TypeError(f"AvgPool2d: 'count_include_pad' must be True or False, got {count_include_pad!r}")
        self.count_include_pad = count_include_pad

    def forward(self, x):
        B, C, H, W = self._check_input(x)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        win = _Windows((H, W), self.kernel_size, self.stride, self.padding)
        if self.count_include_pad or not (ph or pw):
            divisor = float(kh * kw)
        else:  # real pixels per window: the same windows over an image of ones
            ones = xp.ones((1, 1, H, W), dtype=x.dtype)
            divisor = im2col(ones, self.kernel_size, self.stride, self.padding).sum(axis=(2, 3))[0, 0]  # (Ho, Wo)
        maps = x.reshape(1, B * C, H, W)
        out = xp.empty((1, B * C, win.Ho, win.Wo), dtype=x.dtype)
        for n0, n1 in win.chunks(B * C):
            planes = win.pad(maps[:, n0:n1])
            total = win.empty(1, n1 - n0, x.dtype)
            acc = win.valid(total)
            for t, (i, j) in enumerate(win.offsets()):
                if t == 0:
                    acc[...] = win.window(planes, i, j)
                else:
                    acc += win.window(planes, i, j)
            xp.divide(win.crop(total), divisor, out=out[:, n0:n1])
        self.cache = (x.shape, divisor)
        return out.reshape(B, C, win.Ho, win.Wo)

    def backward(self, grad_output):
        x_shape, divisor = self.cache
        B, C, H, W = x_shape
        win = _Windows((H, W), self.kernel_size, self.stride, self.padding)
        # out = sum(window) / divisor: every pixel of the window gets grad / divisor
        g = (grad_output / divisor).reshape(1, B * C, win.Ho, win.Wo)
        dx = xp.empty((1, B * C, H, W), dtype=g.dtype)
        for n0, n1 in win.chunks(B * C):
            g_f = win.frame(g[:, n0:n1])
            dplanes = xp.zeros((1, win.sh, win.sw, (n1 - n0) * win.Hs * win.Ws), dtype=g.dtype)
            for i, j in win.offsets():
                dwin = win.window(dplanes, i, j)
                dwin += g_f
            win.unpad(dplanes, dx[:, n0:n1])
        return dx.reshape(x_shape)

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


# ---------------------------------------------------------------- per-channel helpers (BatchNorm2d)
def _channel_sum(a):
    """``a (B, C, H, W)`` summed over ``(B, H, W)`` -> ``(C,)``, as one matrix-vector product with
    ones (a single BLAS pass; about 3x faster here than ``a.sum(axis=(0, 2, 3))``)."""
    B, C, H, W = a.shape
    return (a.reshape(B * C, H * W) @ xp.ones(H * W, dtype=a.dtype)).reshape(B, C).sum(axis=0)


def _channel_dot(a, b):
    """``sum_(b,h,w) a * b`` per channel -> ``(C,)``, without the ``(B, C, H, W)`` product."""
    B, C, H, W = a.shape
    return _row_dots(a.reshape(B * C, H * W), b.reshape(B * C, H * W)).reshape(B, C).sum(axis=0)


def _per_channel(a, v, op, out=None):
    """``op(a, v[c])`` for every channel ``c`` of ``a (B, C, H, W)`` (``out`` may be ``a``).

    ``v`` is repeated to one image, ``(C H W,)``, and ``a`` seen as ``(B, C H W)``: NumPy then runs
    ``B`` rows of ``C H W`` numbers, not ``B C`` rows of ``H W`` (each row costs a fixed overhead;
    3x here for 32x32 maps).
    """
    B, C, H, W = a.shape
    a2 = a.reshape(B, C * H * W)
    res = op(a2, xp.repeat(v, H * W), out=None if out is None else out.reshape(B, -1))
    return res.reshape(B, C, H, W)


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
        B, C, H, W = _check_map(x, "BatchNorm2d", self.num_features)
        batch_stats = self.training or not self.track_running_stats
        n = B * H * W
        if batch_stats and n < 2:
            raise ValueError(f"BatchNorm2d: normalising with batch statistics needs more than one value per "
                             f"channel, got input {x.shape}")
        mean = _channel_sum(x) / n if batch_stats else self.running_mean.astype(x.dtype)
        xhat = _per_channel(x, mean, xp.subtract)                  # x - mu: the one new array of the forward
        if batch_stats:
            var = _channel_dot(xhat, xhat) / n                      # biased variance, from the centred x
            if self.training and self.track_running_stats:
                m = self.momentum
                self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(self.running_mean.dtype)
                self.running_var = ((1 - m) * self.running_var + m * var * n / (n - 1)).astype(self.running_var.dtype)
        else:
            var = self.running_var.astype(x.dtype)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        _per_channel(xhat, inv_std, xp.multiply, out=xhat)          # xhat = (x - mu) / sqrt(var + eps), in place
        self.cache = (xhat, inv_std, batch_stats)
        if not self.affine:
            return xhat
        y = _per_channel(xhat, self.weight.data, xp.multiply)
        return _per_channel(y, self.bias.data, xp.add, out=y)

    def backward(self, grad_output):
        xhat, inv_std, batch_stats = self.cache
        g = grad_output
        B, C, H, W = g.shape
        gamma = self.weight.data if self.affine else xp.ones(C, dtype=inv_std.dtype)   # y = xhat without affine
        sum_g, sum_gx = _channel_sum(g), _channel_dot(g, xhat)
        if self.affine:
            self.weight.grad += sum_gx                              # dgamma = sum g xhat
            self.bias.grad += sum_g                                 # dbeta = sum g
        scale = gamma * inv_std                                     # dL/dx = gamma inv_std dL/dxhat ...
        if not batch_stats:                                         # ... when mu and var are constants
            return _per_channel(g, scale, xp.multiply)
        # mean and var depend on x: dx = gamma inv_std (g - mean(g) - xhat mean(g xhat))  (per channel),
        # built in place from the right: four passes over the map, one new array, no temporary
        n = B * H * W
        dx = _per_channel(xhat, -sum_gx / n, xp.multiply)          # - xhat mean(g xhat)
        dx += g
        _per_channel(dx, sum_g / n, xp.subtract, out=dx)            # - mean(g)
        return _per_channel(dx, scale, xp.multiply, out=dx)

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
        return xp.fmax(z, 0)          # max(z, 0), NaN -> 0 as where(z > 0, z, 0); where is ~10x slower

    def backward(self, grad_output):
        dz = grad_output * self.cache  # ReLU: pass the gradient where z > 0
        if self.bn is not None:
            dz = self.bn.backward(dz)
        return self.conv.backward(dz)


def downsample(in_channels, out_channels, stride):
    """ResNet's shortcut projection: 1x1 conv (stride, no bias) + BatchNorm2d."""
    return Sequential(Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), BatchNorm2d(out_channels))
