"""The spatial transformer (Jaderberg et al., 2015): the network learns *where to look*.

Three pieces, each a forward with a hand-written backward:

1. a **localisation net** reads the image and predicts an affine matrix
   ``theta`` ``(B, 2, 3)``, initialised to the identity;
2. :func:`affine_grid` turns ``theta`` into a **sampling grid** ``(B, H_out, W_out, 2)``:
   for every output pixel, the point of the input it should be read from, in normalised
   coordinates (``x`` first, then ``y``; ``-1`` = left/top, ``+1`` = right/bottom);
3. :func:`grid_sample` reads the input at those points with **bilinear interpolation**,
   zeros outside the image.

Read as attention: the grid is the *score* (where to look), the four bilinear weights
are the *alignment* (a tiny, local, differentiable attention over pixels) and the
weighted sum of the four neighbours is the *context*.

``align_corners`` (the same meaning as in PyTorch's ``affine_grid`` / ``grid_sample``)
--------------------------------------------------------------------------------------
* ``False`` (default): ``-1`` and ``+1`` are the **outer edges** of the border pixels, so
  pixel ``i`` of ``n`` has its centre at ``(2i + 1)/n - 1`` and a normalised coordinate
  ``u`` maps to pixel index ``((u + 1) n - 1)/2``.  Resolution-independent.
* ``True``: ``-1`` and ``+1`` are the **centres** of the border pixels: pixel ``i`` sits
  at ``2i/(n - 1) - 1`` and ``u`` maps to ``(u + 1)(n - 1)/2``.

For a 1-pixel axis both place the pixel at ``0`` (as PyTorch does).
"""
from ..backend import add_at, xp
from ..layers import Linear
from ..module import Module
from ..validate import check_array, check_positive_int

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


# --------------------------------------------------------------------------- helpers
def _check_size(size, where):
    """``size`` = ``(B, C, H, W)`` of positive ints -> a tuple."""
    try:
        size = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: 'size' must be a tuple (B, C, H, W) of ints, got {size!r}") from None
    if len(size) != 4 or min(size[1:]) <= 0 or size[0] < 0:   # B = 0 (an empty batch) is fine
        raise ValueError(f"{where}: 'size' must be (B, C, H, W) with 4 positive ints "
                         f"(only 2-D affine grids are supported), got {size}")
    return size


def _check_align(align_corners, where):
    if not isinstance(align_corners, bool):
        raise TypeError(f"{where}: 'align_corners' must be True or False, got {align_corners!r}")
    return align_corners


def _pixel_centres(n, align_corners, dtype):
    """Normalised coordinates (in ``[-1, 1]``) of the centres of ``n`` pixels along one axis."""
    if n == 1:
        return xp.zeros(1, dtype=dtype)
    i = xp.arange(n, dtype=xp.float64)
    centres = 2 * i / (n - 1) - 1 if align_corners else (2 * i + 1) / n - 1
    return centres.astype(dtype)


def _base_grid(H, W, align_corners, dtype):
    """``(H*W, 3)`` rows ``[x_w, y_h, 1]``: homogeneous coordinates of the output pixels."""
    xs = _pixel_centres(W, align_corners, dtype)
    ys = _pixel_centres(H, align_corners, dtype)
    gx = xp.broadcast_to(xs[None, :], (H, W))
    gy = xp.broadcast_to(ys[:, None], (H, W))
    return xp.stack([gx, gy, xp.ones((H, W), dtype=dtype)], axis=-1).reshape(H * W, 3)


def _to_pixels(u, n, align_corners):
    """Normalised coordinate -> pixel index, and the constant slope ``d index / d u``."""
    if align_corners:
        slope = (n - 1) / 2  # -1 -> 0, +1 -> n - 1 (centres of the border pixels)
        index = (u + 1) * slope
    else:
        slope = n / 2  # -1 -> -0.5, +1 -> n - 0.5 (outer edges of the border pixels)
        index = (u + 1) * slope - 0.5
    # Rounding leaves the pixel centres of an identity grid a few ulps off the integers;
    # snap indices that close (64 ulps per pixel) so the identity samples exactly.  The
    # slope is unchanged, so gradients are too.
    nearest = xp.rint(index)
    close = xp.abs(index - nearest) <= 64 * xp.finfo(index.dtype).eps * max(n, 1)
    xp.copyto(index, nearest, where=close)   # in place: index is a fresh array
    return index, slope


def _reflect(index, twice_low, twice_high):
    """Reflect ``index`` into ``[low, high]`` (PyTorch's ``reflect_coordinates``); returns
    the reflected index and its derivative (+1 or -1)."""
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    if span <= 0:   # a 1-pixel axis: everything maps to pixel 0
        return xp.zeros_like(index), xp.zeros_like(index)
    shifted = index - low
    sign_in = xp.where(shifted < 0, -1.0, 1.0)          # d|u|/du
    dist = xp.abs(shifted)
    flips = xp.floor(dist / span)
    extra = dist - flips * span                          # fmod(dist, span)
    even = (flips % 2) == 0
    out = xp.where(even, extra + low, span - extra + low)
    return out, (sign_in * xp.where(even, 1.0, -1.0)).astype(index.dtype)


def _padded_index(u, n, align_corners, padding_mode):
    """Normalised coordinate -> pixel index after ``padding_mode``, and ``d index / d u``
    (a number, or an array when the padding clips or reflects).

    * ``"zeros"``: the index as is (reads outside the image give 0);
    * ``"border"``: clipped to ``[0, n - 1]`` (derivative 0 where it was clipped);
    * ``"reflection"``: reflected at the border (about the border pixels' centres with
      ``align_corners=True``, about the image edges ``-0.5`` and ``n - 0.5`` otherwise),
      then clipped, as ``torch.nn.functional.grid_sample``.
    """
    index, slope = _to_pixels(u, n, align_corners)
    if padding_mode == "zeros":
        return index, slope
    d = xp.ones_like(index)
    if padding_mode == "reflection":
        index, d = _reflect(index, 0.0, 2.0 * (n - 1)) if align_corners else _reflect(index, -1.0, 2.0 * n - 1)
    clipped = xp.clip(index, 0, n - 1)
    d = xp.where((index < 0) | (index > n - 1), 0.0, d).astype(index.dtype)   # PyTorch: grad 0 outside
    return clipped, slope * d


def _as_index(value, n):
    """Float pixel positions -> int indices clipped into ``[0, n)`` (NaN/inf -> 0: the
    result is masked by ``inside`` and its NaN weight, so NaN propagates, no IndexError)."""
    index = xp.clip(value, 0, n - 1)
    xp.copyto(index, 0, where=~xp.isfinite(value))   # one in-place pass instead of a where() copy
    return index.astype(xp.int64)


def _neighbours(i, n):
    """The two neighbours ``floor(i)`` and ``floor(i) + 1`` of positions ``i`` on an axis of ``n`` pixels.

    Returns ``(index, weight, inside)``, each ``(2, *i.shape)`` (neighbour 0, neighbour 1):
    the pixel indices clipped into ``[0, n)``, the linear-interpolation weights
    ``(1 - f, f)`` with ``f = i - floor(i)``, and ``inside`` (1.0 where the neighbour is a
    pixel of the image, else 0.0).  The weights are already multiplied by ``inside``
    (zeros padding), once per axis instead of once per corner and channel.
    """
    i0 = xp.floor(i)
    f = i - i0  # position inside the cell, in [0, 1)
    at = i0 + xp.arange(2, dtype=i.dtype).reshape((2,) + (1,) * i.ndim)   # both neighbours: one call each step
    inside = ((at >= 0) & (at <= n - 1)).astype(i.dtype)
    weight = xp.stack([1 - f, f])
    weight *= inside   # NaN * 0 stays NaN: a NaN grid point gives NaN
    return _as_index(at, n), weight, inside


def _bilinear_taps(grid, H, W, align_corners, padding_mode="zeros"):
    """The four neighbours (corners) of every sampling point, as flat pixel indices.

    Returns ``(index, weight, x, y, slope_x, slope_y)``: ``index`` and ``weight`` are
    ``(4, B, P)`` (``P = H_out * W_out``; corner ``2 a + b`` is ``(y0 + a, x0 + b)``), with
    ``index`` into one flattened ``(B * H * W)`` channel plane and ``weight = w_y(a) w_x(b)``
    (0 for a corner outside the image).  ``x`` = ``(weight_x, inside_x)`` and ``y`` likewise,
    each ``(2, B, P)``, are the per-axis factors the backward needs.
    """
    B, P = grid.shape[0], grid.shape[1] * grid.shape[2]
    ix, slope_x = _padded_index(grid[..., 0].reshape(B, P), W, align_corners, padding_mode)
    iy, slope_y = _padded_index(grid[..., 1].reshape(B, P), H, align_corners, padding_mode)
    col, wx, in_x = _neighbours(ix, W)
    row, wy, in_y = _neighbours(iy, H)
    row *= W
    row += (xp.arange(B) * (H * W))[:, None]   # now the flat index of the row's first pixel
    # the 2 x 2 corners by broadcasting (a, 1, ...) against (1, b, ...): a = y neighbour, b = x
    index = (row[:, None] + col[None, :]).reshape((4, B, P))
    weight = (wy[:, None] * wx[None, :]).reshape((4, B, P))
    return index, weight, (wx, in_x), (wy, in_y), slope_x, slope_y


def _nearest_taps(grid, H, W, align_corners, padding_mode):
    """The nearest pixel (rounding half to even, as PyTorch's ``nearbyint``) as one "corner":
    ``(index, weight)``, both ``(1, B, P)``, weight 1 inside the image and 0 outside."""
    B, P = grid.shape[0], grid.shape[1] * grid.shape[2]
    ix, _ = _padded_index(grid[..., 0].reshape(B, P), W, align_corners, padding_mode)
    iy, _ = _padded_index(grid[..., 1].reshape(B, P), H, align_corners, padding_mode)
    col, row = xp.rint(ix), xp.rint(iy)
    inside = (col >= 0) & (col <= W - 1) & (row >= 0) & (row <= H - 1) & xp.isfinite(ix) & xp.isfinite(iy)
    index = (xp.arange(B) * (H * W))[:, None] + _as_index(row, H) * W + _as_index(col, W)
    return index[None], inside.astype(ix.dtype)[None]


def _taps(grid, H, W, mode, align_corners, padding_mode):
    """``(index, weight, bilinear)``: the corners of :func:`_bilinear_taps` (``mode="bilinear"``;
    ``bilinear`` holds its other results, for the grid gradient) or the one nearest pixel of
    :func:`_nearest_taps` (``bilinear = None``).  Forward and backward both need them: the
    modules compute them once per step and cache them."""
    if mode == "nearest":
        return _nearest_taps(grid, H, W, align_corners, padding_mode) + (None,)
    index, weight, *bilinear = _bilinear_taps(grid, H, W, align_corners, padding_mode)
    return index, weight, bilinear


def _channel_planes(input):
    """``(B, C, H, W)`` -> ``(C, B * H * W)``: one contiguous plane per channel, so that one flat
    index per corner (computed once) reads every channel (a copy only when ``C > 1``)."""
    B, C, H, W = input.shape
    return xp.ascontiguousarray(input.transpose(1, 0, 2, 3)).reshape(C, B * H * W)


# --------------------------------------------------------------------------- affine_grid
def affine_grid(theta, size, align_corners=False):
    """Sampling grid of an affine map, as ``torch.nn.functional.affine_grid``.

    ``theta``: ``(B, 2, 3)``; ``size``: the output size ``(B, C, H, W)``.
    Returns ``grid`` ``(B, H, W, 2)`` with ``grid[b, h, w] = theta[b] @ [x_w, y_h, 1]``,
    where ``(x_w, y_h)`` is the normalised centre of output pixel ``(h, w)``.
    """
    where = "affine_grid"
    B, _, H, W = _check_size(size, where)
    check_array(theta, "theta", where, shape=(B, 2, 3))
    _check_align(align_corners, where)
    base = _base_grid(H, W, align_corners, theta.dtype)  # (H*W, 3)
    grid = base @ theta.transpose(0, 2, 1)  # (B, H*W, 2): rows [x, y, 1] times theta^T
    return grid.reshape(B, H, W, 2)


def affine_grid_backward(grad_grid, size, align_corners=False):
    """``dL/dtheta`` ``(B, 2, 3)`` from ``dL/dgrid`` ``(B, H, W, 2)``.

    The grid is linear in theta: ``g_{p j} = sum_k theta_{j k} base_{p k}``, so
    ``dL/dtheta_{j k} = sum_p dL/dg_{p j} base_{p k}`` (a sum over output pixels p).
    """
    where = "affine_grid_backward"
    B, _, H, W = _check_size(size, where)
    check_array(grad_grid, "grad_grid", where, shape=(B, H, W, 2))
    base = _base_grid(H, W, _check_align(align_corners, where), grad_grid.dtype)
    # one (B*2, H*W) @ (H*W, 3) GEMM instead of B small ones: NumPy's stacked matmul calls
    # BLAS once per matrix (3x faster for B = 64 images of 28 x 28)
    per_row = grad_grid.reshape(B, H * W, 2).transpose(0, 2, 1).reshape(B * 2, H * W)
    return (per_row @ base).reshape(B, 2, 3)


# --------------------------------------------------------------------------- grid_sample
def _check_sample_inputs(input, grid, where, mode, padding_mode):
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"{where}: 'mode' must be 'bilinear' or 'nearest', got {mode!r}")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"{where}: 'padding_mode' must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
    dims = {}
    check_array(input, "input", where, shape=("B", "C", "H", "W"), dims=dims)
    check_array(grid, "grid", where, shape=("B", "H_out", "W_out", 2), dims=dims)


def grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
    """Sample ``input`` at the points of ``grid``, as ``torch.nn.functional.grid_sample``.

    ``input``: ``(B, C, H, W)``; ``grid``: ``(B, H_out, W_out, 2)`` normalised ``(x, y)``.
    Returns ``(B, C, H_out, W_out)``.  ``mode="bilinear"``:
    ``out[b, :, p] = sum over the 4 neighbours (r, c) of w_rc * input[b, :, r, c]``,
    with ``w_rc = (1 - |ix - c|)(1 - |iy - r|)``; ``mode="nearest"``: the pixel nearest to
    ``(ix, iy)``.  ``padding_mode``: ``"zeros"`` (reads outside the image give 0),
    ``"border"`` (coordinates clipped to the border pixels) or ``"reflection"``
    (coordinates reflected at the border); see :func:`_padded_index`.  A NaN in the
    grid gives NaN in its output pixel (find it with ``detect_anomaly``), never an IndexError.
    """
    where = "grid_sample"
    _check_sample_inputs(input, grid, where, mode, padding_mode)
    align_corners = _check_align(align_corners, where)
    return _sample(input, grid, _taps(grid, *input.shape[2:], mode, align_corners, padding_mode))


def _sample(input, grid, taps):
    """:func:`grid_sample` from its taps: ``out = sum_corners weight * input[corner]``."""
    index, weight, _ = taps
    B, C = input.shape[:2]
    planes = _channel_planes(input)
    out = xp.empty((B, C, index.shape[2]), dtype=input.dtype)
    for c in range(C):   # a loop over channels (not pixels): all corners of all points at once
        # one flat gather of the corner values (4, B, P), then sum_corners weight * value;
        # xp.take on a flat plane is ~2x faster than image[b, row, col] with three index arrays
        out[:, c] = xp.einsum("kbp,kbp->bp", weight, xp.take(planes[c], index))
    return out.reshape((B, C) + tuple(grid.shape[1:3]))


def grid_sample_backward(grad_output, input, grid, align_corners=False, mode="bilinear", padding_mode="zeros"):
    """``(dL/dinput, dL/dgrid)`` of :func:`grid_sample`.

    * to the input: each output value came from 4 pixels with weights ``w``, so each
      pixel receives ``w * grad`` from every sampling point that read it -- a
      scatter-add (:func:`npattention.backend.add_at`), since pixels repeat;
    * to the grid: ``out`` is linear in ``ix`` within a cell, with slope
      ``sum_corners (d w / d ix) * value``; then ``d ix / d grid_x`` is the slope of the
      unnormalisation (``W/2`` or ``(W-1)/2``) times that of the padding (``0`` where
      ``"border"`` clipped, ``-1`` where ``"reflection"`` mirrored), likewise for ``y``.
    * ``mode="nearest"``: the output is piecewise constant in the grid, so ``dL/dgrid = 0``
      (as PyTorch); the input gets ``grad`` at the pixel that was read.
    """
    where = "grid_sample_backward"
    _check_sample_inputs(input, grid, where, mode, padding_mode)
    check_array(grad_output, "grad_output", where, shape=tuple(input.shape[:2]) + tuple(grid.shape[1:3]))
    align_corners = _check_align(align_corners, where)
    return _sample_backward(grad_output, input, grid, _taps(grid, *input.shape[2:], mode, align_corners, padding_mode))


def _sample_backward(grad_output, input, grid, taps):
    """:func:`grid_sample_backward` from the taps of the forward."""
    index, weight, bilinear = taps
    B, C = input.shape[:2]
    grad_input = _scatter_to_input(grad_output, input, index, weight)
    if bilinear is None:   # nearest: out = inside * image[row, col] is piecewise constant in the grid
        return grad_input, xp.zeros_like(grid)
    (wx, in_x), (wy, in_y), slope_x, slope_y = bilinear
    # to the grid: first g . value of every corner, summed over the channels (4, B, P)
    planes = _channel_planes(input)
    g = grad_output.reshape((B, C, index.shape[2]))
    g_dot_value = xp.zeros(index.shape, dtype=xp.result_type(input, grad_output))
    for c in range(C):
        value = xp.take(planes[c], index)
        value *= g[:, c]   # in place: one (4, B, P) temporary per channel, not two
        g_dot_value += value
    # d out / d ix = sum_corners (d w / d ix) value, with w = w_y(a) w_x(b) and
    # d w_x(b) / d ix = -1 (b = 0), +1 (b = 1) inside the image (0 outside); likewise for y
    gdv = g_dot_value.reshape((2, 2) + index.shape[1:])   # (a, b, B, P)
    sign = xp.asarray([-1.0, 1.0], dtype=in_x.dtype).reshape(2, 1, 1)
    # one einsum per axis sums over the 4 corners without a (2, 2, B, P) temporary
    grad_ix = xp.einsum("abkp,akp,bkp->kp", gdv, wy, sign * in_x)
    grad_iy = xp.einsum("abkp,akp,bkp->kp", gdv, sign * in_y, wx)
    grad_grid = xp.stack([grad_ix * slope_x, grad_iy * slope_y], axis=-1)  # chain rule: d ix / d x
    return grad_input, grad_grid.reshape(grid.shape).astype(grid.dtype, copy=False)


def _scatter_to_input(grad_output, input, index, weight):
    """``dL/dinput``: each corner of each point sends ``weight * grad`` back to the pixel it
    read.  Points share pixels, so this is a scatter-add (:func:`npattention.backend.add_at`),
    one per channel for all corners at once, in the reference's order (corner by corner)."""
    B, C, H, W = input.shape
    g = grad_output.reshape((B, C, index.shape[2]))
    grad_planes = xp.zeros((C, B * H * W), dtype=input.dtype)
    flat_index = index.reshape(-1)
    for c in range(C):
        # a 1-D target indexed by one flat array: numpy.add.at's fast case (outside: w = 0)
        add_at(grad_planes[c], flat_index, (weight * g[:, c]).reshape(-1))
    return grad_planes.reshape(C, B, H, W).transpose(1, 0, 2, 3)


# --------------------------------------------------------------------------- modules
class AffineGrid(Module):
    """Module form of :func:`affine_grid`: ``theta`` ``(B, 2, 3)`` -> grid ``(B, H, W, 2)``.

    cache: ``size``, the output grid's ``(B, 1, H, W)``.
    """

    def __init__(self, height, width, align_corners=False):
        self.height = check_positive_int(height, "height", "AffineGrid")
        self.width = check_positive_int(width, "width", "AffineGrid")
        self.align_corners = _check_align(align_corners, "AffineGrid")

    def forward(self, theta):
        check_array(theta, "theta", "AffineGrid", shape=(None, 2, 3))
        self.cache = size = (theta.shape[0], 1, self.height, self.width)
        return affine_grid(theta, size, self.align_corners)

    def backward(self, grad_output):
        return affine_grid_backward(grad_output, self.cache, self.align_corners)

    def extra_repr(self):
        return f"height={self.height}, width={self.width}, align_corners={self.align_corners}"


class GridSample(Module):
    """Module form of :func:`grid_sample`: ``(input, grid) -> output``; backward -> ``(d input, d grid)``.

    ``mode`` (``"bilinear"``, ``"nearest"``) and ``padding_mode`` (``"zeros"``, ``"border"``,
    ``"reflection"``) as in :func:`grid_sample`.  cache: ``(input, grid, taps)``: the taps (corner
    indices and weights, :func:`_taps`) serve the backward too, so they are computed once."""

    def __init__(self, align_corners=False, mode="bilinear", padding_mode="zeros"):
        self.align_corners = _check_align(align_corners, "GridSample")
        _check_sample_inputs(xp.zeros((1, 1, 1, 1)), xp.zeros((1, 1, 1, 2)), "GridSample", mode, padding_mode)
        self.mode, self.padding_mode = mode, padding_mode

    def forward(self, input, grid):
        _check_sample_inputs(input, grid, "GridSample", self.mode, self.padding_mode)
        taps = _taps(grid, *input.shape[2:], self.mode, self.align_corners, self.padding_mode)
        self.cache = (input, grid, taps)
        return _sample(input, grid, taps)

    def backward(self, grad_output):
        input, grid, taps = self.cache
        check_array(grad_output, "grad_output", "GridSample.backward",
                    shape=tuple(input.shape[:2]) + tuple(grid.shape[1:3]))
        return _sample_backward(grad_output, input, grid, taps)

    def extra_repr(self):
        return f"align_corners={self.align_corners}, mode={self.mode!r}, padding_mode={self.padding_mode!r}"


class SpatialTransformer(Module):
    """Localisation net -> ``theta`` -> :func:`affine_grid` -> :func:`grid_sample`.

    ``x``: ``(B, C, H, W)`` -> ``(B, C, H_out, W_out)`` (``output_size``, default ``(H, W)``).

    The localisation net is ``Linear(C*H*W, hidden) -> tanh -> Linear(hidden, 6)`` on the
    flattened image.  Its last layer starts with **zero weights and the identity as bias**,
    so an untrained transformer returns its input (up to float rounding) and training
    starts from "look at the whole image".  After a forward pass, ``self.theta`` and
    ``self.grid`` hold the last transform and sampling grid (for plotting).

    backward returns ``dL/dx`` along both paths: through the sampler (the pixels that were
    read) and through the localisation net (how moving the grid changes the loss).
    cache: ``(x, h, grid, taps)``: the input, the localisation net's output, the sampling grid and
    its taps (corner indices and weights, computed once for the forward and the backward).
    """

    def __init__(self, in_channels, height, width, hidden=32, align_corners=False, output_size=None):
        where = "SpatialTransformer"
        self.in_channels = check_positive_int(in_channels, "in_channels", where)
        self.height = check_positive_int(height, "height", where)
        self.width = check_positive_int(width, "width", where)
        self.align_corners = _check_align(align_corners, where)
        if output_size is None:
            output_size = (height, width)
        if (not isinstance(output_size, (tuple, list)) or len(output_size) != 2):
            raise ValueError(f"{where}: 'output_size' must be (H_out, W_out), got {output_size!r}")
        self.output_size = tuple(check_positive_int(s, "output_size", where) for s in output_size)
        self.fc1 = Linear(in_channels * height * width, check_positive_int(hidden, "hidden", where))
        self.fc2 = Linear(hidden, 6)
        self.fc2.weight.data[...] = 0  # start at theta = identity, whatever the image
        self.fc2.bias.data[...] = xp.asarray(_IDENTITY, dtype=self.fc2.bias.data.dtype)
        self.theta = self.grid = None

    def localize(self, x):
        """The localisation net alone: ``(theta (B, 2, 3), hidden activations)`` for images ``x``.

        It runs the layers' forward passes (and so replaces their caches): call
        :meth:`forward` again before a :meth:`backward`."""
        h = xp.tanh(self.fc1(x.reshape(x.shape[0], self.fc1.in_features)))   # (B = 0 works too)
        return self.fc2(h).reshape(-1, 2, 3), h

    def forward(self, x):
        check_array(x, "x", "SpatialTransformer", shape=(None, self.in_channels, self.height, self.width))
        B, C = x.shape[:2]
        theta, h = self.localize(x)  # where to look
        grid = affine_grid(theta, (B, C) + self.output_size, self.align_corners)
        taps = _taps(grid, self.height, self.width, "bilinear", self.align_corners, "zeros")
        out = _sample(x, grid, taps)  # read it: grid_sample(x, grid, align_corners=...)
        self.theta, self.grid = theta, grid
        self.cache = (x, h, grid, taps)
        return out

    def backward(self, grad_output):
        x, h, grid, taps = self.cache
        B, C = x.shape[:2]
        dx_sampled, dgrid = _sample_backward(grad_output, x, grid, taps)   # = grid_sample_backward(...)
        dtheta = affine_grid_backward(dgrid, (B, C) + self.output_size, self.align_corners)
        dh = self.fc2.backward(dtheta.reshape(B, 6))
        dflat = self.fc1.backward(dh * (1 - h * h))  # tanh' = 1 - tanh^2
        return dx_sampled + dflat.reshape(x.shape)  # both paths from x to the output

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, height={self.height}, width={self.width}, "
                f"output_size={self.output_size}, align_corners={self.align_corners}")
