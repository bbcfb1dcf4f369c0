"""Small synthetic data sets generated in code (nothing is downloaded).

Random numbers are drawn on the host by :class:`npattention.backend.Generator`, so a
seed gives the same data on NumPy and on CuPy; results are ``xp`` arrays.
"""
from ..backend import DEFAULT_DTYPE, Generator, xp
from ..validate import check_positive_int


def make_spiral(n_per_class=100, n_classes=3, noise=0.2, seed=0):
    """Interleaved 2-D spirals, one arm per class (the CS231n toy problem).

    Point ``i`` of class ``k`` (``r_i = i / (n_per_class - 1)`` from 0 to 1)::

        angle  = 4 * (k + r_i) + noise * N(0, 1)
        x_i    = (r_i * sin(angle), r_i * cos(angle))

    Not linearly separable: a linear classifier reaches about 50 % on 3 classes, a
    small MLP close to 100 %.

    Returns ``X`` of shape ``(n_classes * n_per_class, 2)`` (float32) and integer labels
    ``y`` of shape ``(n_classes * n_per_class,)`` (int64), ordered class by class.
    """
    check_positive_int(n_per_class, "n_per_class", "make_spiral")
    check_positive_int(n_classes, "n_classes", "make_spiral")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"make_spiral: 'noise' must be a number >= 0, got {noise!r}")
    rng = Generator(seed)
    r = xp.linspace(0.0, 1.0, n_per_class)[None, :]  # (1, N) radius
    k = xp.arange(n_classes, dtype=xp.float64)[:, None]  # (K, 1) class index
    # noise drawn on the host (same numbers on every backend), then moved
    angle = 4.0 * (k + r) + noise * rng.normal((n_classes, n_per_class), dtype=xp.float64)
    X = xp.stack([r * xp.sin(angle), r * xp.cos(angle)], axis=-1).reshape(-1, 2)
    y = xp.repeat(xp.arange(n_classes, dtype=xp.int64), n_per_class)
    return X.astype(DEFAULT_DTYPE), y
