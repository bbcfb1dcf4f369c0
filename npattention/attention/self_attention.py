"""Self-, cross-, causal and local attention: thin wrappers over :class:`MultiheadAttention`.

* :class:`SelfAttention`: queries, keys and values are linear maps of the **same**
  input ``x (B, T, E)``; since ``x`` feeds all three, ``dx = dq + dk + dv``.
* :class:`CrossAttention`: queries from the decoder ``(B, L, E)``, keys and values from
  the encoder ``(B, S, E_enc)`` (encoder-decoder attention).
* :class:`CausalSelfAttention`: self-attention where position ``i`` sees only ``j <= i``.
* :class:`LocalSelfAttention`: truncated self-attention (class note 002, speech): position
  ``i`` sees only ``|i - j| <= window``; it computes only the band (``O(T w)``, see
  :mod:`npattention.attention.band`) unless the band covers the whole sequence.

All return ``(output, weights)`` like :class:`MultiheadAttention`; masks are boolean with
True = masked out.
"""
from ..backend import xp
from ..module import Module
from ..validate import check_array, check_positive_int, renamed_args
from ..masks import combine_masks
from .band import band_attention, band_attention_backward, band_to_dense, dense_to_band
from .multihead import MultiheadAttention

__all__ = ["CausalSelfAttention", "CrossAttention", "LocalSelfAttention", "SelfAttention", "band_mask"]


def band_mask(T, window):
    """``(T, T)`` boolean mask, True where ``|i - j| > window`` (outside the local window)."""
    pos = xp.arange(T)
    return xp.abs(pos[:, None] - pos[None, :]) > window


class SelfAttention(Module):
    """``MultiheadAttention(x, x, x)``: every position attends to every position of ``x``.

    ``forward(x (B, T, E), key_padding_mask=None, attn_mask=None, need_weights=True,
    average_attn_weights=True, is_causal=False)`` -> ``(out (B, T, E), weights)``;
    ``backward(dout)`` -> ``dx = dq + dk + dv``.  Parameters live in ``self.attn``.
    cache: none of its own; the wrapped ``MultiheadAttention`` keeps it.
    """

    def __init__(self, embed_dim, num_heads=1, dropout=0.0, bias=True):
        self.attn = MultiheadAttention(embed_dim, num_heads, dropout=dropout, bias=bias)

    def forward(self, x, key_padding_mask=None, attn_mask=None, need_weights=True,
                average_attn_weights=True, is_causal=False):
        with renamed_args(type(self).__name__, "MultiheadAttention", query="x", key="x", value="x"):
            return self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights,
                             attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)

    def backward(self, grad_output):
        return self.attn.backward(grad_output, sum_inputs=True)  # x was used three times: dq + dk + dv

    def extra_repr(self):
        return self.attn.extra_repr()


class CausalSelfAttention(SelfAttention):
    """Masked (decoder) self-attention: position ``i`` attends only to ``j <= i``.

    cache: none of its own; the wrapped ``MultiheadAttention`` keeps it.
    """

    def forward(self, x, key_padding_mask=None, attn_mask=None, need_weights=True, average_attn_weights=True):
        with renamed_args(type(self).__name__, "MultiheadAttention", query="x", key="x", value="x"):
            return self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights,
                             attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=True)


class LocalSelfAttention(SelfAttention):
    """Truncated self-attention: position ``i`` attends only to ``|i - j| <= window``.

    ``impl="band"`` computes only the band with :func:`npattention.attention.band.band_attention`:
    scores, weights and their gradients are ``(B, H, T, 2w + 1)``, so time and memory grow as
    ``O(T w)`` instead of ``O(T^2)`` (benchmarks/bench_band.py).  ``impl="masked"`` builds the full
    ``T x T`` scores and masks them with :func:`band_mask` (the textbook version, same numbers).
    ``impl="auto"`` (default) uses the band when it is narrower than the sequence
    (``2w + 1 < T``), else the masked full matrix.

    The parameters are those of ``self.attn`` (a :class:`MultiheadAttention`), so state dicts
    are interchangeable with :class:`SelfAttention`.  ``need_weights=True`` returns the weights
    as a ``(B, T, T)`` (or per head ``(B, H, T, T)``) map, as ``MultiheadAttention`` does -- an
    ``O(T^2)`` array made only for the caller; pass ``need_weights=False`` on long sequences, or
    ``band_weights=True`` to get them in band layout ``(B, [H,] T, 2w + 1)`` (entry ``[i, o]`` is
    the weight of key ``i + o - w``).
    cache: ``(x, band_cache)``: the input and the band attention's cache (the projections keep theirs).
    """

    def __init__(self, embed_dim, num_heads, window, dropout=0.0, bias=True, impl="auto"):
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias)
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"LocalSelfAttention: 'window' must be an int >= 0, got {window!r}")
        if impl not in ("auto", "band", "masked"):
            raise ValueError(f"LocalSelfAttention: 'impl' must be 'auto', 'band' or 'masked', got {impl!r}")
        self.window = window
        self.impl = impl

    def forward(self, x, key_padding_mask=None, attn_mask=None, need_weights=True, average_attn_weights=True,
                is_causal=False, band_weights=False):
        check_array(x, "x", "LocalSelfAttention", shape=(None, None, self.attn.embed_dim))
        T = x.shape[1]
        use_band = self.impl == "band" or (self.impl == "auto" and 2 * self.window + 1 < T)
        self._band = use_band
        if not use_band:
            band = band_mask(T, self.window)                  # (T, T), True outside the window
            out, weights = self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                     attn_mask=combine_masks(band, attn_mask),
                                     average_attn_weights=average_attn_weights, is_causal=is_causal)
            if need_weights and band_weights:
                weights = dense_to_band(weights, self.window)
            return out, weights
        return self._band_forward(x, key_padding_mask, attn_mask, need_weights, average_attn_weights,
                                  is_causal, band_weights)

    def _band_forward(self, x, key_padding_mask, attn_mask, need_weights, average_attn_weights, is_causal,
                      band_weights):
        mha = self.attn
        B, T, _ = x.shape
        if key_padding_mask is not None:
            check_array(key_padding_mask, "key_padding_mask", "LocalSelfAttention", shape=(B, T), dtype="bool")
            key_padding_mask = key_padding_mask[:, None, :]            # (B, 1, T): same for every head
        if attn_mask is not None:
            check_array(attn_mask, "attn_mask", "LocalSelfAttention", dtype="bool")
            H = mha.num_heads
            if attn_mask.ndim == 3 and attn_mask.shape == (B * H, T, T):
                attn_mask = attn_mask.reshape(B, H, T, T)              # PyTorch's (B*H, T, T) layout
            elif attn_mask.ndim not in (2, 4) or attn_mask.shape[-2:] != (T, T):
                raise ValueError(f"LocalSelfAttention: 'attn_mask' must have shape (T, T) = {(T, T)}, "
                                 f"(B*H, T, T) = {(B * H, T, T)} or (B, H, T, T), got {tuple(attn_mask.shape)}")
        # 1. expand and 2. split heads, with the parameters of self.attn (as MultiheadAttention does)
        q, k, v = (mha._split_heads(x @ W.T + b if b is not None else x @ W.T)
                   for W, b, _, _ in mha._projections())               # 3 x (B, H, T, D)
        # 3. attention inside the band only
        (ctx, weights), cache = band_attention(q, k, v, self.window, key_padding_mask=key_padding_mask,
                                               attn_mask=attn_mask, is_causal=is_causal, dropout_p=mha.dropout,
                                               training=self.training, need_weights=True)
        # 4. concat heads, 5. output projection
        out = mha.out_proj(mha._merge_heads(ctx))
        self.cache = (x, cache)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(axis=1)
        return out, (weights if band_weights else band_to_dense(weights, self.window))

    def backward(self, grad_output):
        if not self._band:
            return super().backward(grad_output)
        mha = self.attn
        x, cache = self.cache
        dctx = mha._split_heads(mha.out_proj.backward(grad_output))    # 5. out_proj, 4. concat heads
        dq, dk, dv = band_attention_backward(dctx, cache)             # 3. band attention
        # 2. split, 1. expand, in reverse: x fed q, k and v, so its gradients add (dq + dk + dv)
        return mha._expand_backward((x, x, x), (dq, dk, dv), sum_inputs=True)

    def extra_repr(self):
        return f"{self.attn.extra_repr()}, window={self.window}, impl={self.impl!r}"


class CrossAttention(Module):
    """Encoder-decoder attention: queries from ``x_dec (B, L, E)``, keys and values from
    ``x_enc (B, S, enc_dim)``; ``backward(dout)`` -> ``(dx_dec, dx_enc)`` with
    ``dx_enc = dkey + dvalue`` (the encoder output feeds both).
    cache: none of its own; the wrapped ``MultiheadAttention`` keeps it.
    """

    def __init__(self, embed_dim, num_heads=1, enc_dim=None, dropout=0.0, bias=True):
        enc_dim = embed_dim if enc_dim is None else check_positive_int(enc_dim, "enc_dim", "CrossAttention")
        self.attn = MultiheadAttention(embed_dim, num_heads, dropout=dropout, bias=bias, kdim=enc_dim, vdim=enc_dim)

    def forward(self, x_dec, x_enc, key_padding_mask=None, attn_mask=None, need_weights=True,
                average_attn_weights=True):
        with renamed_args("CrossAttention", "MultiheadAttention", query="x_dec", key="x_enc", value="x_enc"):
            return self.attn(x_dec, x_enc, x_enc, key_padding_mask=key_padding_mask, need_weights=need_weights,
                             attn_mask=attn_mask, average_attn_weights=average_attn_weights)

    def backward(self, grad_output):
        dq, dk, dv = self.attn.backward(grad_output)
        return dq, dk + dv

    def extra_repr(self):
        return self.attn.extra_repr()
