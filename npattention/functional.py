"""Stateless forward/backward pairs shared by many modules, and the mask convention.

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


def causal_mask(T, S=None):
    """``(T, S)`` boolean mask, True where key j lies in the future of query i (j > i)."""
    S = T if S is None else S
    return xp.triu(xp.ones((T, S), dtype=bool), k=1)


def padding_mask(lengths, T):
    """``(B, T)`` boolean mask, True at positions ``t >= lengths[b]`` (the padding)."""
    lengths = xp.asarray(lengths)
    return xp.arange(T)[None, :] >= lengths[:, None]


def softmax(scores, axis=-1, mask=None):
    """Softmax along ``axis``; entries where ``mask`` is True get weight exactly 0.

    Stable for any finite logits (the row maximum is subtracted first).  A row whose
    entries are all masked returns zeros.
    """
    if mask is not None:
        scores = xp.where(mask, -xp.inf, scores)
    row_max = xp.max(scores, axis=axis, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0.0)  # all-masked rows
    e = xp.exp(scores - row_max)  # exp(-inf) = 0 for masked entries
    total = xp.sum(e, axis=axis, keepdims=True)
    return e / xp.where(total == 0, 1.0, total)


def softmax_backward(grad_weights, weights, axis=-1):
    """Gradient of the scores from the gradient of ``weights = softmax(scores)``.

    With ``w = softmax(s)``: ``dL/ds_i = w_i (dL/dw_i - sum_j w_j dL/dw_j)``.
    Masked entries have ``w = 0`` and so get zero gradient automatically.
    """
    inner = xp.sum(grad_weights * weights, axis=axis, keepdims=True)
    return weights * (grad_weights - inner)


def log_softmax(scores, axis=-1):
    """``log softmax`` computed as ``s - max - log sum exp(s - max)`` (no overflow)."""
    shifted = scores - xp.max(scores, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def log_softmax_backward(grad_out, log_probs, axis=-1):
    """``dL/ds = g - softmax(s) * sum(g)``."""
    return grad_out - xp.exp(log_probs) * xp.sum(grad_out, axis=axis, keepdims=True)
