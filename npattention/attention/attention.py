"""Attention = score -> align -> context, as three visible steps.

* :class:`Attention` composes any score module (``scores.py``), any align module
  (``align.py``, default :class:`SoftmaxAlign`) and the :class:`Context` step.
* :class:`LocationAttention` is the decoder attention of PyTorch's seq2seq tutorial (and
  of the class notes): concat Q and K -> Linear -> one score per source *position* ->
  softmax -> bmm with V -> concat with Q -> Linear ``attn_combine``, batched.  ``Attn``
  is its old name (a deprecated alias, kept for one release).
"""
from ..backend import xp
from ..layers import Linear
from ..module import Module
from ..validate import check_array, check_positive_int
from .align import SoftmaxAlign
from .context import Context


class Attention(Module):
    """``context = align(score(query, key), mask) @ value``, returning ``(context, weights)``.

    forward(query ``(..., Tq, Dq)``, key ``(..., Tk, Dk)``, value ``(..., Tk, Dv)`` = None,
    mask = None) -> context ``(..., Tq, Dv)``, weights ``(..., Tq, Tk)``.

    * **normal mode** (``value=None``): the keys are also the values, ``K = V = X``
      (note 001's "普通模式"); ``Dv = Dk``.
    * **key-value mode** (``value`` given): ``K != V``.

    ``mask``: boolean, True = masked out, broadcasting to ``(..., Tq, Tk)``.

    backward(dcontext) returns the gradient of every array passed positionally:

    * key-value mode: ``(dquery, dkey, dvalue)``;
    * normal mode: ``(dquery, dkey)``, where ``dkey`` is the **sum** of the gradient
      through the score (key role) and through the context (value role), because the
      same array plays both roles.

    The steps are the sub-modules ``score_step``, ``align_step``, ``context_step``.  The
    arrays of the last forward are kept for notebooks as ``self.scores``,
    ``self.weights`` and ``self.context``.  ``align_step`` may be a :class:`HardAlign`
    (its one-hot weights are used; backward then needs ``straight_through=True``).
    cache: ``normal`` (were the keys also the values?); the three steps keep their own caches.
    """

    def __init__(self, score, align=None, context=None):
        for name, step in (("score", score), ("align", align), ("context", context)):
            if step is not None and not isinstance(step, Module):
                raise TypeError(f"Attention: {name!r} must be a npattention Module, got {type(step).__name__}")
        self.score_step = score
        self.align_step = SoftmaxAlign() if align is None else align
        self.context_step = Context() if context is None else context
        self.scores = self.weights = self.context = None

    def forward(self, query, key, value=None, mask=None):
        normal = value is None
        if normal:
            value = key  # normal mode: K = V = X
        else:
            check_array(value, "value", "Attention", shape=(..., None, None))
            check_array(key, "key", "Attention", shape=(..., None, None))
            if value.shape[:-1] != key.shape[:-1]:
                raise ValueError(
                    f"Attention: 'value' must have one row per key, shape {tuple(key.shape[:-1]) + ('Dv',)}, "
                    f"got {tuple(value.shape)}"
                )
        # step 1: score  (..., Tq, Tk)
        scores = self.score_step(query, key)
        # step 2: align  (..., Tq, Tk); a HardAlign returns (weights, indices, log_prob)
        aligned = self.align_step(scores, mask=mask)
        weights = aligned[0] if isinstance(aligned, tuple) else aligned
        # step 3: context  (..., Tq, Dv)
        context = self.context_step(weights, value)
        self.scores, self.weights, self.context = scores, weights, context
        self.cache = normal
        return context, weights

    def backward(self, grad_output):
        normal = self.cache
        dweights, dvalue = self.context_step.backward(grad_output)  # step 3 in reverse
        dscores = self.align_step.backward(dweights)  # step 2 in reverse
        dquery, dkey = self.score_step.backward(dscores)  # step 1 in reverse
        if normal:
            return dquery, dkey + dvalue  # the key array was also the value array
        return dquery, dkey, dvalue


class LocationAttention(Module):
    """Location-based decoder attention (PyTorch's seq2seq tutorial; ``Attn`` in the class notes), batched.

    Shapes (``B`` batch, ``Tq`` decoder steps, usually 1)::

        Q (B, Tq, query_size)       the decoder input (e.g. embedded previous token)
        K (B, Tq, key_size)         the decoder hidden state, one per query row
        V (B, value_size1, value_size2)   the encoder outputs: value_size1 positions
        mask (optional) boolean, True = masked out, broadcasting to (B, Tq, value_size1)

    forward::

        scores  = attn([Q; K])                   # Linear(query+key -> value_size1): a score per position
        weights = softmax(scores)                # (B, Tq, value_size1)
        applied = weights @ V                    # bmm: (B, Tq, value_size2)
        output  = attn_combine([Q; applied])     # Linear(query+value_size2 -> output_size)

    returns ``(output (B, Tq, output_size), weights (B, Tq, value_size1))``.  In the
    note (unbatched) Q, K are ``(1, 1, size)``, V is ``(1, value_size1, value_size2)``
    and the weights come back as ``(1, value_size1)``; here they keep the ``Tq`` axis.

    Unlike the score modules in ``scores.py`` the score does not compare the query
    with each value: the linear layer outputs one number per *position* directly
    ("location-based" attention), so V must have exactly ``value_size1`` rows.

    backward(doutput) -> ``(dQ, dK, dV)``; Q gets gradient from both concatenations.

    cache: ``(attn_cache, align_cache, context_cache, combine_cache)``, its four pieces'
    caches (CS231n's sandwich layers), so one call's cache can be kept and put back.
    """

    def __init__(self, query_size, key_size, value_size1, value_size2, output_size):
        for name, v in (("query_size", query_size), ("key_size", key_size), ("value_size1", value_size1),
                        ("value_size2", value_size2), ("output_size", output_size)):
            check_positive_int(v, name, "LocationAttention")
        self.query_size, self.key_size = query_size, key_size
        self.value_size1, self.value_size2, self.output_size = value_size1, value_size2, output_size
        self.attn = Linear(query_size + key_size, value_size1)  # step 1 (score)
        self.align_step = SoftmaxAlign()  # step 1 continued (softmax)
        self.context_step = Context()  # bmm with V
        self.attn_combine = Linear(query_size + value_size2, output_size)  # step 3
        self.weights = None

    def forward(self, Q, K, V, mask=None):
        dims = {}
        check_array(Q, "Q", "LocationAttention", shape=("B", "Tq", self.query_size), dims=dims)
        check_array(K, "K", "LocationAttention", shape=("B", "Tq", self.key_size), dims=dims)
        check_array(V, "V", "LocationAttention", shape=("B", self.value_size1, self.value_size2), dims=dims)
        # step 1: concat Q and K along features, one linear layer -> a score per position
        scores = self.attn(xp.concatenate([Q, K], axis=-1))  # (B, Tq, value_size1)
        weights = self.align_step(scores, mask=mask)  # softmax over the value_size1 positions
        applied = self.context_step(weights, V)  # (B, Tq, value_size2), torch.bmm in the note
        # step 2: concat Q with the attention result; step 3: linear layer to output_size
        output = self.attn_combine(xp.concatenate([Q, applied], axis=-1))
        self.weights = weights
        self.cache = (self.attn.cache, self.align_step.cache, self.context_step.cache, self.attn_combine.cache)
        return output, weights

    def backward(self, grad_output):
        qs = self.query_size
        (self.attn.cache, self.align_step.cache, self.context_step.cache, self.attn_combine.cache) = self.cache
        d_comb = self.attn_combine.backward(grad_output)  # (B, Tq, query_size + value_size2)
        dQ, d_applied = d_comb[..., :qs], d_comb[..., qs:]  # a concat's backward is a split
        dweights, dV = self.context_step.backward(d_applied)
        dscores = self.align_step.backward(dweights)
        d_cat = self.attn.backward(dscores)  # (B, Tq, query_size + key_size)
        dQ = dQ + d_cat[..., :qs]  # Q was used twice: the gradients add
        dK = d_cat[..., qs:]
        return dQ, dK, dV

    def extra_repr(self):
        return (f"query_size={self.query_size}, key_size={self.key_size}, value_size1={self.value_size1}, "
                f"value_size2={self.value_size2}, output_size={self.output_size}")


Attn = LocationAttention  # deprecated alias (the class notes' name), kept for one release
