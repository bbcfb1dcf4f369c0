"""Rotary position embedding (RoPE, Su et al. 2021): positions as rotations of q and k.

Instead of *adding* a position vector to the token embeddings, RoPE *rotates* each
query and key inside its head, by an angle proportional to its position.  Feature pairs
``(2i, 2i+1)`` of a head of width ``D`` form points in a plane; at position ``t`` pair
``i`` is turned by the angle ``t * w_i`` with ``w_i = base^(-2i/D)`` (the frequencies of
the sinusoidal table, npattention/positional.py)::

    [y_2i  ]   [cos(t w_i)  -sin(t w_i)] [x_2i  ]
    [y_2i+1] = [sin(t w_i)   cos(t w_i)] [x_2i+1]          y = x R_t   (row vectors)

Why it is a *relative* position code: rotations compose, ``R_t R_u^T = R_(t-u)``, so the
score of a rotated query at position ``t`` with a rotated key at position ``u`` is::

    (q R_t) (k R_u)^T = q R_t R_u^T k^T = q R_(t-u) k^T

-- a function of the offset ``t - u`` only (tests/test_modern_attention.py checks it
numerically).  Only step 1 (score) changes; align and context are untouched, and the
values are not rotated.

Backward: a rotation is orthogonal, so ``dx = dy R_t^T``: the same rotation by ``-t w_i``
(``apply_rotary(dy, cos, -sin)``).  Nothing is learned.
"""
from ..backend import xp
from ..module import Module
from ..validate import check_array, check_positive_int

__all__ = ["RotaryEmbedding", "apply_rotary", "apply_rotary_backward", "rotary_tables"]


def rotary_tables(positions, head_dim, base=10000.0, dtype=None):
    """``(cos, sin)``, each ``(T, D/2)``: ``cos(t w_i)``, ``sin(t w_i)`` for ``t`` in ``positions``.

    ``positions``: ints ``(T,)`` (e.g. ``xp.arange(offset, offset + T)``); ``head_dim`` ``D`` even.
    """
    if check_positive_int(head_dim, "head_dim", "rotary_tables") % 2:
        raise ValueError(f"rotary_tables: 'head_dim' must be even (features are rotated in pairs), got {head_dim}")
    freq = base ** (-xp.arange(0, head_dim, 2, dtype=xp.float64) / head_dim)   # (D/2,) w_i
    angle = xp.asarray(positions, dtype=xp.float64)[:, None] * freq            # (T, D/2) t * w_i
    cos, sin = xp.cos(angle), xp.sin(angle)
    return (cos, sin) if dtype is None else (cos.astype(dtype), sin.astype(dtype))


def apply_rotary(x, cos, sin):
    """Rotate every feature pair of ``x (..., T, D)`` by its position's angle; returns ``(..., T, D)``.

    ``y_2i = x_2i cos - x_2i+1 sin``, ``y_2i+1 = x_2i sin + x_2i+1 cos``  (``cos, sin``: ``(T, D/2)``).
    """
    x0, x1 = x[..., 0::2], x[..., 1::2]                 # the two coordinates of every pair
    y = xp.empty_like(x)
    y[..., 0::2] = x0 * cos - x1 * sin
    y[..., 1::2] = x0 * sin + x1 * cos
    return y


def apply_rotary_backward(grad_output, cos, sin):
    """``dx = dy R^T``: the inverse rotation (angle ``-t w_i``), since ``R`` is orthogonal."""
    return apply_rotary(grad_output, cos, -sin)


class RotaryEmbedding(Module):
    """Rotate queries or keys ``x (..., T, D)`` by their positions ``offset, ..., offset + T - 1``.

    ``RotaryEmbedding(head_dim, base=10000.0)``; ``forward(x, offset=0)`` -> same shape.
    No parameters.  ``MultiheadAttention(..., positional="rope")`` applies it to ``q`` and
    ``k`` of every head (after the split into heads, before the scores).
    cache: ``(cos, sin)``.
    """

    def __init__(self, head_dim, base=10000.0):
        self.head_dim = check_positive_int(head_dim, "head_dim", "RotaryEmbedding")
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding: 'head_dim' must be even, got {head_dim}")
        self.base = float(base)

    def tables(self, T, offset=0, dtype=None):
        """``(cos, sin)`` ``(T, D/2)`` for positions ``offset .. offset + T - 1``."""
        return rotary_tables(xp.arange(offset, offset + T), self.head_dim, self.base, dtype)

    def forward(self, x, offset=0):
        check_array(x, "x", "RotaryEmbedding", shape=(..., None, self.head_dim))
        cos, sin = self.tables(x.shape[-2], offset, x.dtype)
        self.cache = (cos, sin)
        return apply_rotary(x, cos, sin)

    def backward(self, grad_output):
        cos, sin = self.cache
        return apply_rotary_backward(grad_output, cos, sin)

    def extra_repr(self):
        return f"head_dim={self.head_dim}, base={self.base:g}"
