"""A small decoder-only Transformer (GPT), built from the package's own layers.

The whole model, on token ids ``idx (B, T)``::

    x   = E[idx] + P[pos]                     (B, T, d)   token + position embeddings, dropout
    for each of the N blocks:                             a pre-norm Transformer block:
        x = x + Drop(CausalSA(LN1(x)))                    every position attends to itself and the past
        x = x + Drop(FFN(LN2(x)))                         FFN(z) = W2 GELU(W1 z + b1) + b2, width 4d
    h   = LN_f(x)                             (B, T, d)
    logits = h E^T                            (B, T, V)   weight tying: the output layer IS E

A block is exactly :class:`npattention.transformer.TransformerEncoderLayer` with
``norm_first=True`` and ``is_causal=True``: a GPT is a stack of pre-norm encoder layers
that cannot look ahead.  Training is next-token prediction: ``logits[:, t]`` predicts
``idx[:, t + 1]``, all ``T`` positions in one pass thanks to the causal mask.

Positions are learned (``P``, an :class:`Embedding` of ``block_size`` rows) by default;
``positional="sinusoidal"`` adds the fixed table instead, times 0.1 (the tokens start at
0.02: at amplitude 1 the table swamps them and the model of the length-generalisation demo
did not learn at all, at the tokens' own size it learned too slowly; docs/modern_attention.md
section 8 -- the 2017 model multiplies the tokens by ``sqrt(d)`` instead), and ``"rope"``, ``"alibi"``,
``"relative"`` put the positions inside every attention layer (nothing is added to the
tokens; npattention/attention/positions.py), ``"none"`` uses no position code at all (the
causal mask alone; a baseline).  With a
``padding_mask`` (True at padding, e.g. prompts of different lengths *left*-padded for
batched generation) the padded keys are masked and each real token gets the position it
would have without the padding: ``pos = max(cumsum(not pad) - 1, 0)``, so a padded row
gives the same logits as the row alone.  (The in-attention options see only offsets
between tokens, so left padding leaves them unchanged as well.)

Weight tying: the same ``(V, d)`` matrix ``E`` embeds the input tokens and scores the
output tokens; its gradient is the sum of both uses.  Initialisation follows GPT-2 /
minGPT: every weight matrix ``N(0, 0.02^2)``, the projections that write into the residual
stream (attention ``out_proj`` and the FFN's second layer) ``N(0, (0.02 / sqrt(2N))^2)``,
biases zero.

Generation (greedy, sampling, beam search, with a KV cache) is in
:mod:`npattention.decoding`; :meth:`GPT.generate` is a shortcut.
"""
import math

from .backend import add_at, get_rng, xp
from .layers import Dropout, Embedding, LayerNorm
from .module import Module
from .attention.positions import POSITIONAL_CHOICES
from .positional import sinusoidal_table
from .transformer import TransformerEncoderLayer
from .validate import check_array, check_positive_int, check_probability

__all__ = ["GPT"]

_SINUSOIDAL_SCALE = 0.1   # amplitude of the fixed table next to token embeddings that start at 0.02


class GPT(Module):
    """Decoder-only Transformer language model: ``forward(idx (B, T) int, padding_mask=None)``
    -> logits ``(B, T, vocab_size)``.

    ``GPT(vocab_size, block_size, n_layer=2, n_head=4, d_model=64, dropout=0.0,
    tie_weights=True, pad_idx=None)``: ``block_size`` is the longest sequence (the number
    of learned positions); ``d_model`` must be divisible by ``n_head``; the FFN is
    ``4 * d_model`` wide with GELU in the tanh form GPT-2 uses
    (``activation="gelu_tanh"``: the exact erf form is a slow series in NumPy).  ``padding_mask`` ``(B, T)`` bool, True = padding; it
    defaults to ``idx == pad_idx`` when ``pad_idx`` is set, else no padding.

    ``backward(dlogits)`` returns None (ids are not differentiable) and accumulates every
    parameter gradient.  The per-head attention weights of the last forward are in
    :meth:`attention_maps`.  cache: ``(h, pos)``: the final-norm output (for the tied
    output layer) and the position ids.
    """

    def __init__(self, vocab_size, block_size, n_layer=2, n_head=4, d_model=64, dropout=0.0,
                 tie_weights=True, pad_idx=None, positional="learned"):
        where = "GPT"
        self.vocab_size = check_positive_int(vocab_size, "vocab_size", where)
        self.block_size = check_positive_int(block_size, "block_size", where)
        check_positive_int(n_layer, "n_layer", where)
        check_positive_int(n_head, "n_head", where)
        self.d_model = check_positive_int(d_model, "d_model", where)
        if d_model % n_head:
            raise ValueError(f"{where}: 'd_model' ({d_model}) must be divisible by 'n_head' ({n_head})")
        check_probability(dropout, "dropout", where)
        if pad_idx is not None and not (isinstance(pad_idx, int) and 0 <= pad_idx < vocab_size):
            raise ValueError(f"{where}: 'pad_idx' must be None or an int in [0, {vocab_size}), got {pad_idx!r}")
        if positional not in ("learned", "sinusoidal", "none") + POSITIONAL_CHOICES:
            raise ValueError(f"{where}: 'positional' must be one of {('learned', 'sinusoidal', 'none') + POSITIONAL_CHOICES}"
                             f", got {positional!r}")
        self.pad_idx = pad_idx
        self.positional = positional
        self.config = dict(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                           d_model=d_model, dropout=dropout, tie_weights=tie_weights, pad_idx=pad_idx,
                           positional=positional)
        self.wte = Embedding(vocab_size, d_model, padding_idx=pad_idx)   # token embedding E (V, d)
        # position embedding P (block_size, d): learned, a fixed sinusoidal buffer, or none
        self.wpe = Embedding(block_size, d_model) if positional == "learned" else None
        if positional == "sinusoidal":
            self.register_buffer("pe", sinusoidal_table(block_size, d_model))
        self.drop = Dropout(dropout)
        in_attention = positional if positional in POSITIONAL_CHOICES else None
        self.blocks = [TransformerEncoderLayer(d_model, n_head, 4 * d_model, dropout, activation="gelu_tanh",
                                               norm_first=True, positional=in_attention) for _ in range(n_layer)]
        self.ln_f = LayerNorm(d_model)
        self.tie_weights = bool(tie_weights)
        if self.tie_weights:
            self.lm_head = None                                          # logits = h E^T
        else:
            from .layers import Linear
            self.lm_head = Linear(d_model, vocab_size, bias=False)
        self._init_weights(n_layer)

    def _init_weights(self, n_layer):
        rng, std = get_rng(), 0.02
        for name, p in self.named_parameters():
            if p.data.ndim < 2:   # biases and LayerNorm gains keep their init (0 and 1)
                continue
            scale = std / math.sqrt(2 * n_layer) if name.endswith(("out_proj.weight", "linear2.weight")) else std
            p.data[...] = rng.normal(p.data.shape, scale=scale, dtype=p.data.dtype)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.data[...] = 0
        if self.pad_idx is not None:
            self.wte.weight.data[self.pad_idx] = 0

    # ---------------------------------------------------------------- pieces
    @property
    def output_weight(self):
        """The ``(V, d)`` matrix that scores tokens: ``E`` when tied, else ``lm_head.weight``."""
        return self.wte.weight if self.tie_weights else self.lm_head.weight

    def padding(self, idx, padding_mask=None):
        """The ``(B, T)`` padding mask used for ``idx`` (or None): given, from ``pad_idx``, or none."""
        if padding_mask is not None:
            return check_array(padding_mask, "padding_mask", "GPT", shape=tuple(idx.shape), dtype="bool")
        return None if self.pad_idx is None else idx == self.pad_idx

    @staticmethod
    def position_ids(idx, padding_mask=None):
        """``(B, T)`` positions: ``0..T-1``, or, with padding, the count of real tokens before
        each one (``max(cumsum(not pad) - 1, 0)``), so left padding does not shift positions."""
        B, T = idx.shape
        if padding_mask is None:
            return xp.broadcast_to(xp.arange(T, dtype=xp.int64), (B, T))
        return xp.maximum(xp.cumsum(~padding_mask, axis=1) - 1, 0).astype(xp.int64)

    def position_rows(self, pos):
        """``P[pos]`` (learned or sinusoidal) for position ids ``pos``, or 0 when positions live in
        the attention layers (or nowhere)."""
        if self.wpe is not None:
            return self.wpe.weight.data[pos]
        if self.positional == "sinusoidal":
            return (self.pe[pos] * _SINUSOIDAL_SCALE).astype(self.wte.weight.data.dtype)
        return 0.0

    def head(self, h):
        """Vocabulary logits of final hidden states ``h (..., d)``: ``h W^T``."""
        return h @ self.output_weight.data.T

    def forward(self, idx, padding_mask=None):
        check_array(idx, "idx", "GPT", shape=(None, None), dtype="int")
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"GPT: sequence length {T} exceeds 'block_size' {self.block_size}")
        pad = self.padding(idx, padding_mask)
        pos = self.position_ids(idx, pad)
        x = self.drop(self.wte(idx) + self.position_rows(pos))    # x = E[idx] + P[pos]
        for block in self.blocks:   # a loop over layers (each a different function)
            x = block(x, src_key_padding_mask=pad, is_causal=True)
        h = self.ln_f(x)
        self.cache = (h, pos)
        return self.head(h) if self.tie_weights else self.lm_head(h)

    def backward(self, grad_output):
        h, pos = self.cache
        # logits = h W^T  =>  dW += dlogits^T h,  dh = dlogits W
        if self.tie_weights:
            W = self.wte.weight
            W.grad += grad_output.reshape(-1, self.vocab_size).T @ h.reshape(-1, self.d_model)
            dh = grad_output @ W.data
        else:
            dh = self.lm_head.backward(grad_output)
        dx = self.ln_f.backward(dh)                                 # h = LN_f(x)
        for block in reversed(self.blocks):                         # x = x + ... (each block)
            dx = block.backward(dx)
        dx = self.drop.backward(dx)
        # x = E[idx] + P[pos]: both lookups get the same gradient, scatter-added to their rows
        if self.wpe is not None:
            add_at(self.wpe.weight.grad, pos.reshape(-1), dx.reshape(-1, self.d_model))
        self.wte.backward(dx)                                       # E's second use (tied) adds here

    # ---------------------------------------------------------------- helpers
    def attention_maps(self):
        """Per-head attention weights of the last forward, one ``(B, H, T, T)`` per block."""
        return [block.self_attn_weights for block in self.blocks]

    def generate(self, idx, max_new_tokens, **options):
        """Continue the prompts ``idx (B, T)`` by ``max_new_tokens`` tokens (KV cache by default);
        see :func:`npattention.decoding.generate` for the options (temperature, top_k, top_p, seed, ...)."""
        from .decoding import generate

        return generate(self, idx, max_new_tokens, **options)

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c['vocab_size']}, block_size={c['block_size']}, n_layer={c['n_layer']}, "
                f"n_head={c['n_head']}, d_model={c['d_model']}, tie_weights={c['tie_weights']}, "
                f"positional={c['positional']!r}")
