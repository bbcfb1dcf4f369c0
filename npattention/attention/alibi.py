"""ALiBi, attention with linear biases (Press, Smith & Lewis 2022): no position vectors at all.

ALiBi adds nothing to the tokens; it adds a fixed penalty to the **scores** that grows
linearly with the distance between query ``i`` and key ``j``, with a different slope
``m_h`` in every head ``h``::

    s_ij = q_i k_j^T / sqrt(D)  -  m_h * |i - j|                 (step 1 changes, nothing else)

The slopes form a geometric sequence.  For ``H`` a power of two, ``m_h = 2^(-8h/H)``,
``h = 1..H`` (8 heads: 1/2, 1/4, ..., 1/256).  Otherwise the paper takes the ``2^k``
slopes of the largest power of two below ``H`` and fills up with every other slope of
the ``2^(k+1)`` sequence (12 heads: the 8 slopes above, then ``2^-0.5, 2^-1.5, 2^-2.5,
2^-3.5``).  Steep heads look only at near neighbours; shallow ones see far.

Forms:

* **causal** (the paper's): keys in the future are masked anyway, so the bias is
  ``-m_h (i - j)`` for ``j <= i``; above the diagonal it is 0 and the caller must mask
  (``is_causal=True``).  On and below the diagonal it equals the bidirectional form.
* **bidirectional**: ``-m_h |i - j|`` everywhere (symmetric: left and right neighbours
  at the same distance look alike to the bias).

The bias is a constant (no parameters, no gradient), added through
``scaled_dot_product_attention(..., attn_bias=)``.  Positions: queries are
``offset, ..., offset + L - 1`` and keys ``0, ..., S - 1`` (``offset = S - L`` when the
queries are the newest tokens, as with a key/value cache).
"""
import math

from ..backend import xp
from ..validate import check_positive_int

__all__ = ["ALiBi", "alibi_bias", "alibi_slopes"]


def alibi_slopes(num_heads):
    """The paper's head slopes, ``(H,)`` float64: ``2^(-8h/H)`` for ``H`` a power of 2."""
    check_positive_int(num_heads, "num_heads", "alibi_slopes")

    def power_of_two(n):   # 2^(-8/n), 2^(-16/n), ..., 2^(-8)
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    n = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = power_of_two(n) + power_of_two(2 * n)[0::2][: num_heads - n]
    return xp.asarray(slopes, dtype=xp.float64)


def alibi_bias(num_heads, L, S=None, causal=False, offset=0, slopes=None):
    """The ``(H, L, S)`` bias ``-m_h * distance(i, j)`` for every head.

    ``distance = |offset + i - j|`` (bidirectional) or ``max(offset + i - j, 0)`` (causal:
    the future keys, which must be masked, get 0).  ``slopes``: ``(H,)``, default
    :func:`alibi_slopes`.
    """
    S = L if S is None else S
    slopes = alibi_slopes(num_heads) if slopes is None else xp.asarray(slopes, dtype=xp.float64)
    dist = (xp.arange(offset, offset + L)[:, None] - xp.arange(S)[None, :]).astype(xp.float64)  # (L, S): i - j
    dist = xp.maximum(dist, 0.0) if causal else xp.abs(dist)
    return -slopes[:, None, None] * dist                  # (H, L, S)


class ALiBi:
    """The ALiBi option of :class:`~npattention.attention.multihead.MultiheadAttention`.

    ``ALiBi(num_heads, slopes=None)``; ``bias(L, S, offset, causal)`` -> ``(H, L, S)``.
    Not a Module: it has no parameters and no inputs to differentiate.
    """

    def __init__(self, num_heads, slopes=None):
        self.num_heads = check_positive_int(num_heads, "num_heads", "ALiBi")
        self.slopes = alibi_slopes(num_heads) if slopes is None else xp.asarray(slopes, dtype=xp.float64)
        if self.slopes.shape != (num_heads,):
            raise ValueError(f"ALiBi: 'slopes' must have shape ({num_heads},), got {tuple(self.slopes.shape)}")

    def bias(self, L, S, offset=0, causal=False):
        return alibi_bias(self.num_heads, L, S, causal=causal, offset=offset, slopes=self.slopes)

    def __repr__(self):
        return f"ALiBi(num_heads={self.num_heads})"
