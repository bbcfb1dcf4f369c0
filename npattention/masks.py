"""Boolean attention masks: the one mask convention of npattention, and the masks built from it.

Mask convention (used the same way everywhere in npattention)
---------------------------------------------------------------
A mask is a **boolean** array that broadcasts against the scores ``(..., Tq, Tk)``.
``True`` means **masked out: this query may not attend to this key**; ``False`` means
the key takes part.  This is the convention of PyTorch's ``nn.MultiheadAttention``
(``key_padding_mask``, boolean ``attn_mask``) and ``nn.Transformer``.  (PyTorch's
functional ``scaled_dot_product_attention`` uses the opposite; ours does not.)

* :func:`causal_mask` ``(T, T)``: True above the diagonal (no peeking at the future).
* :func:`padding_mask` ``(B, T)``: True at padding positions; reshape to ``(B, 1, T)``
  (or ``(B, 1, 1, T)`` with heads) to mask keys.

A query row whose keys are *all* masked gets all-zero weights (and zero gradient),
never NaN.
"""
from .backend import xp

__all__ = ["causal_mask", "padding_mask", "combine_masks"]


def causal_mask(T, S=None):
    """``(T, S)`` boolean mask, True where key j lies in the future of query i (j > i)."""
    S = T if S is None else S
    return xp.triu(xp.ones((T, S), dtype=bool), k=1)


def padding_mask(lengths, T):
    """``(B, T)`` boolean mask, True at positions ``t >= lengths[b]`` (the padding)."""
    lengths = xp.asarray(lengths)
    return xp.arange(T)[None, :] >= lengths[:, None]


def combine_masks(*masks):
    """OR together boolean masks (None entries ignored); None if there are none."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else (out | m)
    return out
