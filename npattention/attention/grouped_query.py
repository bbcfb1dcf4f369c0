"""Multi-query and grouped-query attention (Shazeer 2019; Ainslie et al. 2023): fewer key/value heads.

In multi-head attention every one of the ``H`` query heads has its own key and value
head.  When generating text the keys and values of all past tokens are cached, and that
cache -- ``2 * H * T * D`` numbers per layer and sequence -- is what fills the memory.
Grouped-query attention keeps ``H`` query heads but only ``H_kv`` key/value heads
(``H_kv`` divides ``H``); the ``G = H / H_kv`` query heads of a group share one::

    Q = query W_q^T + b_q     (B, L, H*D)    ->  (B, H_kv, G, L, D)    query head h = g*G + i
    K = key   W_k^T + b_k     (B, S, H_kv*D) ->  (B, H_kv, 1, S, D)    one key head per group
    V = value W_v^T + b_v     (B, S, H_kv*D) ->  (B, H_kv, 1, S, D)
    C = softmax(Q K^T / sqrt(D), mask) V     (B, H_kv, G, L, D)    the size-1 axis broadcasts
    out = concat(C) W_o^T + b_o              (B, L, E)

``H_kv = H`` is multi-head attention (this module then gives MultiheadAttention's numbers);
``H_kv = 1`` is multi-query attention.  The cache shrinks by the factor ``G``
(:meth:`GroupedQueryAttention.kv_cache_nbytes`).  Score, align and context are unchanged:
they run in :func:`~npattention.attention.sdpa.scaled_dot_product_attention`, whose
broadcasting does the sharing.

Backward: a key head is used by ``G`` query heads, so its gradient is the **sum** of the
``G`` heads' gradients -- exactly what the SDPA backward's ``sum_to_shape`` does when it sums
``dK (B, H_kv, G, S, D)`` over the group axis that ``K (B, H_kv, 1, S, D)`` was broadcast on.
"""
import copy

from ..backend import xp
from ..layers import Linear, xavier_uniform
from ..module import Parameter
from ..validate import check_positive_int, check_probability
from .multihead import MultiheadAttention
from .alibi import ALiBi
from .positions import make_positional, positions_backward, positions_forward
from .sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward

__all__ = ["GroupedQueryAttention"]


class GroupedQueryAttention(MultiheadAttention):
    """``GroupedQueryAttention(embed_dim, num_heads, num_kv_heads=None, dropout=0.0, bias=True,
    positional=None)``: ``num_heads`` query heads sharing ``num_kv_heads`` key/value heads.

    ``forward`` and ``backward`` take and return what :class:`MultiheadAttention`'s do
    (``(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
    is_causal)`` -> ``(out, weights (B, [H,] L, S))``; backward -> ``(dquery, dkey, dvalue)``).
    Parameters: ``q_proj_weight (E, E)``, ``k_proj_weight``, ``v_proj_weight`` ``(H_kv*D, E)``,
    ``in_proj_bias (E + 2*H_kv*D,)`` = ``[b_q; b_k; b_v]``, ``out_proj``.
    cache: ``(query, key, value, attn_cache, pos_cache)``.
    """

    def __init__(self, embed_dim, num_heads, num_kv_heads=None, dropout=0.0, bias=True, positional=None):
        where = "GroupedQueryAttention"
        self.embed_dim = E = check_positive_int(embed_dim, "embed_dim", where)
        self.num_heads = check_positive_int(num_heads, "num_heads", where)
        self.num_kv_heads = num_heads if num_kv_heads is None else check_positive_int(num_kv_heads, "num_kv_heads",
                                                                                      where)
        if embed_dim % num_heads:
            raise ValueError(f"{where}: 'embed_dim' ({embed_dim}) must be divisible by 'num_heads' ({num_heads})")
        if num_heads % self.num_kv_heads:
            raise ValueError(f"{where}: 'num_kv_heads' ({self.num_kv_heads}) must divide 'num_heads' ({num_heads})")
        self.head_dim = D = embed_dim // num_heads
        self.groups = num_heads // self.num_kv_heads                       # G query heads per key/value head
        self.dropout = check_probability(dropout, "dropout", where)
        self.kdim = self.vdim = E
        self._qkv_same_embed_dim = False
        Ekv = self.num_kv_heads * D
        self.q_proj_weight = Parameter(xavier_uniform((E, E)))
        self.k_proj_weight = Parameter(xavier_uniform((Ekv, E)))
        self.v_proj_weight = Parameter(xavier_uniform((Ekv, E)))
        self.in_proj_bias = Parameter(xp.zeros(E + 2 * Ekv, dtype=self._dtype())) if bias else None
        self.out_proj = Linear(E, E, bias=bias)
        if bias:
            self.out_proj.bias.data[...] = 0
        self.positional = make_positional(positional, num_heads, D, where)

    @classmethod
    def from_multihead(cls, mha, num_kv_heads):
        """Convert a trained :class:`MultiheadAttention` (self-attention widths): the query and
        output weights are copied; the key/value heads of each group are **mean-pooled** (the
        GQA paper's conversion).  With ``num_kv_heads == num_heads`` the result computes
        exactly what ``mha`` does."""
        if not mha._qkv_same_embed_dim:
            raise ValueError("GroupedQueryAttention.from_multihead: needs kdim == vdim == embed_dim")
        new = cls(mha.embed_dim, mha.num_heads, num_kv_heads, mha.dropout, mha.in_proj_bias is not None,
                  positional=copy.deepcopy(mha.positional))
        if mha._dtype() == xp.float64:
            new.double()
        D, Hkv, G = mha.head_dim, new.num_kv_heads, new.groups
        (Wq, bq, _, _), (Wk, bk, _, _), (Wv, bv, _, _) = mha._projections()

        def pool(a):   # (H*D, ...) rows of the heads -> (H_kv*D, ...): the mean over each group's heads
            return a.reshape((Hkv, G, D) + a.shape[1:]).mean(axis=1).reshape((Hkv * D,) + a.shape[1:])

        new.q_proj_weight.data[...] = Wq
        new.k_proj_weight.data[...] = pool(Wk)
        new.v_proj_weight.data[...] = pool(Wv)
        if bq is not None:
            new.in_proj_bias.data[...] = xp.concatenate([bq, pool(bk), pool(bv)])
        new.out_proj.load_state_dict(mha.out_proj.state_dict())
        new.train(mha.training)
        return new

    def _projections(self):
        params = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        if self.in_proj_bias is None:
            return [(p.data, None, p.grad, None) for p in params]
        ends = [0]
        for p in params:
            ends.append(ends[-1] + p.shape[0])
        b, gb = self.in_proj_bias.data, self.in_proj_bias.grad
        return [(p.data, b[s:e], p.grad, gb[s:e]) for p, s, e in zip(params, ends[:-1], ends[1:])]

    def _heads(self, x, n):
        """``(B, T, n*D)`` -> ``(B, n, T, D)``."""
        B, T, _ = x.shape
        return x.reshape(B, T, n, self.head_dim).transpose(0, 2, 1, 3)

    def _grouped(self, a):
        """A mask or bias laid out for ``H`` heads (``(L, S)``, ``(H, L, S)``, ``(B|1, H|1, L, S)``)
        -> the grouped layout ``(..., H_kv|1, G|1, L, S)``."""
        if a is None or a.ndim == 2:
            return a
        if a.ndim == 3:                                               # (H, L, S)
            return a.reshape((self.num_kv_heads, self.groups) + a.shape[1:])
        if a.shape[1] == 1:                                           # (B|1, 1, L, S)
            return a[:, :, None]
        return a.reshape((a.shape[0], self.num_kv_heads, self.groups) + a.shape[2:])

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        B, L, S, mask, float_mask = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        H, Hkv, G, D = self.num_heads, self.num_kv_heads, self.groups, self.head_dim
        (Wq, bq, _, _), (Wk, bk, _, _), (Wv, bv, _, _) = self._projections()
        # 1. expand, 2. split: H query heads, H_kv key/value heads
        q = self._heads(query @ Wq.T + bq if bq is not None else query @ Wq.T, H)      # (B, H, L, D)
        k = self._heads(key @ Wk.T + bk if bk is not None else key @ Wk.T, Hkv)        # (B, H_kv, S, D)
        v = self._heads(value @ Wv.T + bv if bv is not None else value @ Wv.T, Hkv)    # (B, H_kv, S, D)
        q, k, bias, pos_cache = positions_forward(self.positional, q, k, is_causal)
        if float_mask is not None:
            bias = float_mask if bias is None else bias + float_mask
        # group the query heads: (B, H_kv, G, L, D) against keys/values (B, H_kv, 1, S, D)
        q = q.reshape(B, Hkv, G, L, D)
        ctx, attn_cache = scaled_dot_product_attention(
            q, k[:, :, None], v[:, :, None], attn_mask=self._grouped(mask), dropout_p=self.dropout,
            is_causal=is_causal, training=self.training, attn_bias=self._grouped(bias))
        # 4. concat heads, 5. output projection
        out = self.out_proj(self._merge_heads(ctx.reshape(B, H, L, D)))
        self.cache = (query, key, value, attn_cache, pos_cache)
        if not need_weights:
            return out, None
        weights = attn_cache.weights.reshape(B, H, L, S)
        return out, (weights.mean(axis=1) if average_attn_weights else weights)

    def backward(self, grad_output, sum_inputs=False):
        query, key, value, attn_cache = self.cache[:4]
        B, L, _ = query.shape
        dctx = self._heads(self.out_proj.backward(grad_output), self.num_heads)   # (B, H, L, D)
        dctx = dctx.reshape(B, self.num_kv_heads, self.groups, L, self.head_dim)
        # attention: dk, dv come back as (B, H_kv, 1, S, D), already summed over each group
        dq, dk, dv, *dbias = scaled_dot_product_attention_backward(dctx, attn_cache)
        dq, dk, dv = dq.reshape(B, self.num_heads, L, self.head_dim), dk[:, :, 0], dv[:, :, 0]
        dq, dk = positions_backward(self.positional, dq, dk, dbias[0] if dbias else None, self.cache[4])
        return self._expand_backward((query, key, value), (dq, dk, dv), sum_inputs)

    def kv_cache_nbytes(self, seq_len, batch_size=1, dtype=None):
        """Bytes of this layer's key/value cache for ``batch_size`` sequences of ``seq_len`` tokens:
        ``2 (K and V) * B * H_kv * T * D * itemsize`` (``G`` times less than multi-head attention)."""
        itemsize = xp.dtype(dtype if dtype is not None else self._dtype()).itemsize
        return 2 * batch_size * self.num_kv_heads * seq_len * self.head_dim * itemsize

    def extra_repr(self):
        s = (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
             f"dropout={self.dropout}, bias={self.in_proj_bias is not None}")
        return s + (f", positional={self.positional!r}" if isinstance(self.positional, ALiBi) else "")
