"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"): O(T) instead of O(T^2).

Softmax attention compares every query with every key: the ``(L, S)`` weights cost
``O(L S)`` time and memory.  Replace the similarity ``exp(q k^T)`` by a dot product of
*feature maps*, ``phi(q) phi(k)^T`` with ``phi(x) = elu(x) + 1 > 0``, and the three steps
become (row ``i``; ``Q' = phi(Q)``, ``K' = phi(K)``)::

    1. score:    s_ij = phi(q_i) . phi(k_j)                    (no exp, no scale)
    2. align:    a_ij = s_ij / sum_j' s_ij'                    (normalise by the row sum)
    3. context:  c_i  = sum_j a_ij v_j

Written as matrices this is ``C = diag(1 / (Q' K'^T 1)) (Q' K'^T) V``, and
associativity moves the brackets::

    (Q' K'^T) V  =  Q' (K'^T V)          (L x S)(S x Dv)  ->  (L x D)(D x Dv)

``K'^T V`` (``D x Dv``) and ``z = K'^T 1`` (``D``) are sums over the keys, computed once:
time and memory ``O((L + S) D Dv)`` -- linear in the length, and the ``L x S`` weights
are never formed.  :func:`linear_attention_quadratic` computes the same numbers the
``O(L S)`` way (step by step, weights included) for teaching and testing.

**Causal** (``causal=True``): query ``i`` may only use keys ``j <= i``, so the sums become
*running* sums, updated one token at a time -- an RNN whose state is a ``D x Dv`` matrix::

    S_i = S_{i-1} + phi(k_i)^T v_i      z_i = z_{i-1} + phi(k_i)
    c_i = phi(q_i) S_i / (phi(q_i) . z_i)

The loop over time is the lesson here (and what makes generation O(1) per token); it
keeps one state, never the ``T`` prefix sums, so memory stays ``O(T (D + Dv) + D Dv)``.

Backward (derived in docs/modern_attention.md): with ``num_i = phi(q_i) S_i``,
``den_i = phi(q_i) . z_i``, ``c_i = num_i / den_i``, and ``g_i = dL/dc_i``::

    d num_i = g_i / den_i              d den_i = -(g_i . c_i) / den_i
    d phi(q_i) = d num_i S_i^T + d den_i z_i                       (needs S_i: run forward again)
    R_j = sum_{i >= j} phi(q_i)^T d num_i,  r_j = sum_{i >= j} d den_i phi(q_i)   (reverse running sums)
    d phi(k_j) = v_j R_j^T + r_j       d v_j = phi(k_j) R_j
    d x = d phi(x) * phi'(x),  phi'(x) = 1 if x > 0 else exp(x)

(bidirectional: the same with every sum over all positions, ``R = Q'^T dnum``.)
"""
from ..backend import sum_to_shape, xp
from ..validate import broadcast_shapes, check_mask, check_query_key_value
from .multihead import MultiheadAttention

__all__ = ["LinearAttention", "elu_feature_map", "linear_attention", "linear_attention_backward",
           "linear_attention_quadratic"]

_WHERE = "linear_attention"


def elu_feature_map(x):
    """``phi(x) = elu(x) + 1``: ``x + 1`` for ``x > 0``, ``exp(x)`` otherwise (always > 0)."""
    return xp.where(x > 0, x + 1.0, xp.exp(xp.minimum(x, 0.0)))


def _elu_feature_map_grad(x):
    """``phi'(x)``: 1 for ``x > 0``, ``exp(x)`` otherwise."""
    return xp.where(x > 0, 1.0, xp.exp(xp.minimum(x, 0.0)))


def _check(query, key, value, key_padding_mask, causal):
    lead = check_query_key_value(query, key, value, _WHERE, feature="D")
    if causal and query.shape[-2] != key.shape[-2]:
        raise ValueError(f"{_WHERE}: causal=True needs as many queries as keys, got L={query.shape[-2]}, "
                         f"S={key.shape[-2]}")
    check_mask(key_padding_mask, "key_padding_mask", _WHERE, tuple(lead) + (key.shape[-2],))


def linear_attention(query, key, value, causal=False, key_padding_mask=None, eps=1e-6):
    """``C = phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1)``; returns ``(context, cache)``.

    ``query (..., L, D)``, ``key (..., S, D)``, ``value (..., S, Dv)`` -> ``(..., L, Dv)``.
    ``causal``: running sums (query ``i`` sees keys ``j <= i``; needs ``L == S``).
    ``key_padding_mask (..., S)`` bool, True = padding: those keys get ``phi(k) = 0``.
    ``eps`` is added to the denominators.  cache: ``(query, key, value, phi_q, phi_k, keep,
    kv, z, den, context, causal)`` (``kv``, ``z``: the full sums, None when causal).
    """
    _check(query, key, value, key_padding_mask, causal)
    phi_q, phi_k = elu_feature_map(query), elu_feature_map(key)      # (..., L, D), (..., S, D)
    keep = None
    if key_padding_mask is not None:
        keep = ~key_padding_mask[..., None]                           # (..., S, 1)
        phi_k = phi_k * keep                                          # padded keys contribute nothing
    if not causal:
        kv = xp.swapaxes(phi_k, -1, -2) @ value                       # (..., D, Dv)  sum_j phi(k_j)^T v_j
        z = phi_k.sum(axis=-2)                                        # (..., D)      sum_j phi(k_j)
        num = phi_q @ kv                                              # (..., L, Dv)
        den = (phi_q @ z[..., None]) + eps                            # (..., L, 1)
    else:
        kv = z = None
        lead = broadcast_shapes(phi_q.shape[:-2], phi_k.shape[:-2], value.shape[:-2])
        T, Dv = query.shape[-2], value.shape[-1]
        state = xp.zeros(lead + (phi_k.shape[-1], Dv), dtype=_num_dtype(query, value))   # S_i (..., D, Dv)
        norm = xp.zeros(lead + (phi_k.shape[-1],), dtype=state.dtype)                   # z_i (..., D)
        num = xp.empty(lead + (T, Dv), dtype=state.dtype)
        den = xp.empty(lead + (T, 1), dtype=state.dtype)
        for i in range(T):   # the RNN view: one state update per token (the loop is the lesson)
            state += phi_k[..., i, :, None] * value[..., i, None, :]      # S_i = S_{i-1} + phi(k_i)^T v_i
            norm += phi_k[..., i, :]                                      # z_i = z_{i-1} + phi(k_i)
            num[..., i, :] = (phi_q[..., i, None, :] @ state)[..., 0, :]  # phi(q_i) S_i
            den[..., i, 0] = (phi_q[..., i, :] * norm).sum(axis=-1)       # phi(q_i) . z_i
        den += eps
    context = num / den
    cache = (query, key, value, phi_q, phi_k, keep, kv, z, den, context, causal)
    return context, cache


def _num_dtype(*arrays):
    return xp.result_type(*(a.dtype for a in arrays))


def linear_attention_backward(grad_output, cache):
    """``(dquery, dkey, dvalue)`` from the gradient of the context ``(..., L, Dv)``."""
    query, key, value, phi_q, phi_k, keep, kv, z, den, context, causal = cache
    g = grad_output
    # context = num / den
    dnum = g / den                                                    # (..., L, Dv)
    dden = -(g * context).sum(axis=-1, keepdims=True) / den           # (..., L, 1)
    if not causal:
        # num = phi_q kv, den = phi_q z (+ eps)
        dphi_q = dnum @ xp.swapaxes(kv, -1, -2) + dden * z[..., None, :]
        dkv = xp.swapaxes(phi_q, -1, -2) @ dnum                       # (..., D, Dv)  R = Q'^T dnum
        dz = (dden * phi_q).sum(axis=-2)                              # (..., D)      r
        # kv = phi_k^T v, z = sum_j phi_k_j
        dphi_k = value @ xp.swapaxes(dkv, -1, -2) + dz[..., None, :]  # (..., S, D)
        dvalue = phi_k @ dkv                                          # (..., S, Dv)
    else:
        T = query.shape[-2]
        lead, D = dnum.shape[:-2], phi_k.shape[-1]
        Dv = value.shape[-1]
        dphi_q = xp.empty(lead + (T, D), dtype=dnum.dtype)
        dphi_k = xp.empty(lead + (T, D), dtype=dnum.dtype)
        dvalue = xp.empty(lead + (T, Dv), dtype=dnum.dtype)
        # d phi(q_i) = dnum_i S_i^T + dden_i z_i: rebuild the running sums S_i, z_i going forward
        state = xp.zeros(lead + (D, Dv), dtype=dnum.dtype)
        norm = xp.zeros(lead + (D,), dtype=dnum.dtype)
        for i in range(T):
            state += phi_k[..., i, :, None] * value[..., i, None, :]      # S_i (as in the forward)
            norm += phi_k[..., i, :]                                      # z_i
            dphi_q[..., i, :] = (dnum[..., i, None, :] @ xp.swapaxes(state, -1, -2))[..., 0, :] \
                + dden[..., i, :] * norm
        # key j fed S_i and z_i for every i >= j: reverse running sums R_j, r_j
        rev = xp.zeros(lead + (D, Dv), dtype=dnum.dtype)
        rnorm = xp.zeros(lead + (D,), dtype=dnum.dtype)
        for j in range(T - 1, -1, -1):
            rev += phi_q[..., j, :, None] * dnum[..., j, None, :]         # R_j = R_{j+1} + phi(q_j)^T dnum_j
            rnorm += dden[..., j, :] * phi_q[..., j, :]                   # r_j = r_{j+1} + dden_j phi(q_j)
            dphi_k[..., j, :] = (value[..., j, None, :] @ xp.swapaxes(rev, -1, -2))[..., 0, :] + rnorm
            dvalue[..., j, :] = (phi_k[..., j, None, :] @ rev)[..., 0, :]  # d v_j = phi(k_j) R_j
    if keep is not None:
        dphi_k = dphi_k * keep                                        # phi_k = phi(k) * keep
    dquery = dphi_q * _elu_feature_map_grad(query)                    # phi(x) = elu(x) + 1
    dkey = dphi_k * _elu_feature_map_grad(key)
    return sum_to_shape(dquery, query.shape), sum_to_shape(dkey, key.shape), sum_to_shape(dvalue, value.shape)


def linear_attention_quadratic(query, key, value, causal=False, key_padding_mask=None, eps=1e-6):
    """The same output as :func:`linear_attention`, computed the O(L S) way, in the three
    steps; returns ``(context, weights)`` (weights ``(..., L, S)``, rows sum to 1).  For
    teaching and testing; no backward."""
    _check(query, key, value, key_padding_mask, causal)
    phi_q, phi_k = elu_feature_map(query), elu_feature_map(key)
    scores = phi_q @ xp.swapaxes(phi_k, -1, -2)                      # 1. score: phi(q_i) . phi(k_j)
    if key_padding_mask is not None:
        scores = scores * ~key_padding_mask[..., None, :]
    if causal:
        scores = xp.tril(scores)                                      # keys j > i contribute 0
    weights = scores / (scores.sum(axis=-1, keepdims=True) + eps)     # 2. align: divide by the row sum
    return weights @ value, weights                                   # 3. context


class LinearAttention(MultiheadAttention):
    """Multi-head attention with :func:`linear_attention` in every head instead of softmax.

    ``LinearAttention(embed_dim, num_heads, causal=False, bias=True, kdim=None, vdim=None, eps=1e-6)``:
    the projections and head split of :class:`MultiheadAttention` (same parameters), then
    ``phi(Q)(phi(K)^T V)`` per head.  ``forward(query, key, value, key_padding_mask=None,
    need_weights=False, attn_mask=None, average_attn_weights=True, is_causal=False)`` returns
    ``(out, None)``: the weights are never formed (that is the point; see
    :func:`linear_attention_quadratic`).  ``causal`` (or ``is_causal=True``) uses the running
    sums; an ``attn_mask`` is not supported.  cache: ``(query, key, value, lin_cache)``.
    """

    def __init__(self, embed_dim, num_heads, causal=False, bias=True, kdim=None, vdim=None, eps=1e-6):
        super().__init__(embed_dim, num_heads, dropout=0.0, bias=bias, kdim=kdim, vdim=vdim)
        self.causal = bool(causal)
        self.eps = float(eps)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if attn_mask is not None:
            raise ValueError("LinearAttention: 'attn_mask' is not supported (only causal=True and "
                             "key_padding_mask): the L x S weights are never formed")
        self._check_inputs(query, key, value, key_padding_mask, None)
        # 1. expand, 2. split heads (as in MultiheadAttention)
        q, k, v = (self._split_heads(x @ W.T + b if b is not None else x @ W.T)
                   for x, (W, b, _, _) in zip((query, key, value), self._projections()))
        kpm = None if key_padding_mask is None else key_padding_mask[:, None, :]   # (B, 1, S)
        # 3. linear attention in every head: phi(Q) (phi(K)^T V), normalised
        ctx, lin_cache = linear_attention(q, k, v, causal=self.causal or is_causal, key_padding_mask=kpm,
                                           eps=self.eps)
        out = self.out_proj(self._merge_heads(ctx))                     # 4. concat, 5. project
        self.cache = (query, key, value, lin_cache)
        return out, None

    def backward(self, grad_output, sum_inputs=False):
        query, key, value, lin_cache = self.cache
        dctx = self._split_heads(self.out_proj.backward(grad_output))
        dq, dk, dv = linear_attention_backward(dctx, lin_cache)
        return self._expand_backward((query, key, value), (dq, dk, dv), sum_inputs)

    def extra_repr(self):
        return super().extra_repr().replace(", dropout=0.0", "") + f", causal={self.causal}"
