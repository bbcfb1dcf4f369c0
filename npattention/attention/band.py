"""Truncated (band) self-attention that computes only the band: ``O(T w)`` time and memory.

Class note 002 (speech): a second of speech is ~100 frames, so full self-attention over an
utterance builds a ``T x T`` score matrix, although a frame mostly needs its neighbours.
*Truncated* self-attention lets query ``i`` see only keys ``j`` with ``|i - j| <= w``.
Masking a full ``T x T`` matrix gives the right numbers but saves nothing; here the scores are
stored **by offset**::

    S_band[..., i, o] = q_i . k_{i + o - w} * scale        o = 0 .. 2w   (key j = i + o - w)

so the score, weight and gradient arrays are ``(..., T, 2w + 1)`` instead of ``(..., T, T)``.
Keys outside ``[0, T)`` (the band hanging over either end) are masked, like any masked key.

The three steps, per offset ``o`` (a loop over the ``2w + 1`` offsets, never over time or
batch -- the same trick as ``im2col`` in :mod:`npattention.vision.layers`)::

    1. score:   S[:, :, o] = sum_d q[:, :, d] * k_pad[:, o : o + T, d]   * scale
    2. align:   A = softmax(S, mask)                    over the 2w + 1 offsets
    3. context: C = sum_o A[:, :, o, None] * v_pad[:, o : o + T]

``k_pad``/``v_pad`` are the keys/values with ``w`` zero rows on each side (their weights are 0).
The numbers equal :func:`npattention.attention.sdpa.scaled_dot_product_attention` with
``band_mask(T, w)`` (``tests/test_band_attention.py`` checks to 1e-12 in float64).

Backward (docs/band_attention.md derives it), mirrored per offset::

    dA[:, :, o]      = sum_d dC * v_pad[:, o : o + T]          (context = sum_o A v_pad)
    dv_pad[o : o+T] += A[:, :, o, None] * dC
    dS               = A * (dA - rowsum(dC * C))               (softmax; masked -> 0)
    dq              += dS[:, :, o, None] * k_pad[o : o+T] * scale
    dk_pad[o : o+T] += dS[:, :, o, None] * q * scale
"""
import math
from dataclasses import dataclass

from ..backend import get_rng, xp
from ..masks import combine_masks
from ..softmax import softmax
from ..validate import check_array, check_probability

__all__ = ["BandCache", "band_attention", "band_attention_backward", "band_key_mask", "band_to_dense",
           "dense_to_band"]

_WHERE = "band_attention"


def _pad_time(x, w):
    """``(..., T, D)`` -> ``(..., T + 2w, D)`` with ``w`` zero rows before and after."""
    if w == 0:
        return x
    pad = [(0, 0)] * x.ndim
    pad[-2] = (w, w)
    return xp.pad(x, pad)


def band_key_mask(T, window, is_causal=False):
    """``(T, 2w + 1)`` boolean, True where offset ``o`` points outside ``[0, T)`` (or, with
    ``is_causal``, into the future ``o > w``)."""
    j = xp.arange(T)[:, None] + xp.arange(2 * window + 1)[None, :] - window
    out = (j < 0) | (j >= T)
    if is_causal:
        out = out | (xp.arange(2 * window + 1)[None, :] > window)
    return out


def dense_to_band(dense, window):
    """``(..., T, T)`` -> ``(..., T, 2w + 1)``: entry ``[i, o]`` = ``dense[i, i + o - w]``
    (``False``/0 where the key falls outside ``[0, T)``).  Brings an ``attn_mask`` into band
    layout (reads ``T (2w + 1)`` entries only), and compares band weights with full ones in tests."""
    T = dense.shape[-1]
    j = xp.arange(T)[:, None] + xp.arange(2 * window + 1)[None, :] - window      # (T, 2w+1)
    inside = (j >= 0) & (j < T)
    jc = xp.clip(j, 0, T - 1)
    idx = xp.broadcast_to(jc, dense.shape[:-2] + jc.shape)
    out = xp.take_along_axis(dense, idx, axis=-1)
    return out & inside if out.dtype == bool else out * inside


def band_to_dense(band, window):
    """``(..., T, 2w + 1)`` -> ``(..., T, T)`` with zeros outside the band (for plots; O(T^2))."""
    T = band.shape[-2]
    dense = xp.zeros(band.shape[:-1] + (T + 2 * window,), dtype=band.dtype)
    for o in range(2 * window + 1):                    # diagonal o of the padded matrix
        rows = xp.arange(T)
        dense[..., rows, rows + o] = band[..., o]
    return dense[..., window:window + T]


@dataclass
class BandCache:
    """What :func:`band_attention_backward` needs."""

    query: object     # (..., T, E): query * scale
    key_pad: object   # (..., T + 2w, E)
    value_pad: object  # (..., T + 2w, Ev)
    weights: object   # (..., T, 2w + 1): softmax before dropout
    attn: object      # (..., T, 2w + 1): weights used (after dropout)
    keep: object      # dropout mask or None
    dropout_p: float
    scale: float
    window: int
    context: object   # (..., T, Ev)
    key_shape: tuple
    value_shape: tuple


def band_attention(query, key, value, window, key_padding_mask=None, attn_mask=None, is_causal=False,
                   scale=None, dropout_p=0.0, training=True, need_weights=False):
    """Self-attention restricted to ``|i - j| <= window``, computing only the band.

    ``query (..., T, E)``, ``key (..., T, E)``, ``value (..., T, Ev)`` (same ``T``; the leading
    axes must match).  Masks are boolean, True = masked out:

    * ``key_padding_mask`` ``(..., T)`` broadcastable to the leading axes, True at padded keys;
    * ``attn_mask`` ``(..., T, T)``: only its band is read (gathered in ``O(T w)``);
    * ``is_causal``: also mask ``j > i``.

    Returns ``(out, cache)``; ``out`` is the context ``(..., T, Ev)`` or, with
    ``need_weights``, ``(context, weights)`` with ``weights`` in band layout ``(..., T, 2w + 1)``
    (:func:`band_to_dense` turns them into a ``T x T`` map for plotting).
    """
    check_array(query, "query", _WHERE, shape=(..., "T", "E"))
    dims = {"T": query.shape[-2], "E": query.shape[-1]}
    check_array(key, "key", _WHERE, shape=(..., "T", "E"), dims=dims)
    check_array(value, "value", _WHERE, shape=(..., "T", None), dims=dims)
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"{_WHERE}: 'window' must be an int >= 0, got {window!r}")
    if query.shape[:-2] != key.shape[:-2] or key.shape[:-2] != value.shape[:-2]:
        raise ValueError(f"{_WHERE}: query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                         f"{tuple(value.shape)} must have the same leading axes")
    dropout_p = check_probability(dropout_p, "dropout_p", _WHERE)
    T, w = query.shape[-2], window
    nb = 2 * w + 1
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    lead = query.shape[:-2]

    # the band mask: outside [0, T), the future (causal), padded keys, the caller's attn_mask
    mask = band_key_mask(T, w, is_causal)                                      # (T, 2w+1)
    if key_padding_mask is not None:
        check_array(key_padding_mask, "key_padding_mask", _WHERE, shape=(..., T), dtype="bool")
        kpm = _pad_time(key_padding_mask[..., None], w)[..., 0]              # (..., T + 2w)
        mask = combine_masks(mask, xp.stack([kpm[..., o:o + T] for o in range(nb)], axis=-1))
    if attn_mask is not None:
        check_array(attn_mask, "attn_mask", _WHERE, dtype="bool")
        if attn_mask.ndim < 2 or attn_mask.shape[-2:] != (T, T):
            raise ValueError(f"{_WHERE}: 'attn_mask' must end in (T, T) = {(T, T)}, got {tuple(attn_mask.shape)}")
        mask = combine_masks(mask, dense_to_band(attn_mask, w))

    q = query * scale
    k_pad, v_pad = _pad_time(key, w), _pad_time(value, w)
    # 1. score: one (..., T) column per offset, q_i . k_{i+o-w}
    scores = xp.empty(lead + (T, nb), dtype=xp.result_type(q.dtype, key.dtype))
    for o in range(nb):
        scores[..., o] = xp.einsum("...te,...te->...t", q, k_pad[..., o:o + T, :])
    # 2. align: softmax over the 2w + 1 offsets (masked offsets get exactly 0)
    weights = softmax(scores, mask=mask, out=scores)
    keep, attn = None, weights
    if training and dropout_p > 0.0:
        keep = get_rng().keep_mask(weights.shape, dropout_p)
        attn = weights * keep
        attn *= 1.0 / (1.0 - dropout_p)
    # 3. context: weighted sum of the values in the window
    context = xp.zeros(lead + (T, value.shape[-1]), dtype=scores.dtype)
    for o in range(nb):
        context += attn[..., o, None] * v_pad[..., o:o + T, :]
    cache = BandCache(q, k_pad, v_pad, weights, attn, keep, dropout_p, scale, w, context,
                      tuple(key.shape), tuple(value.shape))
    return ((context, weights) if need_weights else context), cache


def band_attention_backward(grad_output, cache):
    """Gradients ``(dq, dk, dv)`` of :func:`band_attention` from ``dC (..., T, Ev)``."""
    q, k_pad, v_pad, w = cache.query, cache.key_pad, cache.value_pad, cache.window
    T, nb = q.shape[-2], 2 * w + 1
    # 3. context = sum_o A[:, :, o] v_pad[o : o + T]
    dattn = xp.empty_like(cache.attn)
    dv_pad = xp.zeros_like(v_pad)
    for o in range(nb):
        dattn[..., o] = xp.einsum("...te,...te->...t", grad_output, v_pad[..., o:o + T, :])
        dv_pad[..., o:o + T, :] += cache.attn[..., o, None] * grad_output
    if cache.keep is not None:                                   # dropout
        dattn *= cache.keep
        dattn *= 1.0 / (1.0 - cache.dropout_p)
    # 2. softmax: dS = A (dA - rowsum(dA A)), and rowsum(dA A) = rowsum(dC C)
    dattn -= xp.sum(grad_output * cache.context, axis=-1, keepdims=True)
    dattn *= cache.weights
    dscores = dattn
    # 1. scores = (q scale) . k_pad[i + o]
    dq = xp.zeros_like(q)
    dk_pad = xp.zeros_like(k_pad)
    for o in range(nb):
        dq += dscores[..., o, None] * k_pad[..., o:o + T, :]
        dk_pad[..., o:o + T, :] += dscores[..., o, None] * q       # q already holds the scale
    dq *= cache.scale
    return dq, dk_pad[..., w:w + T, :], dv_pad[..., w:w + T, :]
