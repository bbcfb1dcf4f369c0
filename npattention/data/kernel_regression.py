"""1-D regression data for Nadaraya-Watson attention pooling (notebook 14).

``f(x) = 2 sin(x) + x^0.8`` on ``[0, 5]``; the training inputs are sorted uniform draws, the
outputs ``f(x) + noise``; the test inputs a regular grid with the noise-free ``f``.
"""
from ..backend import Generator, np, xp

__all__ = ["target_function", "make_kernel_regression"]


def target_function(x):
    """``2 sin(x) + x^0.8`` (on the host or the device, whatever ``x`` is)."""
    mod = np if isinstance(x, np.ndarray) else xp
    return 2 * mod.sin(x) + x ** 0.8


def make_kernel_regression(n_train=50, n_test=50, noise=0.5, seed=0):
    """``(x_train, y_train, x_test, y_test)``, float64 arrays on the active backend."""
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"make_kernel_regression: '{name}' must be a positive int, got {v!r}")
    g = Generator(seed).host
    x_train = np.sort(g.uniform(0, 5, n_train))
    y_train = target_function(x_train) + noise * g.standard_normal(n_train)
    x_test = np.linspace(0, 5, n_test)
    return tuple(xp.asarray(a, dtype=xp.float64) for a in (x_train, y_train, x_test, target_function(x_test)))
