"""Cases for positional encodings and the Transformer (npattention/positional.py, transformer.py).

Every layer is checked post-norm and pre-norm, with padding masks and dropout (the
gradient check replays the same dropout masks), at two shapes; the whole model on tiny
sizes with a random subset of each parameter's entries.
"""
from ..backend import xp
from ..masks import causal_mask, padding_mask
from ..gradcheck import Case, register
from ..positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from ..transformer import (
    PositionwiseFeedForward,
    Transformer,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)


def _lengths(*lengths):
    return xp.asarray(lengths, dtype=xp.int64)


@register("SinusoidalPositionalEncoding")
def _sinusoidal(rng):
    yield Case(SinusoidalPositionalEncoding(6, max_len=10), (rng.normal((2, 4, 6)),), label="(2, 4, 6)")
    yield Case(SinusoidalPositionalEncoding(5, max_len=7, dropout=0.3), (rng.normal((3, 7, 5)),),
               label="(3, 7, 5) odd d, dropout")


@register("LearnedPositionalEmbedding")
def _learned(rng):
    yield Case(LearnedPositionalEmbedding(10, 6), (rng.normal((2, 4, 6)),), label="(2, 4, 6)")
    yield Case(LearnedPositionalEmbedding(5, 3, dropout=0.2), (rng.normal((3, 5, 3)),),
               label="(3, 5, 3) T = max_len, dropout")


@register("PositionwiseFeedForward")
def _ffn(rng):
    yield Case(PositionwiseFeedForward(4, 8, dropout=0.0), (rng.normal((2, 3, 4)),), label="relu (2, 3, 4)")
    yield Case(PositionwiseFeedForward(6, 5, dropout=0.2, activation="gelu"), (rng.normal((1, 4, 6)),),
               label="gelu, dropout (1, 4, 6)")


@register("TransformerEncoderLayer")
def _encoder_layer(rng):
    for norm_first in (False, True):
        name = "pre-norm" if norm_first else "post-norm"
        yield Case(TransformerEncoderLayer(8, 2, 12, dropout=0.0, norm_first=norm_first),
                   (rng.normal((2, 5, 8)),), kwargs={"src_key_padding_mask": padding_mask(_lengths(5, 3), 5)},
                   label=f"{name} (2, 5, 8), padding", options={"max_entries": 40})
        yield Case(TransformerEncoderLayer(4, 1, 6, dropout=0.2, activation="gelu", norm_first=norm_first),
                   (rng.normal((1, 3, 4)),), kwargs={"src_mask": causal_mask(3)},
                   label=f"{name} (1, 3, 4), causal, dropout, gelu", options={"max_entries": 40})


@register("TransformerDecoderLayer")
def _decoder_layer(rng):
    for norm_first in (False, True):
        name = "pre-norm" if norm_first else "post-norm"
        yield Case(TransformerDecoderLayer(8, 2, 12, dropout=0.0, norm_first=norm_first),
                   (rng.normal((2, 4, 8)), rng.normal((2, 5, 8))),
                   kwargs={"tgt_mask": causal_mask(4), "tgt_key_padding_mask": padding_mask(_lengths(4, 2), 4),
                           "memory_key_padding_mask": padding_mask(_lengths(5, 3), 5)},
                   label=f"{name} T=4, S=5, causal + padding", options={"max_entries": 40})
        yield Case(TransformerDecoderLayer(4, 2, 6, dropout=0.2, norm_first=norm_first),
                   (rng.normal((1, 3, 4)), rng.normal((1, 2, 4))), kwargs={"tgt_is_causal": True},
                   label=f"{name} T=3, S=2, dropout", options={"max_entries": 40})


@register("TransformerEncoder")
def _encoder(rng):
    from ..layers import LayerNorm

    yield Case(TransformerEncoder(TransformerEncoderLayer(4, 2, 6, dropout=0.0), 2),
               (rng.normal((2, 3, 4)),), kwargs={"src_key_padding_mask": padding_mask(_lengths(3, 2), 3)},
               label="2 post-norm layers, padding", options={"max_entries": 30})
    yield Case(TransformerEncoder(TransformerEncoderLayer(6, 3, 8, dropout=0.1, norm_first=True), 2,
                                  norm=LayerNorm(6)),
               (rng.normal((1, 4, 6)),), label="2 pre-norm layers + final norm, dropout",
               options={"max_entries": 30})


@register("TransformerDecoder")
def _decoder(rng):
    from ..layers import LayerNorm

    yield Case(TransformerDecoder(TransformerDecoderLayer(4, 2, 6, dropout=0.0), 2),
               (rng.normal((2, 3, 4)), rng.normal((2, 4, 4))),
               kwargs={"tgt_mask": causal_mask(3), "memory_key_padding_mask": padding_mask(_lengths(4, 2), 4)},
               label="2 post-norm layers, causal + memory padding", options={"max_entries": 30})
    yield Case(TransformerDecoder(TransformerDecoderLayer(6, 3, 8, dropout=0.1, norm_first=True), 2,
                                  norm=LayerNorm(6)),
               (rng.normal((1, 2, 6)), rng.normal((1, 3, 6))), kwargs={"tgt_is_causal": True},
               label="2 pre-norm layers + final norm, dropout", options={"max_entries": 30})


@register("Transformer")
def _transformer(rng):
    # Whole model on token ids: no differentiable inputs, so every parameter is checked
    # (a random subset of entries each).  Padded rows exercise the masks end to end.
    src = xp.asarray([[4, 5, 6, 2], [5, 2, 0, 0]], dtype=xp.int64)
    tgt = xp.asarray([[1, 4, 5, 6], [1, 7, 0, 0]], dtype=xp.int64)
    model = Transformer(7, 9, d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                        dim_feedforward=12, dropout=0.0, max_len=10)
    yield Case(model, (src, tgt), label="post-norm, sinusoidal, padded batch",
               options={"max_entries": 12, "eps": 1e-5})
    src2 = xp.asarray([[3, 4, 2], [4, 4, 2], [5, 2, 0]], dtype=xp.int64)
    tgt2 = xp.asarray([[1, 4, 4], [1, 3, 0], [1, 5, 5]], dtype=xp.int64)
    model2 = Transformer(6, 6, d_model=6, nhead=3, num_encoder_layers=1, num_decoder_layers=2,
                         dim_feedforward=8, dropout=0.1, norm_first=True, positional="learned",
                         tie_weights=True, max_len=5)
    yield Case(model2, (src2, tgt2), label="pre-norm, learned positions, tied weights, dropout",
               options={"max_entries": 12, "eps": 1e-5})
