"""Deprecated import path, kept for one release: use :mod:`npattention.attention.sdpa`.

``softmax_(scores, mask)`` is now ``npattention.softmax.softmax(scores, mask=mask, out=scores)``.
"""
from ..masks import combine_masks
from ..softmax import softmax
from .sdpa import AttentionCache, scaled_dot_product_attention, scaled_dot_product_attention_backward

__all__ = ["AttentionCache", "combine_masks", "scaled_dot_product_attention", "scaled_dot_product_attention_backward",
           "softmax_"]


def softmax_(scores, mask=None):
    """Deprecated: ``softmax(scores, mask=mask, out=scores)`` (in place, last axis)."""
    return softmax(scores, mask=mask, out=scores)
