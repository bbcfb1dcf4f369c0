"""A synthetic image task made in code: glyphs on noisy, cluttered backgrounds.

:func:`make_glyphs` draws ``n`` images of one of eight glyphs (plus, cross, ring, square,
triangle, L, T, bars), each defined as a shape on continuous coordinates ``(u, v)`` in
``[-1, 1]^2`` and rendered with 2x2 anti-aliasing.  Around it lie random line fragments
("clutter") and Gaussian pixel noise, so a classifier has to find the glyph and ignore the
rest -- the situation attention is meant for.  With ``distort=True`` each glyph is also
randomly rotated, scaled and translated (the spatial-transformer task); the affine map used
is returned so that a demo can compare it with what an STN learns.

Everything is drawn from a seeded :class:`npattention.backend.Generator`, so the same
seed gives the same images on NumPy and CuPy.

Coordinates follow PyTorch's ``affine_grid`` with ``align_corners=False``: pixel ``(i, j)``
of an ``S x S`` image has its centre at ``x = (2 j + 1) / S - 1`` (right) and
``y = (2 i + 1) / S - 1`` (down).
"""
import math

from ..backend import DEFAULT_DTYPE, Generator, xp
from ..validate import check_positive_int

#: class names, in label order
GLYPHS = ("plus", "cross", "ring", "square", "triangle", "L", "T", "bars")


def _glyph_masks(u, v, t):
    """Boolean masks of every glyph at glyph coordinates ``(u, v)`` (``t``: stroke half-width)."""
    r = xp.sqrt(u * u + v * v)
    box = xp.maximum(abs(u), abs(v))
    inside = box < 0.8
    d1, d2 = abs(u - v) / math.sqrt(2), abs(u + v) / math.sqrt(2)
    return (
        ((abs(u) < t) | (abs(v) < t)) & inside,                                  # plus
        ((d1 < t) | (d2 < t)) & (box < 0.7),                                     # cross
        (r > 0.75 - 2 * t) & (r < 0.75),                                         # ring
        (box > 0.75 - 2 * t) & (box < 0.75),                                     # square (outline)
        (v > -0.7) & (v < 0.7) & (abs(u) < 0.8 * (v + 0.7) / 1.4),               # triangle (apex up)
        ((abs(u + 0.55) < t) | (abs(v - 0.55) < t)) & inside,                    # L
        ((abs(v + 0.55) < t) | (abs(u) < t)) & inside,                           # T
        ((abs(v) < t) | (abs(v - 0.55) < t) | (abs(v + 0.55) < t)) & inside,     # bars (three)
    )


def _render_glyphs(labels, theta, size, stroke):
    """Anti-aliased coverage ``(N, size, size)`` of glyph ``labels[k]`` seen through ``theta``.

    ``theta[k]`` maps glyph coordinates to image coordinates, ``p = A q + c``; each pixel
    is pulled back with ``q = A^{-1} (p - c)`` and tested against the glyph's shape.
    """
    N = labels.shape[0]
    A, c = theta[:, :, :2], theta[:, :, 2]
    Ainv = xp.linalg.inv(A)                                        # (N, 2, 2)
    out = xp.zeros((N, size, size), dtype=DEFAULT_DTYPE)
    centres = (2 * xp.arange(size) + 1) / size - 1
    for dy in (-0.25, 0.25):          # 2x2 sub-pixel samples (a loop over 4 offsets, not pixels)
        for dx in (-0.25, 0.25):
            y = (centres + dy * 2 / size)[None, :, None]
            x = (centres + dx * 2 / size)[None, None, :]
            px, py = x - c[:, 0, None, None], y - c[:, 1, None, None]
            u = Ainv[:, 0, 0, None, None] * px + Ainv[:, 0, 1, None, None] * py
            v = Ainv[:, 1, 0, None, None] * px + Ainv[:, 1, 1, None, None] * py
            masks = xp.stack(_glyph_masks(u, v, stroke), axis=1)   # (N, n_glyphs, S, S)
            hit = xp.take_along_axis(masks, labels[:, None, None, None], axis=1)[:, 0]
            out += 0.25 * hit
    return out


def _segment_clutter(rng, n, k, size):
    """``(n, size, size)`` image of ``k`` random short line fragments per image."""
    if k == 0:
        return xp.zeros((n, size, size), dtype=DEFAULT_DTYPE)
    mid = rng.uniform((n, k, 2), -0.95, 0.95)
    angle = rng.uniform((n, k), 0.0, math.pi)
    half = rng.uniform((n, k), 0.06, 0.2)
    level = rng.uniform((n, k), 0.3, 0.9)
    centres = (2 * xp.arange(size) + 1) / size - 1
    x = centres[None, None, None, :] - mid[..., 0, None, None]
    y = centres[None, None, :, None] - mid[..., 1, None, None]
    ca, sa = xp.cos(angle)[..., None, None], xp.sin(angle)[..., None, None]
    along = x * ca + y * sa                                        # coordinate along the segment
    across = -x * sa + y * ca
    hit = (abs(along) < half[..., None, None]) & (abs(across) < 1.2 / size)
    return (hit * level[..., None, None]).max(axis=1).astype(DEFAULT_DTYPE)


def make_glyphs(n, size=28, channels=1, n_classes=8, clutter=4, noise=0.15, distort=False,
                scale=0.55, seed=0, return_theta=False):
    """``n`` images of glyphs on noisy, cluttered backgrounds, and their labels.

    Parameters
    ----------
    n : number of images.
    size : image side in pixels (16-32 is a good range).
    channels : 1 (grey) or any number of colour channels; with ``channels > 1`` the glyph
        and every clutter fragment get random colours, so colour tells nothing about the class.
    n_classes : use the first ``n_classes`` glyphs of :data:`GLYPHS` (2..8).
    clutter : line fragments scattered over each image (0 = none).
    noise : standard deviation of the Gaussian pixel noise.
    distort : False -> glyph centred, upright, at ``scale``; True -> random rotation
        (+-40 degrees), scale (x 0.75..1.2 of ``scale``) and translation (up to
        +-0.35 of the half-width), the spatial-transformer task.
    scale : glyph half-width as a fraction of the image half-width before distortion.
    seed : everything is drawn from ``Generator(seed)``.
    return_theta : also return ``theta`` ``(n, 2, 3)``, the affine map from the canonical
        glyph's coordinates to this image's coordinates (``p = theta[:, :, :2] q +
        theta[:, :, 2]``, ``affine_grid`` convention).  An STN whose grid uses exactly
        this ``theta`` samples the glyph back into its canonical pose.

    Returns
    -------
    images : ``(n, channels, size, size)`` float32 ``xp`` array (values around [0, 1]).
    labels : ``(n,)`` int64 ``xp`` array in ``[0, n_classes)``.
    theta : ``(n, 2, 3)`` float32, only with ``return_theta``.
    """
    where = "make_glyphs"
    check_positive_int(n, "n", where)
    check_positive_int(size, "size", where)
    check_positive_int(channels, "channels", where)
    if size < 8:
        raise ValueError(f"{where}: 'size' must be at least 8 pixels, got {size}")
    if not (isinstance(n_classes, int) and 2 <= n_classes <= len(GLYPHS)):
        raise ValueError(f"{where}: 'n_classes' must be an int in [2, {len(GLYPHS)}], got {n_classes!r}")
    if not (isinstance(clutter, int) and clutter >= 0):
        raise ValueError(f"{where}: 'clutter' must be a non-negative int, got {clutter!r}")
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"{where}: 'noise' must be a non-negative float, got {noise!r}")
    rng = Generator(seed)
    labels = rng.integers(0, n_classes, size=n)
    if distort:
        angle = rng.uniform((n,), -40.0, 40.0) * math.pi / 180
        s = scale * rng.uniform((n,), 0.75, 1.2)
        shift = rng.uniform((n, 2), -0.35, 0.35)
    else:
        angle = xp.zeros(n, dtype=DEFAULT_DTYPE)
        s = xp.full(n, scale, dtype=DEFAULT_DTYPE)
        shift = xp.zeros((n, 2), dtype=DEFAULT_DTYPE)
    cos, sin = xp.cos(angle) * s, xp.sin(angle) * s
    theta = xp.stack([xp.stack([cos, -sin, shift[:, 0]], axis=1),
                      xp.stack([sin, cos, shift[:, 1]], axis=1)], axis=1).astype(DEFAULT_DTYPE)
    stroke = 0.16 * max(1.0, 12.0 / (size * scale))   # keep strokes >= ~1 px on small images
    glyph = _render_glyphs(labels, theta, size, stroke)                       # (n, S, S)
    frags = _segment_clutter(rng, n, clutter, size)                           # (n, S, S)
    if channels == 1:
        images = xp.maximum(glyph, frags)[:, None]
    else:
        colour = rng.uniform((n, channels), 0.4, 1.0)[..., None, None]
        frag_colour = rng.uniform((n, channels), 0.4, 1.0)[..., None, None]
        images = xp.maximum(glyph[:, None] * colour, frags[:, None] * frag_colour)
    images = images + rng.normal(images.shape, 0.0, noise) if noise > 0 else images
    images = images.astype(DEFAULT_DTYPE)
    return (images, labels, theta) if return_theta else (images, labels)
