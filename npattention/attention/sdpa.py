"""Scaled dot-product attention as a CS231n-style forward/backward pair.

The pair::

    out, cache = scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0,
                                              is_causal=False, scale=None,
                                              need_weights=False, training=True, attn_bias=None)
    dq, dk, dv = scaled_dot_product_attention_backward(dout, cache)
    dq, dk, dv, dbias = scaled_dot_product_attention_backward(dout, cache)   # with a float bias

``out`` is the context ``(..., L, Ev)``, or the pair ``(context, weights)`` when
``need_weights=True`` (``weights``: ``(..., L, S)``, the softmax *before* dropout).
The attention weights are also always at ``cache.weights``.  ``cache`` holds exactly
what the backward needs; ``backward`` takes the gradient of the context only.

Shapes: ``query (..., L, E)``, ``key (..., S, E)``, ``value (..., S, Ev)``; the leading
axes ``...`` (batch, heads) broadcast against each other, and the gradient of an
input that was broadcast is summed back to that input's shape.

The three steps, with :math:`\\text{scale} = 1/\\sqrt{E}` by default:

1. score:   ``scores  = q k^T * scale (+ bias)``              ``(..., L, S)``
2. align:   ``weights = softmax(scores, mask)`` (then dropout) ``(..., L, S)``
3. context: ``context = weights @ v``                         ``(..., L, Ev)``

Mask convention: **boolean, True = masked out** (this query may not attend to this
key), the convention of :mod:`npattention.masks` and of PyTorch's
``nn.MultiheadAttention``.  Note that PyTorch's *functional*
``torch.nn.functional.scaled_dot_product_attention`` uses the **opposite** convention
for boolean masks (True = take part); pass ``~mask`` when porting code from it.
A query whose keys are all masked gets zero weights and a zero context row (never NaN).

Additive bias: a **float** ``attn_mask`` is added to the scores, as in PyTorch (both
``nn.MultiheadAttention`` and the functional form); ``attn_bias=`` is the same thing under
its own name, so that a float bias can be combined with a boolean mask (ALiBi, relative
position bias, npattention/attention/alibi.py, relative_bias.py).  With a bias the
backward returns a fourth gradient, ``dbias = dscores`` summed to the bias's shape: a bias
is differentiable like any float input (a learned relative-position table trains by it).
"""
import math
from dataclasses import dataclass
from functools import cached_property

from ..backend import get_rng, sum_to_shape, xp
from ..masks import causal_mask, combine_masks
from ..softmax import softmax_numerator
from ..validate import broadcast_shapes, check_array, check_mask, check_probability, check_query_key_value

__all__ = ["AttentionCache", "scaled_dot_product_attention", "scaled_dot_product_attention_backward"]

_WHERE = "scaled_dot_product_attention"


@dataclass
class AttentionCache:
    """What :func:`scaled_dot_product_attention_backward` needs (and the weights).

    The weights are kept as their numerator and row scale, ``weights = exp_scores * inv_sum``
    (the division is done on the context: docs/multihead.md, "Speed"); ``cache.weights`` and
    ``cache.attn`` compute them on first access (the backward never needs them)."""

    query: object       # (..., L, E): query * scale
    key: object         # (..., S, E)
    value: object       # (..., S, Ev)
    exp_scores: object  # (..., L, S): e = exp(scores - row max), 0 where masked
    inv_sum: object     # (..., L, 1): 1 / rowsum(e) (1 for an all-masked row)
    exp_attn: object    # (..., L, S): e * keep with dropout, else e itself
    keep: object        # (..., L, S) bool dropout mask, or None without dropout
    dropout_p: float
    scale: float
    context: object     # (..., L, Ev): the output, for the softmax backward's row sums
    bias_shape: object = None   # shape of the additive score bias, or None without one

    @cached_property
    def weights(self):
        """``(..., L, S)``: ``softmax(scores, mask)``, before dropout (computed on first access)."""
        return self.exp_scores * self.inv_sum

    @cached_property
    def attn(self):
        """``(..., L, S)``: the weights actually used, ``weights * keep / (1 - p)`` with dropout."""
        if self.keep is None:
            return self.weights
        return self.exp_attn * (self.inv_sum * (1.0 / (1.0 - self.dropout_p)))


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, need_weights=False, training=True, attn_bias=None):
    """Forward of ``softmax(q k^T * scale + bias, mask) @ v``; returns ``(out, cache)``.

    ``attn_mask``: boolean, broadcastable to ``(..., L, S)``, True = masked out; or float,
    then it is the additive ``attn_bias`` (PyTorch's float mask; pass one or the other).
    ``attn_bias``: float, broadcastable to ``(..., L, S)``, added to the scores.
    ``is_causal``: also mask keys in the future of each query (``j > i``).
    ``dropout_p``: dropout on the weights, drawn from :func:`npattention.backend.get_rng`,
    only when ``training`` is True.  ``scale``: defaults to ``1/sqrt(E)``.
    ``out`` is ``context`` or, with ``need_weights``, ``(context, weights)``.
    """
    lead = check_query_key_value(query, key, value, _WHERE)
    L, S = query.shape[-2], key.shape[-2]
    if attn_mask is not None and getattr(attn_mask, "dtype", None) is not None and attn_mask.dtype.kind == "f":
        if attn_bias is not None:
            raise ValueError(f"{_WHERE}: got a float 'attn_mask' (an additive bias) and 'attn_bias'; pass one")
        attn_bias, attn_mask = attn_mask, None          # PyTorch: a float mask is added to the scores
    check_mask(attn_mask, "attn_mask", _WHERE, tuple(lead) + (L, S))
    _check_bias(attn_bias, tuple(lead) + (L, S))
    dropout_p = check_probability(dropout_p, "dropout_p", _WHERE)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else _check_scale(scale)  # Python float: no upcast
    mask = combine_masks(attn_mask, causal_mask(L, S) if is_causal else None)

    # 1. score: similarity of every query with every key.  scores = q k^T * scale, computed
    #    as (q * scale) k^T: scaling q (L x E) is cheaper than scaling the scores (L x S).
    query = query * scale
    scores = query @ xp.swapaxes(key, -1, -2)          # (..., L, S)
    if attn_bias is not None:
        scores += attn_bias                            # additive bias (ALiBi, relative position, float mask)
    # 2. align: weights = e / rowsum(e), e = exp(scores - row max) (masked keys: exactly 0), in
    #    place in the scores buffer.  The division waits for step 3: dividing the (L, Ev) context
    #    is cheaper than dividing the (L, S) weights (FlashAttention's late normalisation).
    e = softmax_numerator(scores, mask=mask, out=scores)
    row_sum = xp.einsum("...ls->...l", e)[..., None]   # (..., L, 1); einsum's row sum: about 2x faster than e.sum
    xp.copyto(row_sum, 1.0, where=row_sum == 0)       # all-masked rows: e = 0, so a zero context (never NaN)
    inv_sum = 1.0 / row_sum
    keep, exp_attn, ctx_scale = None, e, inv_sum
    if training and dropout_p > 0.0:
        keep = get_rng().keep_mask(e.shape, dropout_p)
        exp_attn = e * keep                            # dropout on the weights = on their numerator
        ctx_scale = inv_sum * (1.0 / (1.0 - dropout_p))   # inverted dropout: same expectation
    # 3. context: weighted sum of the values, context = attn @ v = (exp_attn @ v) * ctx_scale
    context = exp_attn @ value                         # (..., L, Ev)
    context *= ctx_scale

    cache = AttentionCache(query, key, value, e, inv_sum, exp_attn, keep, dropout_p, scale, context,
                           None if attn_bias is None else tuple(attn_bias.shape))
    return ((context, cache.weights) if need_weights else context), cache


def _check_scale(scale):
    """A finite Python float (a NaN or inf scale would turn every weight into NaN)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) and not (
            hasattr(scale, "shape") and scale.shape == () and scale.dtype.kind in "fiu"):
        raise TypeError(f"{_WHERE}: 'scale' must be a number or None, got {type(scale).__name__}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"{_WHERE}: 'scale' must be finite, got {float(scale)}")
    return float(scale)


def _check_bias(bias, target_shape, where=_WHERE):
    """A float bias that broadcasts to the scores' shape without growing it."""
    if bias is None:
        return
    check_array(bias, "attn_bias", where, dtype="float")
    try:
        fits = broadcast_shapes(tuple(bias.shape), target_shape) == target_shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{where}: 'attn_bias' (or float 'attn_mask') of shape {tuple(bias.shape)} does not "
                         f"broadcast to the scores' shape {target_shape}")


def scaled_dot_product_attention_backward(grad_output, cache):
    """Gradients ``(dq, dk, dv)`` from the gradient of the context ``(..., L, Ev)``.

    With an additive bias in the forward, returns ``(dq, dk, dv, dbias)``: the scores are
    ``q k^T scale + bias``, so ``dbias = dS`` summed over the axes the bias was broadcast on.

    Mirrors the forward in reverse (``A`` = weights after dropout, ``P`` = before)::

        dv = A^T dC          dA = dC v^T                      (context = A v)
        dP = dA * keep/(1-p)                                  (dropout)
        dS = P * (dP - rowsum(dP * P))                        (softmax; masked -> 0)
           = P * (dP - rowsum(dC * C))                        (cheaper, same numbers)
        dq = dS k * scale    dk = dS^T q * scale              (scores = q k^T scale)

    The cache holds ``P`` as ``e * inv_sum`` (the softmax's numerator and its row scale: see the
    forward); the row scale is folded into the small ``dC`` (``g = dC * inv_sum``), so
    ``dS = e * (g v^T [* keep] - inv_sum * rowsum(dC * C))`` is built in place in one
    ``(..., L, S)`` buffer: no other temporaries of that size.
    """
    where = "scaled_dot_product_attention_backward"
    if not isinstance(cache, AttentionCache):
        raise TypeError(f"{where}: 'cache' must be the AttentionCache returned by scaled_dot_product_attention "
                        f"(out, cache = ...), got {type(cache).__name__}")
    check_array(grad_output, "grad_output", where, shape=tuple(cache.context.shape))
    q_scaled, k, v = cache.query, cache.key, cache.value   # the cache holds q * scale
    # 3. context = (exp_attn @ v) * ctx_scale, ctx_scale = inv_sum (/ (1 - p) with dropout):
    #    g = dC * ctx_scale is the gradient of the product exp_attn @ v
    ctx_scale = cache.inv_sum if cache.keep is None else cache.inv_sum * (1.0 / (1.0 - cache.dropout_p))
    g = grad_output * ctx_scale                            # (..., L, Ev)
    dv = xp.swapaxes(cache.exp_attn, -1, -2) @ g           # (..., S, Ev)
    # 2. softmax: dS = P * (dP - rowsum(P * dP)) with P = e * inv_sum.  The row sums equal
    #    delta = rowsum(dC * C), (..., L, Ev) instead of (..., L, S) work (the FlashAttention
    #    identity, docs/multihead.md), and P * dP = e * (g v^T) (dropout: e * keep * (g v^T)), so
    #    dS = e * (g v^T - inv_sum * delta), built in place in one (..., L, S) buffer.
    #    Masked entries have e = 0, so dS = 0 there.
    delta = xp.einsum("...le,...le->...l", grad_output, cache.context)[..., None]   # (..., L, 1); einsum: no temporary
    dscores = g @ xp.swapaxes(v, -1, -2)                   # (..., L, S), a fresh array: edited in place
    if cache.keep is not None:
        dscores *= cache.keep                              # dropout: only the kept entries pass
    dscores -= cache.inv_sum * delta
    dscores *= cache.exp_scores
    # 1. scores = (q * scale) k^T
    dq = dscores @ k                                       # (..., L, E)
    dq *= cache.scale
    dk = xp.swapaxes(dscores, -1, -2) @ q_scaled           # (..., S, E): scale is already in q_scaled
    grads = (sum_to_shape(dq, tuple(q_scaled.shape)), sum_to_shape(dk, k.shape), sum_to_shape(dv, v.shape))
    if cache.bias_shape is not None:                       # scores = ... + bias  =>  dbias = dscores
        grads += (sum_to_shape(dscores, cache.bias_shape),)
    return grads

