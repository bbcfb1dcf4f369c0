"""Positions inside attention: the ``positional=`` option of the attention layers.

The 2017 Transformer adds a position vector to the tokens before the first layer
(npattention/positional.py).  The variants here act inside every attention layer, on
step 1 (score) only -- align (softmax) and context (``A V``) are unchanged:

=================  ============================================  =====================
``positional=``    what happens to the scores of head ``h``      learned
=================  ============================================  =====================
``"rope"``         ``(q_i R_i)(k_j R_j)^T = q_i R_(i-j) k_j^T``   nothing
``"alibi"``        ``+ (-m_h |i - j|)``                           nothing
``"relative"``     ``+ W_b[bucket(j - i), h]``                    the table ``W_b``
=================  ============================================  =====================
  
Pass the string, or a configured :class:`RotaryEmbedding`, :class:`ALiBi` or
:class:`RelativePositionBias`.  Positions: the ``L`` queries are the *last* ``L`` of the
``S`` keys (``offset = S - L``), which is self-attention (``L = S``) and also a decoder
step whose keys include a key/value cache.  Meant for self-attention; in
cross-attention query and key positions belong to different sequences.
"""
from .alibi import ALiBi
from .relative_bias import RelativePositionBias
from .rotary import RotaryEmbedding, apply_rotary, apply_rotary_backward

__all__ = ["POSITIONAL_CHOICES", "make_positional", "positions_backward", "positions_forward"]

POSITIONAL_CHOICES = ("rope", "alibi", "relative")


def make_positional(positional, num_heads, head_dim, where):
    """``None`` or the object behind ``positional=`` (a string or a ready instance)."""
    if positional is None or isinstance(positional, (RotaryEmbedding, ALiBi, RelativePositionBias)):
        obj = positional
    elif positional == "rope":
        obj = RotaryEmbedding(head_dim) if head_dim % 2 == 0 else None
        if obj is None:
            raise ValueError(f"{where}: positional='rope' needs an even head_dim (embed_dim / num_heads), "
                             f"got {head_dim}")
    elif positional == "alibi":
        obj = ALiBi(num_heads)
    elif positional == "relative":
        obj = RelativePositionBias(num_heads)
    else:
        raise ValueError(f"{where}: 'positional' must be None, one of {POSITIONAL_CHOICES} or a RotaryEmbedding/"
                         f"ALiBi/RelativePositionBias, got {positional!r}")
    if isinstance(obj, RotaryEmbedding) and obj.head_dim != head_dim:
        raise ValueError(f"{where}: RotaryEmbedding has head_dim {obj.head_dim}, the heads have {head_dim}")
    if isinstance(obj, (ALiBi, RelativePositionBias)) and obj.num_heads != num_heads:
        raise ValueError(f"{where}: {type(obj).__name__} has num_heads {obj.num_heads}, the layer has {num_heads}")
    return obj


def positions_forward(pos, q, k, is_causal=False):
    """``(q, k, bias, cache)`` for ``q (..., L, D)``, ``k (..., S, D)``.

    RoPE returns rotated ``q``, ``k`` and no bias; ALiBi and the relative bias return
    ``q``, ``k`` unchanged and a bias ``(H, L, S)`` to add to the scores.
    """
    if pos is None:
        return q, k, None, None
    L, S = q.shape[-2], k.shape[-2]
    offset = S - L                                         # the queries are the newest positions
    if isinstance(pos, RotaryEmbedding):
        cos_q, sin_q = pos.tables(L, offset, q.dtype)      # query i sits at offset + i
        cos_k, sin_k = pos.tables(S, 0, k.dtype)           # key j at j
        return apply_rotary(q, cos_q, sin_q), apply_rotary(k, cos_k, sin_k), None, (cos_q, sin_q, cos_k, sin_k)
    if isinstance(pos, ALiBi):
        return q, k, pos.bias(L, S, offset, causal=is_causal).astype(q.dtype), None
    return q, k, pos(L, S, offset).astype(q.dtype), None   # RelativePositionBias: learned


def positions_backward(pos, dq, dk, dbias, cache):
    """``(dq, dk)`` before the positions step; the relative bias's table gradient is accumulated."""
    if isinstance(pos, RotaryEmbedding):
        cos_q, sin_q, cos_k, sin_k = cache                 # q' = q R_i  =>  dq = dq' R_i^T
        return apply_rotary_backward(dq, cos_q, sin_q), apply_rotary_backward(dk, cos_k, sin_k)
    if isinstance(pos, RelativePositionBias):
        # scores = ... + bias: dbias = dscores, summed over the batch (or the groups of GQA)
        # that the (H, L, S) bias was broadcast on
        L, S = pos.cache.shape
        pos.backward(dbias.reshape(-1, pos.num_heads, L, S).sum(axis=0))
    return dq, dk

