"""SAGAN self-attention and the spatial transformer: exact values, edge cases, bad input.

(Finite-difference checks of every backward live in npattention/gradcheck_cases/vision_spatial.py.)
"""
import numpy as np
import pytest

from npattention.backend import to_numpy, xp
from npattention.vision.sagan import SelfAttention2d
from npattention.vision.stn import (AffineGrid, GridSample, SpatialTransformer, _as_index, _padded_index,
                                    affine_grid, affine_grid_backward, grid_sample, grid_sample_backward)

IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def _theta(rows, B=1, dtype=xp.float32):
    return xp.asarray(np.broadcast_to(np.asarray(rows, dtype=np.float64), (B, 2, 3)).copy(), dtype=dtype)


# ------------------------------------------------------------------ a direct reference
def _ref_point(img, u, v, align_corners):
    """Bilinear sample of img (C, H, W) at one normalised point (u, v), zeros outside,
    written with plain Python loops straight from the definition."""
    C, H, W = img.shape
    if align_corners:
        ix, iy = (u + 1) / 2 * (W - 1), (v + 1) / 2 * (H - 1)
    else:
        ix, iy = ((u + 1) * W - 1) / 2, ((v + 1) * H - 1) / 2
    x0, y0 = int(np.floor(ix)), int(np.floor(iy))
    out = np.zeros(C)
    for r in (y0, y0 + 1):
        for c in (x0, x0 + 1):
            weight = (1 - abs(ix - c)) * (1 - abs(iy - r))
            if 0 <= r < H and 0 <= c < W:
                out += weight * img[:, r, c]
    return out


@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_matches_direct_reference(rng, align_corners):
    img = rng.normal((2, 3, 4, 5), dtype=xp.float64)
    grid = rng.uniform((2, 3, 2, 2), -1.4, 1.4, dtype=xp.float64)
    grid[0, 0, 0] = xp.asarray([1.0, -1.0])  # exactly on the border
    grid[0, 0, 1] = xp.asarray([3.0, 0.2])  # far outside
    out = to_numpy(grid_sample(img, grid, align_corners=align_corners))
    img_h, grid_h = to_numpy(img), to_numpy(grid)
    for b in range(2):
        for i in range(3):
            for j in range(2):
                ref = _ref_point(img_h[b], *grid_h[b, i, j], align_corners)
                np.testing.assert_allclose(out[b, :, i, j], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(out[0, :, 0, 1], 0.0)  # outside the image reads zeros


def test_grid_sample_known_values():
    """The numbers PyTorch's grid_sample gives for [[1, 2], [3, 4]] (bilinear, zeros)."""
    img = xp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
    pts = xp.asarray([[[[0.0, 0.0], [-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-0.5, 0.5]]]])
    out_false = to_numpy(grid_sample(img, pts, align_corners=False))[0, 0, 0]
    out_true = to_numpy(grid_sample(img, pts, align_corners=True))[0, 0, 0]
    # align_corners=False: +-1 are the outer pixel edges, so a corner point mixes 1/4 pixel, 3/4 zeros;
    # (-0.5, 0.5) is exactly the centre of pixel (row 1, col 0).
    np.testing.assert_allclose(out_false, [2.5, 0.25, 1.0, 0.5, 3.0])
    # align_corners=True: +-1 are the centres of the corner pixels.
    np.testing.assert_allclose(out_true, [2.5, 1.0, 4.0, 2.0, 2.75])


def test_affine_grid_values():
    g = to_numpy(affine_grid(_theta(IDENTITY), (1, 1, 2, 4), align_corners=False))
    np.testing.assert_array_equal(g[0, :, :, 0], [[-0.75, -0.25, 0.25, 0.75]] * 2)
    np.testing.assert_array_equal(g[0, :, :, 1], [[-0.5] * 4, [0.5] * 4])
    g = to_numpy(affine_grid(_theta(IDENTITY), (1, 1, 3, 2), align_corners=True))
    np.testing.assert_array_equal(g[0, :, :, 0], [[-1, 1]] * 3)
    np.testing.assert_array_equal(g[0, :, :, 1], [[-1, -1], [0, 0], [1, 1]])
    # a general theta: grid = theta @ [x, y, 1] at each pixel centre
    theta = np.array([[[0.5, -1.0, 0.25], [2.0, 0.3, -0.1]]])
    g = to_numpy(affine_grid(xp.asarray(theta), (1, 2, 3, 5), align_corners=False))
    xs, ys = (2 * np.arange(5) + 1) / 5 - 1, (2 * np.arange(3) + 1) / 3 - 1
    for h in range(3):
        for w in range(5):
            np.testing.assert_allclose(g[0, h, w], theta[0] @ [xs[w], ys[h], 1.0], rtol=1e-14)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("H, W", [(4, 8), (2, 16), (1, 1), (1, 4), (3, 5), (5, 7), (28, 28), (13, 1)])
def test_identity_theta_returns_input_exactly(rng, align_corners, H, W):
    """Exact at every size: pixel indices within a few ulps of an integer are snapped."""
    for dtype in (np.float32, np.float64):
        x = rng.normal((2, 3, H, W)).astype(dtype)
        grid = affine_grid(_theta(IDENTITY, 2).astype(dtype), x.shape, align_corners=align_corners)
        np.testing.assert_array_equal(to_numpy(grid_sample(x, grid, align_corners=align_corners)), to_numpy(x))


@pytest.mark.parametrize("align_corners, H, W", [(False, 4, 8), (True, 5, 5)])
def test_whole_pixel_translation_shifts_the_image(rng, align_corners, H, W):
    x = rng.normal((1, 2, H, W))
    px = 2 / (W - 1) if align_corners else 2 / W  # one pixel in normalised units along x
    py = 2 / (H - 1) if align_corners else 2 / H
    # read from 1 pixel to the right (content moves left) and 2 pixels up (content moves down)
    theta = _theta([[1, 0, px], [0, 1, -2 * py]])
    out = to_numpy(grid_sample(x, affine_grid(theta, x.shape, align_corners), align_corners=align_corners))
    expected = np.zeros_like(to_numpy(x))
    expected[:, :, 2:, :-1] = to_numpy(x)[:, :, :-2, 1:]  # zeros come in at the top and right
    np.testing.assert_array_equal(out, expected)


def test_border_points_and_one_sided_gradient():
    img = xp.asarray([[[[1.0, 2.0, 5.0]]]])  # (1, 1, 1, 3)
    grid = xp.asarray([[[[1.0, 0.0]]]])  # exactly on the right border
    # align_corners=True: the centre of the last pixel
    assert float(grid_sample(img, grid, align_corners=True)[0, 0, 0, 0]) == 5.0
    # align_corners=False: the outer edge of the last pixel, halfway to the zero padding
    assert float(grid_sample(img, grid, align_corners=False)[0, 0, 0, 0]) == 2.5
    # at a kink the gradient is the one from the right (floor), as in PyTorch:
    # for align_corners=True, moving right from the last centre fades 5 -> 0 over one pixel (= 2/(W-1) = 1 unit)
    _, dgrid = grid_sample_backward(xp.ones((1, 1, 1, 1)), img, grid, align_corners=True)
    np.testing.assert_allclose(to_numpy(dgrid)[0, 0, 0], [-5.0, 0.0])


def test_one_pixel_images(rng):
    img = xp.asarray([[[[3.0]], [[-2.0]]]])  # (1, 2, 1, 1)
    grid = xp.asarray([[[[0.0, 0.0], [0.5, 0.0], [-0.4, 0.8], [2.5, 0.0]]]])
    # align_corners=True: every point in [-1, 1] maps onto the one pixel -> its value
    out = to_numpy(grid_sample(img, grid, align_corners=True))
    np.testing.assert_array_equal(out[0, :, 0], [[3.0, 3.0, 3.0, 3.0], [-2.0, -2.0, -2.0, -2.0]])
    # align_corners=False: the pixel covers [-1, 1]; the value fades to 0 at distance 1 (= 2 units)
    out = to_numpy(grid_sample(img, grid, align_corners=False))
    np.testing.assert_allclose(out[0, 0, 0], [3.0, 3.0 * 0.75, 3.0 * 0.8 * 0.6, 0.0])
    # the grid gradient is 0 for align_corners=True (every point maps to index 0)
    _, dgrid = grid_sample_backward(xp.ones((1, 2, 1, 4)), img, grid, align_corners=True)
    np.testing.assert_array_equal(to_numpy(dgrid), 0.0)
    # a 1x1 output grid from affine_grid sits at the centre 0
    g = affine_grid(_theta([[2.0, 0.0, 0.1], [0.0, 2.0, -0.2]]), (1, 1, 1, 1), align_corners=False)
    np.testing.assert_allclose(to_numpy(g).reshape(-1), [0.1, -0.2], rtol=1e-6)


def test_affine_grid_backward_is_sum_over_pixels(rng):
    dgrid = rng.normal((2, 3, 4, 2), dtype=xp.float64)
    dtheta = to_numpy(affine_grid_backward(dgrid, (2, 1, 3, 4), align_corners=True))
    base = to_numpy(affine_grid(_theta(IDENTITY, 2, xp.float64), (2, 1, 3, 4), True))[0]  # (H, W, 2)
    d = to_numpy(dgrid)
    np.testing.assert_allclose(dtheta[:, :, 0], np.einsum("bhwj,hw->bj", d, base[..., 0]))
    np.testing.assert_allclose(dtheta[:, :, 1], np.einsum("bhwj,hw->bj", d, base[..., 1]))
    np.testing.assert_allclose(dtheta[:, :, 2], d.sum(axis=(1, 2)))


def test_grid_sample_backward_input_is_adjoint(rng):
    """<grid_sample(x), g> = <x, d input>: the input gradient is the exact transpose
    (repeated pixels are summed, not overwritten)."""
    x = rng.normal((2, 2, 3, 4), dtype=xp.float64)
    grid = rng.uniform((2, 5, 6, 2), -0.9, 0.9, dtype=xp.float64) * 0.1  # many points share pixels
    g = rng.normal((2, 2, 5, 6), dtype=xp.float64)
    dx, _ = grid_sample_backward(g, x, grid, align_corners=False)
    lhs = float(xp.sum(grid_sample(x, grid) * g))
    np.testing.assert_allclose(lhs, float(xp.sum(x * dx)), rtol=1e-12)


def test_spatial_transformer_starts_at_identity(rng):
    stn = SpatialTransformer(2, 4, 8, hidden=5)
    x = rng.normal((3, 2, 4, 8))
    out = stn(x)
    np.testing.assert_array_equal(to_numpy(stn.theta), np.broadcast_to(IDENTITY, (3, 2, 3)))
    np.testing.assert_array_equal(to_numpy(out), to_numpy(x))
    # at the identity the sampler path of dx is exactly g (each pixel read once with weight 1);
    # the localisation path adds what moving the grid would change
    g = rng.normal(out.shape)
    dx = stn.backward(g)
    assert dx.shape == x.shape
    assert float(xp.abs(stn.fc2.weight.grad).sum()) > 0  # theta gets a gradient: it can learn
    assert float(xp.abs(stn.fc1.weight.grad).sum()) == 0  # (fc2 weights are 0: nothing flows to fc1 yet)
    np.testing.assert_array_equal(to_numpy(dx), to_numpy(g))


def test_spatial_transformer_output_size(rng):
    stn = SpatialTransformer(1, 6, 6, output_size=(3, 2))
    assert stn(rng.normal((2, 1, 6, 6))).shape == (2, 1, 3, 2)
    assert stn.grid.shape == (2, 3, 2, 2)


def test_modules_wrap_the_functions(rng):
    theta = rng.normal((2, 2, 3))
    np.testing.assert_array_equal(to_numpy(AffineGrid(3, 4, align_corners=True)(theta)),
                                  to_numpy(affine_grid(theta, (2, 7, 3, 4), align_corners=True)))
    x, grid = rng.normal((2, 1, 3, 3)), rng.uniform((2, 2, 2, 2), -1, 1)
    gs = GridSample()
    np.testing.assert_array_equal(to_numpy(gs(x, grid)), to_numpy(grid_sample(x, grid)))
    dx, dgrid = gs.backward(xp.ones((2, 1, 2, 2), dtype=x.dtype))
    assert dx.shape == x.shape and dgrid.shape == grid.shape


# ------------------------------------------------------------------ the plain reference sampler
# The first vectorised grid_sample / grid_sample_backward, kept here as the obviously-correct
# reference for the optimised ones: channels-last gathers image[b, row, col] with three index
# arrays, one pass per corner, per-corner masks and numpy.add.at for the scatter.  The
# coordinate helpers (_padded_index, _as_index) are shared with the library.
def _ref_bilinear_taps(grid, H, W, align_corners, padding_mode):
    ix, slope_x = _padded_index(grid[..., 0], W, align_corners, padding_mode)
    iy, slope_y = _padded_index(grid[..., 1], H, align_corners, padding_mode)
    x0, y0 = np.floor(ix), np.floor(iy)
    fx, fy = ix - x0, iy - y0
    taps = []
    for dy, wy, dwy in ((0, 1 - fy, -1.0), (1, fy, 1.0)):
        for dx, wx, dwx in ((0, 1 - fx, -1.0), (1, fx, 1.0)):
            col, row = x0 + dx, y0 + dy
            inside = (col >= 0) & (col <= W - 1) & (row >= 0) & (row <= H - 1)
            taps.append((_as_index(row, H), _as_index(col, W), wy * wx, inside, dwx * wy, dwy * wx))
    return taps, slope_x, slope_y


def _ref_nearest_tap(grid, H, W, align_corners, padding_mode):
    ix, _ = _padded_index(grid[..., 0], W, align_corners, padding_mode)
    iy, _ = _padded_index(grid[..., 1], H, align_corners, padding_mode)
    col, row = np.rint(ix), np.rint(iy)
    inside = (col >= 0) & (col <= W - 1) & (row >= 0) & (row <= H - 1)
    return _as_index(row, H), _as_index(col, W), inside & np.isfinite(ix) & np.isfinite(iy)


def ref_grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
    B, C, H, W = input.shape
    image = input.transpose(0, 2, 3, 1)
    b = np.arange(B)[:, None, None]
    if mode == "nearest":
        row, col, inside = _ref_nearest_tap(grid, H, W, align_corners, padding_mode)
        return (inside[..., None] * image[b, row, col]).transpose(0, 3, 1, 2)
    taps, _, _ = _ref_bilinear_taps(grid, H, W, align_corners, padding_mode)
    out = 0
    for row, col, weight, inside, _, _ in taps:
        out = out + (weight * inside)[..., None] * image[b, row, col]
    return out.transpose(0, 3, 1, 2)


def ref_grid_sample_backward(grad_output, input, grid, align_corners=False, mode="bilinear", padding_mode="zeros"):
    B, C, H, W = input.shape
    image = input.transpose(0, 2, 3, 1)
    g = grad_output.transpose(0, 2, 3, 1)
    b = np.broadcast_to(np.arange(B)[:, None, None], grid.shape[:3])
    grad_image = np.zeros_like(image)
    if mode == "nearest":
        row, col, inside = _ref_nearest_tap(grid, H, W, align_corners, padding_mode)
        np.add.at(grad_image, (b, row, col), inside[..., None] * g)
        return grad_image.transpose(0, 3, 1, 2), np.zeros_like(grid)
    taps, slope_x, slope_y = _ref_bilinear_taps(grid, H, W, align_corners, padding_mode)
    grad_ix = np.zeros(grid.shape[:3], dtype=grid.dtype)
    grad_iy = np.zeros(grid.shape[:3], dtype=grid.dtype)
    for row, col, weight, inside, dw_dix, dw_diy in taps:
        np.add.at(grad_image, (b, row, col), (weight * inside)[..., None] * g)
        g_dot_value = np.sum(g * image[b, row, col], axis=-1) * inside
        grad_ix += dw_dix * g_dot_value
        grad_iy += dw_diy * g_dot_value
    return grad_image.transpose(0, 3, 1, 2), np.stack([grad_ix * slope_x, grad_iy * slope_y], axis=-1)


def _awkward_grid(rng, B, Ho, Wo, reach=1.6):
    """Random points in [-reach, reach]^2 plus the awkward ones: exact borders and pixel
    centres, far outside, NaN in x, in y and in both, and a run of repeated points."""
    grid = to_numpy(rng.uniform((B, Ho, Wo, 2), -reach, reach, dtype=xp.float64)).copy()
    special = [(np.nan, 0.1), (1.0, -1.0), (-1.0, 1.0), (0.0, 0.0), (7.0, 0.3), (-0.2, -9.0),
               (0.4, np.nan), (np.nan, np.nan), (0.25, 0.25), (0.25, 0.25), (0.25, 0.25)]
    flat = grid.reshape(-1, 2)
    for k, point in enumerate(special[:len(flat)]):
        flat[k] = point
    return grid


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape, out_hw", [((2, 3, 4, 5), (3, 4)), ((1, 1, 7, 3), (5, 6)), ((3, 2, 1, 4), (2, 3)),
                                           ((0, 2, 3, 3), (2, 2)), ((1, 4, 6, 6), (1, 1))])
def test_fast_grid_sample_matches_the_plain_reference(rng, mode, padding_mode, align_corners, shape, out_hw):
    """Output, input gradient and grid gradient of the optimised sampler against the plain
    reference in float64, on every option, odd sizes, 1-pixel axes, B = 0 and B = 1, with
    points outside the image and NaN in the grid (same NaN positions, no IndexError)."""
    B, C = shape[:2]
    x = rng.normal(shape, dtype=xp.float64)
    grid = xp.asarray(_awkward_grid(rng, B, *out_hw))
    g = rng.normal((B, C) + out_hw, dtype=xp.float64)
    kw = dict(mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    out = grid_sample(x, grid, **kw)
    dx, dgrid = grid_sample_backward(g, x, grid, **kw)
    assert out.shape == (B, C) + out_hw and dx.shape == x.shape and dgrid.shape == grid.shape
    assert out.dtype == dx.dtype == dgrid.dtype == xp.float64
    ref_out = ref_grid_sample(to_numpy(x), to_numpy(grid), **kw)
    ref_dx, ref_dgrid = ref_grid_sample_backward(to_numpy(g), to_numpy(x), to_numpy(grid), **kw)
    for got, want in ((out, ref_out), (dx, ref_dx), (dgrid, ref_dgrid)):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-12, equal_nan=True)
    if B and mode == "bilinear":
        assert np.isnan(to_numpy(out)).any()   # the NaN points give NaN
    # the module computes the taps once (forward) and reuses them (backward): same numbers
    module = GridSample(align_corners, mode, padding_mode)
    np.testing.assert_array_equal(to_numpy(module(x, grid)), to_numpy(out))
    for got, want in zip(module.backward(g), (dx, dgrid)):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))


@pytest.mark.parametrize("B, H, W", [(0, 3, 4), (1, 1, 1), (3, 5, 7)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_backward_one_gemm_matches_the_stacked_product(rng, B, H, W, align_corners):
    """The one (B*2, H*W) @ (H*W, 3) product equals the plain stacked one, (2, H*W) @ (H*W, 3) per image."""
    dgrid = rng.normal((B, H, W, 2), dtype=xp.float64)
    base = to_numpy(affine_grid(_theta(IDENTITY, 1, xp.float64), (1, 1, H, W), align_corners)).reshape(H * W, 2)
    base = np.concatenate([base, np.ones((H * W, 1))], axis=1)   # rows [x_w, y_h, 1]
    want = to_numpy(dgrid).reshape(B, H * W, 2).transpose(0, 2, 1) @ base
    got = to_numpy(affine_grid_backward(dgrid, (B, 1, H, W), align_corners))
    assert got.shape == (B, 2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_fast_grid_sample_float32_matches_the_reference(rng):
    """float32 (the benchmark's dtype) and a float32 grid with a float64 image keep their dtypes."""
    x = rng.normal((2, 3, 8, 9))
    grid = rng.uniform((2, 5, 7, 2), -1.2, 1.2)
    g = rng.normal((2, 3, 5, 7))
    out = grid_sample(x, grid)
    dx, dgrid = grid_sample_backward(g, x, grid)
    assert out.dtype == dx.dtype == dgrid.dtype == xp.float32
    ref_dx, ref_dgrid = ref_grid_sample_backward(to_numpy(g), to_numpy(x), to_numpy(grid))
    np.testing.assert_allclose(to_numpy(out), ref_grid_sample(to_numpy(x), to_numpy(grid)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dx), ref_dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(dgrid), ref_dgrid, rtol=1e-4, atol=1e-4)
    x64 = x.astype(xp.float64)
    assert grid_sample(x64, grid).dtype == grid_sample_backward(g, x64, grid)[0].dtype == xp.float64
    assert grid_sample_backward(g, x64, grid)[1].dtype == xp.float32


# ------------------------------------------------------------------ bad input
def test_bad_input_gives_clear_errors(rng):
    with pytest.raises(ValueError, match="'input' must have shape"):
        grid_sample(rng.normal((3, 4, 4)), rng.normal((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="'grid' must have shape"):
        grid_sample(rng.normal((1, 1, 4, 4)), rng.normal((1, 2, 2, 3)))
    with pytest.raises(ValueError, match="'grid' must have shape .* with B=2"):
        grid_sample(rng.normal((2, 1, 4, 4)), rng.normal((3, 2, 2, 2)))
    with pytest.raises(ValueError, match="'theta' must have shape \\(2, 2, 3\\)"):
        affine_grid(rng.normal((2, 3, 3)), (2, 1, 4, 4))
    with pytest.raises(ValueError, match="'theta' must have shape"):
        affine_grid(rng.normal((2, 6)), (2, 1, 4, 4))
    with pytest.raises(ValueError, match="'size' must be \\(B, C, H, W\\)"):
        affine_grid(rng.normal((2, 2, 3)), (2, 4, 4))
    with pytest.raises(ValueError, match="'mode' must be 'bilinear' or 'nearest'"):   # (modes: test_conventions.py)
        grid_sample(rng.normal((1, 1, 4, 4)), rng.normal((1, 2, 2, 2)), mode="bicubic")
    with pytest.raises(ValueError, match="'padding_mode' must be 'zeros', 'border' or 'reflection'"):
        grid_sample(rng.normal((1, 1, 4, 4)), rng.normal((1, 2, 2, 2)), padding_mode="circular")
    with pytest.raises(TypeError, match="'align_corners' must be True or False"):
        grid_sample(rng.normal((1, 1, 4, 4)), rng.normal((1, 2, 2, 2)), align_corners=1)
    with pytest.raises(TypeError, match="'theta' must be a float array"):
        affine_grid(xp.zeros((1, 2, 3), dtype=xp.int64), (1, 1, 2, 2))
    stn = SpatialTransformer(1, 4, 4)
    with pytest.raises(ValueError, match="SpatialTransformer: 'x' must have shape \\(\\*, 1, 4, 4\\)"):
        stn(rng.normal((2, 4, 4)))
    with pytest.raises(ValueError, match="'x' must have shape"):
        stn(rng.normal((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="SelfAttention2d: 'x' must have shape \\(\\*, 16, \\*, \\*\\)"):
        SelfAttention2d(16)(rng.normal((2, 16, 9)))
    with pytest.raises(ValueError, match="'in_dim' must be at least reduction=8"):
        SelfAttention2d(4)
    with pytest.raises(RuntimeError, match="before forward"):
        SpatialTransformer(1, 2, 2).backward(rng.normal((1, 1, 2, 2)))


# ------------------------------------------------------------------ SAGAN
def test_sagan_gamma_zero_is_identity_and_rows_sum_to_one(rng):
    m = SelfAttention2d(16)
    x = rng.normal((2, 16, 3, 5))
    out, attention = m(x)
    assert float(m.gamma.data[0]) == 0.0
    np.testing.assert_array_equal(to_numpy(out), to_numpy(x))
    assert attention.shape == (2, 15, 15)
    np.testing.assert_allclose(to_numpy(attention.sum(axis=-1)), 1.0, rtol=1e-6)
    assert float(attention.min()) > 0
    # gamma = 0: only gamma (and the residual) get gradient, so training can switch attention on
    g = rng.normal(out.shape)
    dx = m.backward(g)
    np.testing.assert_array_equal(to_numpy(dx), to_numpy(g))
    assert abs(float(m.gamma.grad[0])) > 1e-3
    assert float(xp.abs(m.value_conv.weight.grad).sum()) == 0.0


def test_sagan_matches_the_notes_formula(rng):
    """The PyTorch snippet of the notes, transcribed with einsum (channels-first, B*C*N)."""
    m = SelfAttention2d(8).double()
    m.gamma.data[...] = 0.8
    x = to_numpy(rng.normal((2, 8, 3, 4), dtype=xp.float64))
    B, C, H, W = x.shape
    flat = x.reshape(B, C, H * W)
    conv = lambda lin: (np.einsum("oc,bcn->bon", to_numpy(lin.weight.data), flat)
                        + to_numpy(lin.bias.data)[None, :, None])
    proj_query = conv(m.query_conv).transpose(0, 2, 1)  # B, N, C/8
    proj_key = conv(m.key_conv)  # B, C/8, N
    energy = proj_query @ proj_key
    attention = np.exp(energy - energy.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    proj_value = conv(m.value_conv)  # B, C, N
    expected = 0.8 * (proj_value @ attention.transpose(0, 2, 1)).reshape(B, C, H, W) + x
    out, att = m(xp.asarray(x))
    np.testing.assert_allclose(to_numpy(att), attention, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ training
def test_stn_learns_to_undo_translations():
    """Same budget, same classifier: the STN in front beats the plain MLP on distorted glyphs,
    and its learned translation follows the true one."""
    from npattention.demos.stn import train_pair

    res = train_pair(size=16, n_train=1500, n_test=600, epochs=6, lr=2e-3, progress=False)
    base, stn = res["baseline"]["test_acc"], res["stn"]["test_acc"]
    assert stn >= 0.55, (base, stn)  # 8 classes: chance is 0.125
    assert stn >= base + 0.15, (base, stn)
    assert res["agreement"]["tx"] > 0.8 and res["agreement"]["ty"] > 0.8, res["agreement"]


def test_stn_demo_writes_its_outputs(tmp_path, capsys):
    from npattention.demos.stn import main

    assert main(["--fast", "--epochs", "1", "--n-train", "300", "--no-baseline", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"stn_before_after.png", "stn_grids.png", "stn_training.png", "stn_checkpoint.npz"} <= names
    assert "held-out accuracy" in capsys.readouterr().out
