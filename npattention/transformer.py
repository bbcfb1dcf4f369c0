"""The Transformer (Vaswani et al., 2017): encoder, decoder and the whole seq2seq model.

:class:`PositionwiseFeedForward`, :class:`TransformerEncoderLayer` / :class:`TransformerDecoderLayer`
(attention and FFN sub-layers, each residual + LayerNorm, post- or pre-norm), their stacks, and
:class:`Transformer` (embeddings, positions, encoder, decoder, output layer) with :func:`greedy_decode`.
Names and argument order follow ``torch.nn.Transformer*`` (always ``batch_first``); each attention layer
keeps its per-head weights ``(B, H, Tq, Tk)`` for plotting.  docs/transformer.md has the details and every backward.
"""
import copy
import math

from .attention.multihead import MultiheadAttention
from .attention.positions import POSITIONAL_CHOICES
from .backend import xp
from .data import Vocab
from .masks import causal_mask
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear, ReLU, xavier_uniform
from .module import Module
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .validate import check_array, check_positive_int, check_probability, renamed_args

__all__ = [
    "PositionwiseFeedForward",
    "Transformer",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "greedy_decode",
]

# as torch: "gelu" is the exact (erf) GELU; "gelu_tanh" the tanh approximation (GPT-2's)
_ACTIVATIONS = {"relu": ReLU, "gelu": GELU, "gelu_tanh": lambda: GELU(approximate="tanh")}


def _activation(activation, where):
    if isinstance(activation, Module):
        return activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{where}: 'activation' must be one of {sorted(_ACTIVATIONS)} or a Module, got {activation!r}")
    return _ACTIVATIONS[activation]()


class PositionwiseFeedForward(Module):
    """``y = linear2(dropout(act(linear1(x))))``: ``(..., d_model) -> (..., d_model)``.

    ``linear1``: ``d_model -> dim_feedforward``, ``linear2``: back to ``d_model``; the same
    weights at every position (a 1x1 convolution over time).  Backward: the chain rule
    through the four steps in reverse.
    cache: none of its own (``linear1``, the activation, the dropout and ``linear2`` keep theirs).
    """

    def __init__(self, d_model, dim_feedforward=2048, dropout=0.1, activation="relu"):
        where = "PositionwiseFeedForward"
        check_positive_int(d_model, "d_model", where)
        check_positive_int(dim_feedforward, "dim_feedforward", where)
        self.linear1 = Linear(d_model, dim_feedforward)
        self.activation = _activation(activation, where)
        self.dropout = Dropout(check_probability(dropout, "dropout", where))
        self.linear2 = Linear(dim_feedforward, d_model)

    def forward(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def backward(self, grad_output):
        g = self.linear2.backward(grad_output)
        g = self.dropout.backward(g)
        g = self.activation.backward(g)
        return self.linear1.backward(g)


class TransformerEncoderLayer(Module):
    """Self-attention + feed-forward, each with a residual connection and LayerNorm.

    ``forward(src (B, S, d), src_mask=None, src_key_padding_mask=None (B, S) bool,
    is_causal=False)`` -> ``(B, S, d)``.  With ``x = src``::

        post-norm:  h = LN1(x + Drop1(SA(x)))        out = LN2(h + Drop2(FFN(h)))
        pre-norm:   h = x + Drop1(SA(LN1(x)))        out = h + Drop2(FFN(LN2(h)))

    where ``SA(z) = MultiheadAttention(z, z, z)``.  Backward returns ``d src``.  The
    per-head attention weights of the last forward are kept in ``self_attn_weights``
    ``(B, H, S, S)``.  cache: none of its own; each sub-layer (attention, FFN, norms, dropouts)
    keeps its piece, and the layer runs each of them once per forward.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, positional=None, attn_block_size=None):
        where = "TransformerEncoderLayer"
        check_probability(dropout, "dropout", where)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, positional=positional,
                                            block_size=attn_block_size)
        self.ff = PositionwiseFeedForward(d_model, dim_feedforward, dropout, activation)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.norm_first = bool(norm_first)
        self.d_model = d_model
        self.self_attn_weights = None

    def _self_attention_block(self, z, attn_mask, key_padding_mask, is_causal):
        with renamed_args("TransformerEncoderLayer", "MultiheadAttention",
                          attn_mask="src_mask", key_padding_mask="src_key_padding_mask"):
            out, self.self_attn_weights = self.self_attn(
                z, z, z, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                average_attn_weights=False, is_causal=is_causal)
        return out

    def _self_attention_block_backward(self, g):
        return self.self_attn.backward(g, sum_inputs=True)  # z was used as query, key and value: dq + dk + dv

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        check_array(src, "src", "TransformerEncoderLayer", shape=(None, "S", self.d_model))
        x = src
        if self.norm_first:
            h = x + self.dropout1(self._self_attention_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal))
            return h + self.dropout2(self.ff(self.norm2(h)))
        h = self.norm1(x + self.dropout1(self._self_attention_block(x, src_mask, src_key_padding_mask, is_causal)))
        return self.norm2(h + self.dropout2(self.ff(h)))

    def backward(self, grad_output):
        g = grad_output
        if self.norm_first:
            # forward was: out = h + Drop2(FFN(LN2(h))); the residual passes g straight to h, the branch adds its part
            dh = g + self.norm2.backward(self.ff.backward(self.dropout2.backward(g)))
            # forward was: h = x + Drop1(SA(LN1(x)))
            return dh + self.norm1.backward(self._self_attention_block_backward(self.dropout1.backward(dh)))
        # forward was: out = LN2(r2), r2 = h + Drop2(FFN(h)); first through the norm, then split at the sum
        dr2 = self.norm2.backward(g)
        dh = dr2 + self.ff.backward(self.dropout2.backward(dr2))
        # forward was: h = LN1(r1), r1 = x + Drop1(SA(x))
        dr1 = self.norm1.backward(dh)
        return dr1 + self._self_attention_block_backward(self.dropout1.backward(dr1))


class TransformerDecoderLayer(Module):
    """Masked self-attention, encoder-decoder attention and feed-forward, each residual + LayerNorm.

    ``forward(tgt (B, T, d), memory (B, S, d), tgt_mask=None, memory_mask=None,
    tgt_key_padding_mask=None, memory_key_padding_mask=None, tgt_is_causal=False,
    memory_is_causal=False)`` -> ``(B, T, d)``.  With ``x = tgt``, ``m = memory``::

        post-norm:  h1 = LN1(x + Drop1(SA(x)))
                    h2 = LN2(h1 + Drop2(CA(h1, m)))
                    out = LN3(h2 + Drop3(FFN(h2)))
        pre-norm:   h1 = x + Drop1(SA(LN1(x)))
                    h2 = h1 + Drop2(CA(LN2(h1), m))
                    out = h2 + Drop3(FFN(LN3(h2)))

    ``SA`` is self-attention masked by ``tgt_mask`` (pass the causal mask, or
    ``tgt_is_causal=True``); ``CA(q, m) = MultiheadAttention(q, m, m)`` lets every target
    position look at the whole source.  Backward returns ``(d tgt, d memory)``; ``memory``
    only enters through the keys and values of ``CA``, so ``d memory = dK + dV``.
    Weights of the last forward: ``self_attn_weights`` ``(B, H, T, T)`` and
    ``cross_attn_weights`` ``(B, H, T, S)``.  cache: none of its own; each sub-layer keeps its piece.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, positional=None, attn_block_size=None):
        where = "TransformerDecoderLayer"
        check_probability(dropout, "dropout", where)
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, positional=positional,
                                            block_size=attn_block_size)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, block_size=attn_block_size)
        self.ff = PositionwiseFeedForward(d_model, dim_feedforward, dropout, activation)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.norm_first = bool(norm_first)
        self.d_model = d_model
        self.self_attn_weights = self.cross_attn_weights = None

    def _self_attention_block(self, z, attn_mask, key_padding_mask, is_causal):
        with renamed_args("TransformerDecoderLayer", "MultiheadAttention",
                          attn_mask="tgt_mask", key_padding_mask="tgt_key_padding_mask"):
            out, self.self_attn_weights = self.self_attn(
                z, z, z, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                average_attn_weights=False, is_causal=is_causal)
        return out

    def _cross_attention_block(self, z, memory, attn_mask, key_padding_mask, is_causal):
        with renamed_args("TransformerDecoderLayer", "MultiheadAttention",
                          attn_mask="memory_mask", key_padding_mask="memory_key_padding_mask"):
            out, self.cross_attn_weights = self.multihead_attn(
                z, memory, memory, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                average_attn_weights=False, is_causal=is_causal)
        return out

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        dims = {}
        check_array(tgt, "tgt", "TransformerDecoderLayer", shape=("B", "T", self.d_model), dims=dims)
        check_array(memory, "memory", "TransformerDecoderLayer", shape=("B", "S", self.d_model), dims=dims)
        x, m = tgt, memory
        sa = (tgt_mask, tgt_key_padding_mask, tgt_is_causal)
        ca = (memory_mask, memory_key_padding_mask, memory_is_causal)
        if self.norm_first:
            h1 = x + self.dropout1(self._self_attention_block(self.norm1(x), *sa))
            h2 = h1 + self.dropout2(self._cross_attention_block(self.norm2(h1), m, *ca))
            return h2 + self.dropout3(self.ff(self.norm3(h2)))
        h1 = self.norm1(x + self.dropout1(self._self_attention_block(x, *sa)))
        h2 = self.norm2(h1 + self.dropout2(self._cross_attention_block(h1, m, *ca)))
        return self.norm3(h2 + self.dropout3(self.ff(h2)))

    def backward(self, grad_output):
        g = grad_output
        if self.norm_first:
            # forward was: out = h2 + Drop3(FFN(LN3(h2)))
            dh2 = g + self.norm3.backward(self.ff.backward(self.dropout3.backward(g)))
            # forward was: h2 = h1 + Drop2(CA(LN2(h1), m))
            dq, dk, dv = self.multihead_attn.backward(self.dropout2.backward(dh2))
            dh1 = dh2 + self.norm2.backward(dq)
            # forward was: h1 = x + Drop1(SA(LN1(x)))
            dz = self.self_attn.backward(self.dropout1.backward(dh1), sum_inputs=True)   # z = LN1(x) was q, k and v
            dx = dh1 + self.norm1.backward(dz)
            return dx, dk + dv
        # forward was: out = LN3(r3), r3 = h2 + Drop3(FFN(h2))
        dr3 = self.norm3.backward(g)
        dh2 = dr3 + self.ff.backward(self.dropout3.backward(dr3))
        # forward was: h2 = LN2(r2), r2 = h1 + Drop2(CA(h1, m))
        dr2 = self.norm2.backward(dh2)
        dq, dk, dv = self.multihead_attn.backward(self.dropout2.backward(dr2))
        dh1 = dr2 + dq
        # forward was: h1 = LN1(r1), r1 = x + Drop1(SA(x))
        dr1 = self.norm1.backward(dh1)
        dx = self.self_attn.backward(self.dropout1.backward(dr1), sum_inputs=True)   # x was q, k and v: dq + dk + dv
        dx += dr1                                                      # ... and the residual's input (dx is fresh)
        return dx, dk + dv


def _stack(layer, num_layers, where):
    """``num_layers`` independent copies of ``layer`` (PyTorch clones with deepcopy too),
    or the given list of layers as is."""
    if isinstance(layer, (list, tuple)):
        return list(layer)
    check_positive_int(num_layers, "num_layers", where)
    return [layer] + [copy.deepcopy(layer) for _ in range(num_layers - 1)]


class TransformerEncoder(Module):
    """``num_layers`` encoder layers applied in turn, then an optional LayerNorm ``norm``.

    ``TransformerEncoder(encoder_layer, num_layers, norm=None)``: as in PyTorch the layer
    is cloned (so the copies start equal; :class:`Transformer` re-initialises them);
    a list of layers is used as given.  ``forward(src, mask=None,
    src_key_padding_mask=None, is_causal=False)``; backward runs the layers in reverse.
    cache: none of its own; each layer keeps its own.
    """

    def __init__(self, encoder_layer, num_layers=None, norm=None):
        self.layers = _stack(encoder_layer, num_layers, "TransformerEncoder")
        self.num_layers = len(self.layers)
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        for layer in self.layers:  # a loop over layers (not positions): each is a different function
            with renamed_args("TransformerEncoder", "TransformerEncoderLayer", src_mask="mask"):
                x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return self.norm(x) if self.norm is not None else x

    def backward(self, grad_output):
        g = self.norm.backward(grad_output) if self.norm is not None else grad_output
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g


class TransformerDecoder(Module):
    """``num_layers`` decoder layers, each attending to the same ``memory``, then optional ``norm``.

    Backward returns ``(d tgt, d memory)``; ``d memory`` is the **sum** over the layers,
    since every layer reads the same memory.
    cache: none of its own; each layer keeps its own.
    """

    def __init__(self, decoder_layer, num_layers=None, norm=None):
        self.layers = _stack(decoder_layer, num_layers, "TransformerDecoder")
        self.num_layers = len(self.layers)
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        return self.norm(x) if self.norm is not None else x

    def backward(self, grad_output):
        g = self.norm.backward(grad_output) if self.norm is not None else grad_output
        dmemory = None
        for layer in reversed(self.layers):
            g, dm = layer.backward(g)
            dmemory = dm if dmemory is None else dmemory + dm
        return g, dmemory


class Transformer(Module):
    """The encoder-decoder Transformer on token ids, returning logits ``(B, T, V_tgt)``.

    Unlike ``torch.nn.Transformer`` (which takes embedded inputs) this model owns the
    embeddings and the output layer, like the model of the original paper::

        x = PE(E_src[src] * sqrt(d))                 (B, S, d)
        memory = Encoder(x, src_key_padding_mask)     (B, S, d)
        y = PE(E_tgt[tgt] * sqrt(d))                  (B, T, d)   tgt = <sos> + target
        h = Decoder(y, memory, causal tgt_mask, tgt/memory padding masks)
        logits = h W_out^T + b_out                    (B, T, V_tgt)

    ``forward(src (B, S) int, tgt (B, T) int, src_key_padding_mask=None,
    tgt_key_padding_mask=None)``: masks default to ``ids == pad_idx`` (True = padding).
    The source padding mask is used in the encoder's self-attention *and* as the memory
    mask of every cross-attention.  ``backward(dlogits)`` returns None (ids are not
    differentiable) and accumulates every parameter gradient.

    ``positional``: ``"sinusoidal"`` or ``"learned"`` (added to the embeddings), or
    ``"rope"``, ``"alibi"``, ``"relative"`` (inside every self-attention layer, nothing
    added to the embeddings; npattention/attention/positions.py).  ``tie_weights=True`` makes the
    output projection use the target embedding matrix (one shared :class:`Parameter`,
    whose gradient collects both uses).  Embeddings start as ``N(0, 1/d)`` so that after
    the ``sqrt(d)`` scale they have unit variance; the attention and feed-forward weight
    matrices get Xavier-uniform, as in ``torch.nn.Transformer``.  ``attn_block_size``
    (also an argument of both layer classes) is passed to every attention layer as
    ``MultiheadAttention(block_size=...)``: None = default path, ``B`` = tiled (docs/tiled.md).
    cache: none of its own (embeddings, positions, encoder, decoder and output layer keep theirs).
    """

    def __init__(self, src_vocab_size, tgt_vocab_size, d_model=64, nhead=4, num_encoder_layers=2,
                 num_decoder_layers=2, dim_feedforward=256, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, max_len=256, positional="sinusoidal",
                 tie_weights=False, pad_idx=Vocab.PAD, attn_block_size=None):
        where = "Transformer"
        self.src_vocab_size = check_positive_int(src_vocab_size, "src_vocab_size", where)
        self.tgt_vocab_size = check_positive_int(tgt_vocab_size, "tgt_vocab_size", where)
        self.d_model = check_positive_int(d_model, "d_model", where)
        if positional not in ("sinusoidal", "learned") + POSITIONAL_CHOICES:
            raise ValueError(f"{where}: 'positional' must be one of {('sinusoidal', 'learned') + POSITIONAL_CHOICES}, "
                             f"got {positional!r}")
        self.pad_idx = pad_idx
        self.config = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, d_model=d_model,
                           nhead=nhead, num_encoder_layers=num_encoder_layers,
                           num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward,
                           dropout=dropout, activation=activation, layer_norm_eps=layer_norm_eps,
                           norm_first=norm_first, max_len=max_len, positional=positional,
                           tie_weights=tie_weights, pad_idx=pad_idx, attn_block_size=attn_block_size)
        args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, norm_first,
                positional if positional in POSITIONAL_CHOICES else None, attn_block_size)
        self.encoder = TransformerEncoder([TransformerEncoderLayer(*args) for _ in range(num_encoder_layers)],
                                          norm=LayerNorm(d_model, eps=layer_norm_eps))
        self.decoder = TransformerDecoder([TransformerDecoderLayer(*args) for _ in range(num_decoder_layers)],
                                          norm=LayerNorm(d_model, eps=layer_norm_eps))
        for p in self.encoder.parameters() + self.decoder.parameters():
            if p.data.ndim > 1:
                p.data[...] = xavier_uniform(p.data.shape, dtype=p.data.dtype)
        self.src_embed = Embedding(src_vocab_size, d_model, padding_idx=pad_idx)
        self.tgt_embed = Embedding(tgt_vocab_size, d_model, padding_idx=pad_idx)
        for emb in (self.src_embed, self.tgt_embed):
            emb.weight.data *= d_model ** -0.5  # N(0, 1/d): unit variance after the sqrt(d) scale
        if positional == "sinusoidal":
            self.src_pos = SinusoidalPositionalEncoding(d_model, max_len, dropout)
            self.tgt_pos = SinusoidalPositionalEncoding(d_model, max_len, dropout)
        elif positional == "learned":
            self.src_pos = LearnedPositionalEmbedding(max_len, d_model, dropout)
            self.tgt_pos = LearnedPositionalEmbedding(max_len, d_model, dropout)
        else:   # positions live in the attention layers: only the embedding dropout is left
            self.src_pos, self.tgt_pos = Dropout(dropout), Dropout(dropout)
        self.generator = Linear(d_model, tgt_vocab_size)
        if tie_weights:
            self.generator.weight = self.tgt_embed.weight  # one Parameter, two uses

    # ---------------------------------------------------------------- pieces
    def _embed(self, ids, embedding, pos):
        return pos(embedding(ids) * math.sqrt(self.d_model))

    def _embed_backward(self, g, embedding, pos):
        embedding.backward(pos.backward(g) * math.sqrt(self.d_model))

    def _padding(self, ids, mask, name):
        if mask is None:
            return ids == self.pad_idx
        return check_array(mask, name, "Transformer", shape=tuple(ids.shape), dtype="bool")

    def encode(self, src, src_key_padding_mask=None):
        """``memory (B, S, d)`` of source ids ``(B, S)``."""
        check_array(src, "src", "Transformer", shape=(None, None), dtype="int")
        src_key_padding_mask = self._padding(src, src_key_padding_mask, "src_key_padding_mask")
        return self.encoder(self._embed(src, self.src_embed, self.src_pos),
                            src_key_padding_mask=src_key_padding_mask)

    def decode(self, tgt, memory, memory_key_padding_mask=None, tgt_key_padding_mask=None):
        """Logits ``(B, T, V)`` for decoder input ids ``tgt (B, T)`` given ``memory``."""
        check_array(tgt, "tgt", "Transformer", shape=(None, None), dtype="int")
        tgt_key_padding_mask = self._padding(tgt, tgt_key_padding_mask, "tgt_key_padding_mask")
        T = tgt.shape[1]
        h = self.decoder(self._embed(tgt, self.tgt_embed, self.tgt_pos), memory,
                         tgt_mask=causal_mask(T), tgt_key_padding_mask=tgt_key_padding_mask,
                         memory_key_padding_mask=memory_key_padding_mask)
        return self.generator(h)

    def forward(self, src, tgt, src_key_padding_mask=None, tgt_key_padding_mask=None):
        dims = {}
        check_array(src, "src", "Transformer", shape=("B", "S"), dtype="int", dims=dims)
        check_array(tgt, "tgt", "Transformer", shape=("B", "T"), dtype="int", dims=dims)
        src_key_padding_mask = self._padding(src, src_key_padding_mask, "src_key_padding_mask")
        memory = self.encode(src, src_key_padding_mask)
        return self.decode(tgt, memory, memory_key_padding_mask=src_key_padding_mask,
                           tgt_key_padding_mask=tgt_key_padding_mask)

    def backward(self, grad_output):
        # Token ids are not differentiable: nothing is returned (None); every parameter
        # gradient is accumulated on the way down.
        dh = self.generator.backward(grad_output)                  # logits = h W^T + b
        dy, dmemory = self.decoder.backward(dh)                    # memory fed every decoder layer
        self._embed_backward(dy, self.tgt_embed, self.tgt_pos)     # y = PE(E_tgt[tgt] * sqrt(d))
        dx = self.encoder.backward(dmemory)                        # memory = Encoder(x)
        self._embed_backward(dx, self.src_embed, self.src_pos)     # x = PE(E_src[src] * sqrt(d))

    # ---------------------------------------------------------------- attention maps
    def attention_maps(self):
        """Per-head weights of the last forward: ``{"encoder": [(B, H, S, S) per layer],
        "decoder_self": [(B, H, T, T)], "decoder_cross": [(B, H, T, S)]}``."""
        return {"encoder": [layer.self_attn_weights for layer in self.encoder.layers],
                "decoder_self": [layer.self_attn_weights for layer in self.decoder.layers],
                "decoder_cross": [layer.cross_attn_weights for layer in self.decoder.layers]}

    def extra_repr(self):
        c = self.config
        return (f"d_model={c['d_model']}, nhead={c['nhead']}, layers={c['num_encoder_layers']}+"
                f"{c['num_decoder_layers']}, ffn={c['dim_feedforward']}, norm_first={c['norm_first']}, "
                f"tie_weights={c['tie_weights']}")


def greedy_decode(model, src, max_len, src_key_padding_mask=None, sos_idx=Vocab.SOS, eos_idx=Vocab.EOS):
    """Generate target ids for source ids ``src (B, S)``, one position at a time.

    The encoder runs once; then, for ``t = 0, 1, ...``, the decoder reads
    ``ys = [<sos>, y_1, ..., y_t]`` for the whole batch at once and the most likely next
    token ``argmax logits[:, -1]`` is appended.  **The loop over output positions is the
    lesson**: at inference the decoder cannot see tokens it has not produced yet (in
    training the causal mask lets all positions be computed in one pass).  Rows that
    have produced ``<eos>`` are padded with ``<pad>`` afterwards; the loop stops when
    every row has finished or after ``max_len`` tokens.  (Each step recomputes the whole
    prefix; :func:`npattention.decoding.greedy_search` gives the same output with a KV cache,
    :func:`npattention.decoding.beam_search_transformer` does beam search.)

    Returns ``(B, L)`` int ids *without* the ``<sos>``, ``L <= max_len``: each row is the
    output tokens, then ``<eos>`` (if produced in time), then ``<pad>``.  Decode rows to
    strings with :meth:`npattention.data.Vocab.decode_batch`.  Runs in eval mode (no
    dropout) and restores the model's mode afterwards.  After the call each layer's
    attention weights are those of the last step (the whole generated prefix).
    """
    check_array(src, "src", "greedy_decode", shape=(None, None), dtype="int")
    check_positive_int(max_len, "max_len", "greedy_decode")
    was_training = model.training
    model.eval()
    try:
        if src_key_padding_mask is None:
            src_key_padding_mask = src == model.pad_idx
        memory = model.encode(src, src_key_padding_mask)
        B = src.shape[0]
        ys = xp.full((B, 1), sos_idx, dtype=xp.int64)
        finished = xp.zeros(B, dtype=bool)
        for _ in range(max_len):  # one new token per step for every row
            logits = model.decode(ys, memory, memory_key_padding_mask=src_key_padding_mask)
            nxt = xp.argmax(logits[:, -1], axis=-1).astype(xp.int64)  # (B,)
            nxt = xp.where(finished, model.pad_idx, nxt)
            ys = xp.concatenate([ys, nxt[:, None]], axis=1)
            finished = finished | (nxt == eos_idx)
            if bool(finished.all()):
                break
        return ys[:, 1:]
    finally:
        model.train(was_training)
