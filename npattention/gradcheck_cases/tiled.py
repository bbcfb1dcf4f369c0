"""Cases for the tiled (memory-efficient) attention pair and MultiheadAttention(block_size=...)
(npattention/attention/tiled.py).  Tile sizes are chosen so that they do not divide the lengths."""
from ..attention.multihead import MultiheadAttention
from ..attention.tiled import tiled_attention, tiled_attention_backward
from ..backend import xp
from ..gradcheck import Case, FunctionModule, register
from ..masks import causal_mask, padding_mask


def _pair():
    return FunctionModule(tiled_attention, tiled_attention_backward)


@register("tiled_attention")
def tiled_cases(rng):
    mask = rng.random((4, 7)) > 0.7
    mask[1] = True                                   # one query sees no key: zero row, zero gradient
    yield Case(_pair(), (rng.normal((2, 3, 4, 5)), rng.normal((2, 3, 7, 5)), rng.normal((2, 3, 7, 3))),
               kwargs={"attn_mask": mask, "block_size": (3, 2)}, label="(B, H, L, E) with mask, tiles 3x2",
               options={"max_entries": 60})
    yield Case(_pair(), (rng.normal((3, 5, 4)), rng.normal((3, 5, 4)), rng.normal((3, 5, 2))),
               kwargs={"is_causal": True, "dropout_p": 0.3, "block_size": 2}, label="(B, T, E) causal, dropout, tiles 2")
    yield Case(_pair(), (rng.normal((2, 3, 4)), rng.normal((1, 5, 4)), rng.normal((5, 3))),
               kwargs={"scale": 0.7, "block_size": (2, 3)}, label="broadcast key/value, scale 0.7, tiles 2x3")
    # a float attn_mask (an additive bias) as the 4th input: its gradient is checked too
    yield Case(_pair(), (rng.normal((2, 5, 3)), rng.normal((2, 4, 3)), rng.normal((2, 4, 2)), rng.normal((5, 4))),
               kwargs={"is_causal": True, "block_size": (2, 3)}, label="float mask (L, S) + causal, tiles 2x3")


@register("MultiheadAttention(block_size)")
def tiled_multihead_cases(rng):
    B, L, S = 2, 5, 7
    mha = MultiheadAttention(8, 2, block_size=(2, 3))
    for name, p in mha.named_parameters():
        if name.endswith("bias"):
            p.data[...] = rng.normal(p.shape)        # zero biases would hide bias mistakes
    yield Case(mha, (rng.normal((B, L, 8)), rng.normal((B, S, 8)), rng.normal((B, S, 8))),
               kwargs={"key_padding_mask": padding_mask(xp.asarray([7, 3]), S), "attn_mask": causal_mask(L, S)},
               label="E=8 H=2 tiles 2x3, padding + causal", options={"max_entries": 40})
    yield Case(MultiheadAttention(6, 3, dropout=0.25, kdim=4, vdim=5, block_size=2),
               (rng.normal((B, 4, 6)), rng.normal((B, 3, 4)), rng.normal((B, 3, 5))),
               label="E=6 H=3 kdim=4 vdim=5, dropout (train), tiles 2", options={"max_entries": 40})
