"""The array backend: the one module in npattention that imports NumPy or CuPy.

Everything else writes ``from npattention.backend import xp`` and uses ``xp`` the way
it would use ``numpy``.  The backend is chosen **once, at import time**, from the
environment variable ``NPATTENTION_BACKEND``:

=========  =============================================================
``numpy``  the default: NumPy on the CPU
``cupy``   CuPy on a CUDA GPU; an error (never a silent fallback) if CuPy
           or a working device is missing
``auto``   CuPy when it imports and a CUDA device answers, else NumPy
=========  =============================================================

To switch, set the variable *before* Python starts (or restart the notebook kernel)::

    NPATTENTION_BACKEND=cupy python -m npattention demo

Helpers here hide the few places where CuPy and NumPy differ (see docs/backend.md):
moving arrays to and from the host, random numbers that are identical on both
backends (drawn on the host with NumPy, then moved), and scatter-add.
"""
import math
import os
import sys

import numpy

_GPU_INSTALL_HINT = 'install it with: pip install "npattention[gpu]"'


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine."""


def _load_cupy():
    """Import CuPy and touch the device; raise BackendError saying what is missing."""
    try:
        import cupy
    except ImportError as err:
        raise BackendError(
            f"NPATTENTION_BACKEND=cupy but CuPy is not installed ({err}); {_GPU_INSTALL_HINT}, "
            "or unset NPATTENTION_BACKEND to use NumPy"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken
        raise BackendError(
            f"NPATTENTION_BACKEND=cupy but no CUDA device can be used ({type(err).__name__}: {err}); "
            "check the NVIDIA driver and that the CuPy wheel matches your CUDA version, "
            "or unset NPATTENTION_BACKEND to use NumPy"
        ) from None
    if count < 1:
        raise BackendError(
            "NPATTENTION_BACKEND=cupy but CuPy sees no CUDA device; "
            "unset NPATTENTION_BACKEND to use NumPy"
        )
    return cupy


def cupy_available():
    """True when CuPy imports and a CUDA device answers (whatever backend is active)."""
    try:
        _load_cupy()
        return True
    except BackendError:
        return False


def select_backend(name):
    """Return ``(name, array_module)`` for a backend name; used once at import."""
    name = (name or "numpy").strip().lower()
    if name == "numpy":
        return "numpy", numpy
    if name == "cupy":
        return "cupy", _load_cupy()
    if name == "auto":
        try:
            return "cupy", _load_cupy()
        except BackendError:
            return "numpy", numpy
    raise BackendError(
        f"NPATTENTION_BACKEND must be 'numpy', 'cupy' or 'auto', got {name!r}"
    )


def _is_cli():
    """Is this import the start of ``python -m npattention ...``?"""
    argv = list(getattr(sys, "orig_argv", []))
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "npattention"


#: name of the backend in use: ``"numpy"`` or ``"cupy"``
try:
    BACKEND, xp = select_backend(os.environ.get("NPATTENTION_BACKEND"))
except BackendError as _err:
    if not _is_cli():
        raise
    # the command line reports a bad environment like a bad argument: one line, status 2
    sys.stderr.write(f"python -m npattention: error: {_err}\n")
    raise SystemExit(2) from None

#: host NumPy, for host-side work only (saving files, comparing host copies); array
#: code uses ``xp``.  Importing numpy anywhere else in the package is not allowed.
np = numpy

#: dtype of parameters and of data made by the library (gradcheck works in float64)
DEFAULT_DTYPE = xp.float32


# ---------------------------------------------------------------- host <-> device
def to_numpy(a):
    """Return ``a`` as a NumPy array on the host (for plotting, printing, saving)."""
    if BACKEND == "cupy" and isinstance(a, xp.ndarray):
        return a.get()
    return numpy.asarray(a)


def asarray(a, dtype=None):
    """Move host data (lists, NumPy arrays, scalars) to the backend as an ``xp`` array."""
    return xp.asarray(a, dtype=dtype)


def is_array(a):
    """True for an array of the active backend (NumPy arrays count on NumPy only)."""
    return isinstance(a, xp.ndarray)


def is_float_array(a):
    return is_array(a) and a.dtype.kind == "f"


def scalar(a):
    """A 0-d array (or Python number) as a Python float: the one allowed sync point."""
    return float(a)


def synchronize():
    """Wait until queued GPU work is done (for timing); a no-op on NumPy."""
    if BACKEND == "cupy":
        xp.cuda.Device().synchronize()


# ---------------------------------------------------------------- CuPy/NumPy differences
def add_at(target, indices, values):
    """In-place ``target[indices] += values`` that adds repeated indices up
    (``numpy.add.at``; on CuPy ``cupyx.scatter_add``).

    ``indices`` is anything ``numpy.add.at`` takes; ``values`` broadcasts to ``target[indices]``.
    On NumPy, the common scatters (integer index arrays into a C-contiguous array) become the
    one case ``numpy.add.at`` runs fast: a 1-D target indexed by one flat array (see
    :func:`_row_index`).  The additions are the same, in the same order, so the result is bit
    for bit that of ``numpy.add.at(target, indices, values)``.
    """
    if BACKEND == "cupy":
        import cupyx

        cupyx.scatter_add(target, indices, values)
        return target
    found = _row_index(target, indices)
    if found is None:   # slices, booleans, negative or out-of-range indices, ...: the general path
        numpy.add.at(target, indices, values)
        return target
    rows, k = found
    try:
        values = numpy.broadcast_to(values, rows.shape + target.shape[k:])
    except ValueError:   # values do not fit target[indices]: let numpy.add.at say so
        numpy.add.at(target, indices, values)
        return target
    D = math.prod(target.shape[k:])   # elements per indexed row
    rows = rows.reshape(-1)
    values = values.reshape(rows.size, D)
    flat_target, columns = target.reshape(-1), numpy.arange(D)
    step = max(1, _ADD_AT_CHUNK // max(D, 1))
    for lo in range(0, rows.size, step):   # in chunks: the flat index stays small (in cache)
        # element j of row rows[i] is element rows[i] * D + j of the flat target; NumPy >= 1.25
        # adds a 1-D index into a 1-D array in one tight loop: with the index built here, 2-6x
        # faster than its generic loop for a 2-D target or several index arrays (docs/backend.md)
        flat = ((rows[lo:lo + step] * D)[:, None] + columns).reshape(-1)
        numpy.add.at(flat_target, flat, values[lo:lo + step].reshape(-1))
    return target


#: elements per numpy.add.at call in add_at (its flat int64 index: 512 KiB)
_ADD_AT_CHUNK = 1 << 16


def _row_index(target, indices):
    """``(rows, k)`` for an integer-array scatter, else ``None``.

    ``indices``: one integer array (into the first axis of ``target``) or a tuple of ``k``
    of them (into the first ``k`` axes, broadcast together); ``rows`` is their position in
    ``target`` seen as ``(n_rows, D)``, where the remaining axes, ``D`` elements in all, are
    taken whole.  ``None`` for anything else, for a 1-D target indexed by one array (already
    numpy.add.at's fast case) and for negative or out-of-range indices (numpy.add.at wraps
    the former and raises IndexError for the latter).
    """
    arrays = indices if isinstance(indices, tuple) else (indices,)
    if not (isinstance(target, numpy.ndarray) and target.flags.c_contiguous and 1 <= len(arrays) <= target.ndim
            and all(isinstance(a, numpy.ndarray) and a.dtype.kind in "iu" for a in arrays)):
        return None
    if len(arrays) == 1 and target.ndim == 1:
        return None
    try:   # checks every index against its own axis (negative or too large -> ValueError)
        return numpy.ravel_multi_index(arrays, target.shape[:len(arrays)]), len(arrays)
    except (ValueError, TypeError):
        return None


def sum_to_shape(grad, shape):
    """The adjoint of broadcasting: sum ``grad`` back to the ``shape`` an input had before it
    was broadcast (over the leading axes it gained and the axes where it had size 1)."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


# ---------------------------------------------------------------- random numbers
class Generator:
    """A seeded random generator giving the *same numbers on both backends*.

    Draws are made on the host by ``numpy.random.Generator`` (PCG64) and then moved
    to the backend, so weights initialised with a seed are identical under NumPy and
    CuPy.  Floating draws are cast to :data:`DEFAULT_DTYPE` unless ``dtype`` is given.
    """

    def __init__(self, seed=None):
        self._gen = numpy.random.default_rng(seed)

    def _out(self, a, dtype):
        return xp.asarray(a, dtype=DEFAULT_DTYPE if dtype is None else dtype)

    def normal(self, size, loc=0.0, scale=1.0, dtype=None):
        return self._out(self._gen.normal(loc, scale, size), dtype)

    def uniform(self, size, low=0.0, high=1.0, dtype=None):
        return self._out(self._gen.uniform(low, high, size), dtype)

    def random(self, size, dtype=None):
        return self._out(self._gen.random(size), dtype)

    def integers(self, low, high=None, size=None):
        """Integers in ``[low, high)`` as an int64 array (``high=None``: ``[0, low)``)."""
        return xp.asarray(self._gen.integers(low, high, size), dtype=xp.int64)

    def permutation(self, n):
        return xp.asarray(self._gen.permutation(n))

    def choice(self, n, size=None, replace=True, p=None):
        p = None if p is None else to_numpy(p)
        return xp.asarray(self._gen.choice(n, size=size, replace=replace, p=p))

    def keep_mask(self, size, p, dtype=None):
        """Dropout keep-mask, True with probability ``1 - p``.  Drawn on the host like every
        draw (so identical on NumPy and CuPy) and moved as booleans, 1 byte per entry."""
        u = self._gen.random(size).astype(DEFAULT_DTYPE if dtype is None else dtype)
        return xp.asarray(u >= p)

    @property
    def host(self):
        """The underlying ``numpy.random.Generator`` (for data that stays on the host)."""
        return self._gen

    def get_state(self):
        return self._gen.bit_generator.state

    def set_state(self, state):
        self._gen.bit_generator.state = state


_global_rng = Generator(0)


def manual_seed(seed):
    """Reseed the global generator that layers use for initial weights and dropout."""
    global _global_rng
    _global_rng = Generator(seed)
    return _global_rng


def get_rng():
    """The global :class:`Generator` (seed 0 until :func:`manual_seed` is called)."""
    return _global_rng
