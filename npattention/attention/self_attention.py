"""Self-, cross-, causal and local attention: thin wrappers over :class:`MultiheadAttention`.

* :class:`SelfAttention`: queries, keys and values are linear maps of the **same**
  input ``x (B, T, E)``; since ``x`` feeds all three, ``dx = dq + dk + dv``.
* :class:`CrossAttention`: queries from the decoder ``(B, L, E)``, keys and values from
  the encoder ``(B, S, E_enc)`` (encoder-decoder attention).
* :class:`CausalSelfAttention`: self-attention where position ``i`` sees only ``j <= i``.
* :class:`LocalSelfAttention`: truncated self-attention (class note 002, speech): position
  ``i`` sees only ``|i - j| <= window``, a band mask.

All return ``(output, weights)`` like :class:`MultiheadAttention`; masks are boolean with
True = masked out.
"""
from ..backend import xp
from ..module import Module
from ..validate import check_array, check_positive_int
from ..masks import combine_masks
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
    """

    def __init__(self, embed_dim, num_heads=1, dropout=0.0, bias=True):
        self.attn = MultiheadAttention(embed_dim, num_heads, dropout=dropout, bias=bias)

    def forward(self, x, key_padding_mask=None, attn_mask=None, need_weights=True,
                average_attn_weights=True, is_causal=False):
        return self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights,
                         attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)

    def backward(self, grad_output):
        dq, dk, dv = self.attn.backward(grad_output)
        return dq + dk + dv  # x was used three times: its gradients add up

    def extra_repr(self):
        return self.attn.extra_repr()


class CausalSelfAttention(SelfAttention):
    """Masked (decoder) self-attention: position ``i`` attends only to ``j <= i``."""

    def forward(self, x, key_padding_mask=None, attn_mask=None, need_weights=True, average_attn_weights=True):
        return self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights,
                         attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=True)


class LocalSelfAttention(SelfAttention):
    """Truncated self-attention: position ``i`` attends only to ``|i - j| <= window``."""

    def __init__(self, embed_dim, num_heads, window, dropout=0.0, bias=True):
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias)
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"LocalSelfAttention: 'window' must be an int >= 0, got {window!r}")
        self.window = window

    def forward(self, x, key_padding_mask=None, attn_mask=None, need_weights=True, average_attn_weights=True):
        check_array(x, "x", "LocalSelfAttention", shape=(None, None, self.attn.embed_dim))
        band = band_mask(x.shape[1], self.window)             # (T, T), True outside the window
        return self.attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights,
                         attn_mask=combine_masks(band, attn_mask), average_attn_weights=average_attn_weights)

    def extra_repr(self):
        return f"{self.attn.extra_repr()}, window={self.window}"


class CrossAttention(Module):
    """Encoder-decoder attention: queries from ``x_dec (B, L, E)``, keys and values from
    ``x_enc (B, S, enc_dim)``; ``backward(dout)`` -> ``(dx_dec, dx_enc)`` with
    ``dx_enc = dkey + dvalue`` (the encoder output feeds both)."""

    def __init__(self, embed_dim, num_heads=1, enc_dim=None, dropout=0.0, bias=True):
        enc_dim = embed_dim if enc_dim is None else check_positive_int(enc_dim, "enc_dim", "CrossAttention")
        self.attn = MultiheadAttention(embed_dim, num_heads, dropout=dropout, bias=bias, kdim=enc_dim, vdim=enc_dim)

    def forward(self, x_dec, x_enc, key_padding_mask=None, attn_mask=None, need_weights=True,
                average_attn_weights=True):
        return self.attn(x_dec, x_enc, x_enc, key_padding_mask=key_padding_mask, need_weights=need_weights,
                         attn_mask=attn_mask, average_attn_weights=average_attn_weights)

    def backward(self, grad_output):
        dq, dk, dv = self.attn.backward(grad_output)
        return dq, dk + dv

    def extra_repr(self):
        return self.attn.extra_repr()
