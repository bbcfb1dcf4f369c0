"""Multi-head attention: expand, split heads, attend per head, concat heads, project.

Inputs are always **batch-first**: ``(B, T, E)`` (PyTorch's ``batch_first=True``).
With ``H`` heads of size ``D = E / H``::

    Q = query @ W_q^T + b_q          (B, L, E)      1. expand (linear Q, K, V)
    K = key   @ W_k^T + b_k          (B, S, E)
    V = value @ W_v^T + b_v          (B, S, E)
    Q_h, K_h, V_h = split(Q, K, V)   (B, H, T, D)   2. split heads
    C_h = softmax(Q_h K_h^T / sqrt(D), mask) V_h    3. attention, all heads at once
    C = concat(C_h)                  (B, L, E)      4. concat heads
    out = C @ W_o^T + b_o            (B, L, E)      5. output projection

Parameters are named as in ``torch.nn.MultiheadAttention``: ``in_proj_weight``
``(3E, E)`` = ``[W_q; W_k; W_v]`` and ``in_proj_bias`` ``(3E,)`` when
``kdim == vdim == embed_dim``, otherwise ``q_proj_weight (E, E)``, ``k_proj_weight
(E, kdim)``, ``v_proj_weight (E, vdim)``; and ``out_proj`` (a :class:`Linear`).  A
``state_dict`` therefore maps one-to-one onto PyTorch's (see docs/multihead.md).
"""

from ..backend import xp
from ..layers import Linear, xavier_uniform
from ..module import Module, Parameter
from ..validate import broadcast_shapes, check_array, check_positive_int, check_probability
from ..masks import combine_masks
from .positions import make_positional, positions_backward, positions_forward
from .sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from .tiled import TiledAttentionCache, _block_sizes, tiled_attention, tiled_attention_backward

__all__ = ["MultiheadAttention"]


def _affine(x, W, b):
    """``x W^T + b`` for ``x (B, T, n)`` as one ``(B*T, n) @ (n, m)`` GEMM, reshaped to ``(B, T, m)``:
    NumPy's stacked (B, T, n) matmul calls BLAS once per batch item, about 2x slower at small T."""
    y = x.reshape(-1, x.shape[-1]) @ W.T
    if b is not None:
        y += b
    return y.reshape(x.shape[:-1] + (W.shape[0],))


class MultiheadAttention(Module):
    """Multi-head scaled dot-product attention (``torch.nn.MultiheadAttention``, batch-first).

    ``forward(query (B, L, E), key (B, S, kdim), value (B, S, vdim), key_padding_mask=None,
    need_weights=True, attn_mask=None, average_attn_weights=True, is_causal=False)``
    returns ``(output (B, L, E), weights)``; ``weights`` is ``(B, L, S)`` averaged over
    heads, ``(B, H, L, S)`` per head with ``average_attn_weights=False``, or None with
    ``need_weights=False``.  The weights are the softmax *before* dropout (PyTorch returns
    them after dropout; the two agree in eval mode).

    Masks are boolean, **True = masked out**:

    * ``key_padding_mask`` ``(B, S)``: True at padded keys;
    * ``attn_mask`` ``(L, S)``, ``(B*H, L, S)`` (PyTorch's layout) or anything that
      broadcasts to ``(B, H, L, S)``: True where query ``i`` may not attend to key ``j``;
    * ``is_causal=True`` adds the causal mask itself (in PyTorch it is only a hint that
      ``attn_mask`` is causal).

    A **float** ``attn_mask`` (same shapes) is added to the scores, as in PyTorch; it is
    treated as a constant (``backward`` returns no gradient for it).

    ``positional``: None, ``"rope"``, ``"alibi"``, ``"relative"`` (or a configured
    ``RotaryEmbedding`` / ``ALiBi`` / ``RelativePositionBias``): positions inside the
    attention, applied to every head's scores (npattention/attention/positions.py).

    ``backward(dout)`` returns ``(dquery, dkey, dvalue)``.  For self-attention, where one
    input ``x`` is passed as query, key and value, the gradient of ``x`` is their **sum**:
    ``backward(dout, sum_inputs=True)`` returns that sum ``dquery + dkey + dvalue`` (what
    ``SelfAttention`` and the Transformer layers use).  When ``query is key is value`` and the three widths
    equal ``embed_dim``, the three projections run as one fused ``(E -> 3E)`` matmul (and the
    backward's three weight gradients as one product; with ``sum_inputs`` the summed input
    gradient is one product too).  Every projection runs on the
    flattened ``(B*T, E)`` rows: one GEMM, not one per batch item (docs/multihead.md, "Speed").

    ``block_size`` (default None): None runs step 3 with the default
    :func:`~npattention.attention.sdpa.scaled_dot_product_attention`; an int ``B`` or a pair
    ``(B_q, B_k)`` runs it with the tiled, memory-efficient
    :func:`~npattention.attention.tiled.tiled_attention` instead (same outputs and gradients;
    no ``(L, S)`` array; docs/tiled.md).  The tiled path never forms the weights, so it
    returns ``weights = None`` whatever ``need_weights`` says.  It is a plain attribute:
    ``mha.block_size = 128`` switches an existing module.
    cache: ``(query, key, value, attn_cache, pos_cache)``: the inputs, the scaled-dot-product (or tiled)
    attention's cache and the positional option's cache.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, kdim=None, vdim=None, positional=None,
                 block_size=None):
        where = "MultiheadAttention"
        if block_size is not None:
            _block_sizes(block_size, where)  # checked now (a positive int or a pair), kept as given
        self.block_size = block_size
        self.embed_dim = check_positive_int(embed_dim, "embed_dim", where)
        self.num_heads = check_positive_int(num_heads, "num_heads", where)
        if embed_dim % num_heads:
            raise ValueError(f"{where}: 'embed_dim' ({embed_dim}) must be divisible by 'num_heads' ({num_heads})")
        self.head_dim = embed_dim // num_heads
        self.dropout = check_probability(dropout, "dropout", where)
        self.kdim = embed_dim if kdim is None else check_positive_int(kdim, "kdim", where)
        self.vdim = embed_dim if vdim is None else check_positive_int(vdim, "vdim", where)
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        E = embed_dim
        # PyTorch's initialisation: Xavier-uniform projections, zero biases.
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(xavier_uniform((3 * E, E)))      # [W_q; W_k; W_v]
        else:
            self.q_proj_weight = Parameter(xavier_uniform((E, E)))
            self.k_proj_weight = Parameter(xavier_uniform((E, self.kdim)))
            self.v_proj_weight = Parameter(xavier_uniform((E, self.vdim)))
        self.in_proj_bias = Parameter(xp.zeros(3 * E, dtype=self._dtype())) if bias else None
        self.out_proj = Linear(E, E, bias=bias)
        if bias:
            self.out_proj.bias.data[...] = 0
        self.positional = make_positional(positional, num_heads, self.head_dim, where)

    def _dtype(self):
        return (self.in_proj_weight if self._qkv_same_embed_dim else self.q_proj_weight).data.dtype

    def _projections(self):
        """``[(W, b, W.grad, b.grad)]`` for q, k, v: views into the parameters (b may be None)."""
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            Ws = [self.in_proj_weight.data[i * E:(i + 1) * E] for i in range(3)]
            gWs = [self.in_proj_weight.grad[i * E:(i + 1) * E] for i in range(3)]
        else:
            params = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
            Ws, gWs = [p.data for p in params], [p.grad for p in params]
        if self.in_proj_bias is None:
            return [(W, None, gW, None) for W, gW in zip(Ws, gWs)]
        b, gb = self.in_proj_bias.data, self.in_proj_bias.grad
        return [(W, b[i * E:(i + 1) * E], gW, gb[i * E:(i + 1) * E]) for i, (W, gW) in enumerate(zip(Ws, gWs))]

    def _check_inputs(self, query, key, value, key_padding_mask, attn_mask):
        where, dims = "MultiheadAttention", {}
        check_array(query, "query", where, shape=("B", "L", self.embed_dim), dims=dims)
        check_array(key, "key", where, shape=("B", "S", self.kdim), dims=dims)
        check_array(value, "value", where, shape=("B", "S", self.vdim), dims=dims)
        B, L, S, H = dims["B"], dims["L"], dims["S"], self.num_heads
        masks = []
        if key_padding_mask is not None:
            check_array(key_padding_mask, "key_padding_mask", where, shape=(B, S), dtype="bool")
            masks.append(key_padding_mask[:, None, None, :])        # (B, 1, 1, S): same for all queries
        float_mask = None
        if attn_mask is not None:
            is_float = getattr(getattr(attn_mask, "dtype", None), "kind", "") == "f"
            check_array(attn_mask, "attn_mask", where, dtype="float" if is_float else "bool")
            if attn_mask.ndim == 3 and attn_mask.shape == (B * H, L, S):
                attn_mask = attn_mask.reshape(B, H, L, S)             # PyTorch's (B*H, L, S) layout
            ok = attn_mask.ndim in (2, 4)
            if ok:
                try:
                    ok = broadcast_shapes(attn_mask.shape, (B, H, L, S)) == (B, H, L, S)
                except ValueError:
                    ok = False
            if not ok:
                raise ValueError(f"{where}: 'attn_mask' must have shape (L, S) = {(L, S)}, (B*H, L, S) = "
                                 f"{(B * H, L, S)} or broadcast to (B, H, L, S) = {(B, H, L, S)}, "
                                 f"got {tuple(attn_mask.shape)}")
            if is_float:
                float_mask = attn_mask                                # PyTorch: added to the scores
            else:
                masks.append(attn_mask)
        return B, L, S, combine_masks(*masks), float_mask

    def _split_heads(self, x):
        """``(B, T, E)`` -> ``(B, H, T, D)``: a view, no copy."""
        B, T, _ = x.shape
        return x.reshape(B, T, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    @staticmethod
    def _merge_heads(x):
        """``(B, H, T, D)`` -> ``(B, T, H*D)``: the heads' outputs side by side."""
        B, H, T, D = x.shape
        return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)

    def _out_proj(self, ctx):
        """Steps 4 and 5: concat the heads of ``ctx (B, H, L, D)``, then ``out_proj``, on the
        ``(B*L, E)`` rows: one GEMM (NumPy's stacked (B, L, E) matmul calls BLAS once per batch item)."""
        B, _, L, _ = ctx.shape
        return self.out_proj(self._merge_heads(ctx).reshape(B * L, self.embed_dim)).reshape(B, L, self.embed_dim)

    def _out_proj_backward(self, grad_output):
        """Steps 5 and 4 in reverse: ``(B, L, E)`` -> the heads' context gradient ``(B, H, L, D)`` (a view)."""
        return self._split_heads(self.out_proj.backward(grad_output.reshape(-1, self.embed_dim))
                                 .reshape(grad_output.shape))

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        B, L, _, mask, float_mask = self._check_inputs(query, key, value, key_padding_mask, attn_mask)
        H, D = self.num_heads, self.head_dim
        self.cache = None   # the last step's arrays go first: their memory serves this step's

        # 1. expand: linear maps to queries, keys and values
        fused = self._qkv_same_embed_dim and query is key and key is value
        if fused:   # self-attention: one (E -> 3E) matmul, then views of its three slices
            b = None if self.in_proj_bias is None else self.in_proj_bias.data
            qkv = _affine(query, self.in_proj_weight.data, b)             # (B, L, 3E)
            q, k, v = qkv.reshape(B, L, 3, H, D).transpose(2, 0, 3, 1, 4)  # 2. split: 3 x (B, H, L, D)
        else:
            q, k, v = (self._split_heads(_affine(x, W, b))                # 2. split heads
                       for x, (W, b, _, _) in zip((query, key, value), self._projections()))
        # positions (optional): RoPE rotates q and k; ALiBi / relative bias give a score bias (H, L, S)
        q, k, bias, pos_cache = positions_forward(self.positional, q, k, is_causal)
        if float_mask is not None:
            bias = float_mask if bias is None else bias + float_mask
        # 3. attention in every head at once (the heads are just another batch axis)
        if self.block_size is not None:     # tiled: no (L, S) scores or weights (docs/tiled.md)
            ctx, attn_cache = tiled_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout, is_causal=is_causal,
                                              training=self.training, attn_bias=bias, block_size=self.block_size)
            need_weights = False
        else:
            ctx, attn_cache = scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout, is_causal=is_causal, training=self.training,
                attn_bias=bias)
        # 4. concat heads, 5. output projection
        out = self._out_proj(ctx)                                         # (B, L, E)

        self.cache = (query, key, value, attn_cache, pos_cache)
        if not need_weights:
            return out, None
        weights = attn_cache.weights                                      # (B, H, L, S)
        return out, (weights.mean(axis=1) if average_attn_weights else weights)

    def backward(self, grad_output, sum_inputs=False):
        """``(dquery, dkey, dvalue)`` from the gradient of the output ``(B, L, E)``; with
        ``sum_inputs=True`` their sum, the gradient of ``x`` in ``mha(x, x, x)``."""
        query, key, value, attn_cache, pos_cache = self.cache
        # 5. output projection (accumulates out_proj's parameter gradients), 4. concat heads
        #    <- split the gradient the same way
        dctx = self._out_proj_backward(grad_output)                       # (B, H, L, D)
        # 3. attention per head
        attn_backward = tiled_attention_backward if isinstance(attn_cache, TiledAttentionCache) \
            else scaled_dot_product_attention_backward
        dq, dk, dv, *dbias = attn_backward(dctx, attn_cache)
        dq, dk = positions_backward(self.positional, dq, dk, dbias[0] if dbias else None, pos_cache)
        # 2. split heads <- merge, 1. expand: y = x W^T + b  =>  dW += dy^T x, db += sum dy, dx = dy W
        return self._expand_backward((query, key, value), (dq, dk, dv), sum_inputs)

    def _expand_backward(self, inputs, head_grads, sum_inputs=False):
        """Steps 2 and 1 in reverse for q, k and v: merge each gradient's heads, then undo
        ``y = x W^T + b``: ``dW += dy^T x``, ``db += sum dy``, ``dx = dy W``.  Returns
        ``(dquery, dkey, dvalue)``, or their sum with ``sum_inputs``; the subclasses
        (grouped-query, linear attention) reuse it."""
        query, key, value = inputs
        if sum_inputs and not (query.shape == key.shape == value.shape):
            raise ValueError(f"{type(self).__name__}.backward: sum_inputs=True adds the gradients of query, key and "
                             f"value, which needs one shape; got {tuple(query.shape)}, {tuple(key.shape)}, "
                             f"{tuple(value.shape)}")
        if self._qkv_same_embed_dim and query is key and key is value:   # the fused forward, in reverse
            return self._fused_expand_backward(query, head_grads, sum_inputs)
        grads = []
        for x, dy, (W, _, gW, gb) in zip(inputs, head_grads, self._projections()):
            dy = self._merge_heads(dy).reshape(-1, W.shape[0])             # (B*T, H*D)
            gW += dy.T @ x.reshape(-1, x.shape[-1])
            if gb is not None:
                gb += dy.sum(axis=0)
            grads.append((dy @ W).reshape(x.shape))
        if sum_inputs:
            grads[0] += grads[1]                                           # fresh arrays: add in place
            grads[0] += grads[2]
            return grads[0]
        return tuple(grads)

    def _fused_expand_backward(self, x, head_grads, sum_inputs=False):
        """``_expand_backward`` of ``[Q K V] = x W_in^T + b_in``: the three merged gradients side by
        side, ``dY = [dQ dK dV] (B*T, 3E)``, then ``dW_in += dY^T x`` and ``db_in += sum dY`` once
        (one GEMM and one sum instead of three) and ``dx_i = dY_i W_i`` for each block; with
        ``sum_inputs``, ``dx = dQ W_q + dK W_k + dV W_v = dY W_in``, one product."""
        B, T, E = x.shape
        H, D = self.num_heads, self.head_dim
        dY = xp.empty((B, T, 3, H, D), dtype=head_grads[0].dtype)
        for i, dy in enumerate(head_grads):
            dY[:, :, i] = dy.transpose(0, 2, 1, 3)                        # merge heads: (B, T, H, D)
        dY = dY.reshape(B * T, 3 * E)
        x2 = x.reshape(B * T, E)
        self.in_proj_weight.grad += dY.T @ x2
        if self.in_proj_bias is not None:
            self.in_proj_bias.grad += dY.sum(axis=0)
        W = self.in_proj_weight.data
        if sum_inputs:   # one (B*T, 3E) @ (3E, E) GEMM instead of three (E, E) ones and two additions
            return (dY @ W).reshape(B, T, E)
        return tuple((dY[:, i * E:(i + 1) * E] @ W[i * E:(i + 1) * E]).reshape(B, T, E) for i in range(3))

    def extra_repr(self):
        s = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, " \
            f"bias={self.in_proj_bias is not None}"
        if not self._qkv_same_embed_dim:
            s += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.positional is not None and not isinstance(self.positional, Module):   # (Modules: shown below)
            s += f", positional={self.positional!r}"
        if self.block_size is not None:
            s += f", block_size={self.block_size}"
        return s + ", batch_first=True"
