"""Deprecated import path, kept for one release.

Masks now live in :mod:`npattention.masks` and the softmax pair in :mod:`npattention.softmax`.
"""
from .masks import causal_mask, padding_mask
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward

__all__ = ["causal_mask", "padding_mask", "softmax", "softmax_backward", "log_softmax", "log_softmax_backward"]
