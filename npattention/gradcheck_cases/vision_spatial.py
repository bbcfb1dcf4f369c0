"""Cases for SAGAN self-attention and the spatial transformer (npattention/vision/{sagan,stn}.py).

Bilinear sampling is piecewise linear in the sampling coordinates: its derivative jumps
where a point crosses a pixel's row or column.  Central differences straddling such a
kink would be wrong, so the random grids here keep every point at least 0.05 pixel away
from integer pixel coordinates (the finite-difference step moves it by about 1e-6).
"""
from ..backend import to_numpy, xp
from ..gradcheck import Case, register
from ..vision.sagan import SelfAttention2d
from ..vision.stn import AffineGrid, GridSample, SpatialTransformer, _to_pixels


def _off_integer(pixels, margin=0.05):
    frac = pixels - xp.floor(pixels)
    return bool(to_numpy(xp.all((frac > margin) & (frac < 1 - margin))))


def _grid_away_from_kinks(rng, shape, H, W, align_corners, low=-1.3, high=1.3):
    """A random grid ``(B, H_out, W_out, 2)`` in ``[low, high]`` (so some points fall outside)
    whose pixel coordinates keep off the integers."""
    while True:
        grid = rng.uniform(shape, low, high, dtype=xp.float64)
        ix, _ = _to_pixels(grid[..., 0], W, align_corners)
        iy, _ = _to_pixels(grid[..., 1], H, align_corners)
        # a 1-pixel axis with align_corners=True maps everything to 0: no kink can be crossed
        ok_x = (W == 1 and align_corners) or _off_integer(ix)
        ok_y = (H == 1 and align_corners) or _off_integer(iy)
        if ok_x and ok_y:
            return grid


@register("SelfAttention2d")
def _sagan_cases(rng):
    for C, H, W, B, gamma, label in ((8, 2, 3, 2, 0.7, "(2, 8, 2, 3), C/8 = 1"),
                                     (16, 3, 2, 1, -1.3, "(1, 16, 3, 2), C/8 = 2")):
        m = SelfAttention2d(C)
        m.gamma.data[...] = gamma  # gamma != 0, so the attention path is checked too
        yield Case(m, (rng.normal((B, C, H, W)),), label=label + f", gamma={gamma}",
                   options={"max_entries": 24})
    m = SelfAttention2d(4, reduction=2)
    m.gamma.data[...] = 0.5
    yield Case(m, (rng.normal((2, 4, 1, 1)),), label="(2, 4, 1, 1) one pixel, reduction=2")


@register("AffineGrid")
def _affine_grid_cases(rng):
    yield Case(AffineGrid(3, 4), (rng.normal((2, 2, 3)),), label="3x4, align_corners=False")
    yield Case(AffineGrid(2, 5, align_corners=True), (rng.normal((1, 2, 3)),), label="2x5, align_corners=True")
    yield Case(AffineGrid(1, 1, align_corners=True), (rng.normal((2, 2, 3)),), label="1x1, align_corners=True")


@register("GridSample")
def _grid_sample_cases(rng):
    for (B, C, H, W, Ho, Wo), ac in (((2, 2, 4, 5, 3, 3), False),
                                      ((1, 3, 3, 4, 2, 5), True),
                                      ((2, 1, 1, 1, 2, 2), False),
                                      ((1, 2, 1, 3, 2, 2), True)):
        grid = _grid_away_from_kinks(rng, (B, Ho, Wo, 2), H, W, ac)
        yield Case(GridSample(align_corners=ac), (rng.normal((B, C, H, W)), grid),
                   label=f"input {(B, C, H, W)}, grid {(B, Ho, Wo, 2)}, align_corners={ac}",
                   options={"max_entries": 30})
    # modes and paddings: grid points off the integer and half-integer pixel positions (the
    # kinks of floor, clipping, reflection and rounding)
    for mode, padding, ac in (("bilinear", "border", False), ("bilinear", "reflection", False),
                              ("bilinear", "reflection", True), ("nearest", "zeros", False),
                              ("nearest", "reflection", True)):
        H, W = 3, 4
        while True:
            grid = rng.uniform((1, 2, 3, 2), -1.6, 1.6, dtype=xp.float64)
            pix = xp.stack([_to_pixels(grid[..., 0], W, ac)[0], _to_pixels(grid[..., 1], H, ac)[0]])
            frac = 2 * pix - xp.floor(2 * pix)                      # position within a half pixel
            if bool(to_numpy(xp.all((frac > 0.1) & (frac < 0.9)))):
                break
        yield Case(GridSample(align_corners=ac, mode=mode, padding_mode=padding), (rng.normal((1, 2, H, W)), grid),
                   label=f"mode={mode}, padding_mode={padding}, align_corners={ac}", options={"max_entries": 30})


def _perturbed_stn(rng, C, H, W, ac, **kw):
    """A SpatialTransformer moved off the identity, whose grid keeps off the pixel kinks."""
    x = rng.normal((2, C, H, W), dtype=xp.float64)
    while True:
        m = SpatialTransformer(C, H, W, align_corners=ac, **kw).double()
        m.fc2.weight.data[...] = rng.normal(m.fc2.weight.shape, scale=0.3, dtype=xp.float64)
        m.fc2.bias.data[...] += rng.normal((6,), scale=0.2, dtype=xp.float64)
        m(x)
        Ho, Wo = m.output_size
        ix, _ = _to_pixels(m.grid[..., 0], W, ac)
        iy, _ = _to_pixels(m.grid[..., 1], H, ac)
        if _off_integer(ix, 0.02) and _off_integer(iy, 0.02):
            return m, x


@register("SpatialTransformer")
def _stn_cases(rng):
    m, x = _perturbed_stn(rng, 1, 4, 5, False, hidden=3)
    yield Case(m, (x,), label="(2, 1, 4, 5), hidden=3, align_corners=False", options={"max_entries": 20})
    m, x = _perturbed_stn(rng, 2, 3, 3, True, hidden=4, output_size=(2, 4))
    yield Case(m, (x,), label="(2, 2, 3, 3) -> 2x4, hidden=4, align_corners=True", options={"max_entries": 20})
