"""Cases for scaled dot-product attention, MultiheadAttention and its wrappers
(npattention/attention/sdpa.py, multihead.py, self_attention.py)."""
from ..attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from ..attention.multihead import MultiheadAttention
from ..attention.self_attention import CausalSelfAttention, CrossAttention, LocalSelfAttention, SelfAttention
from ..backend import xp
from ..masks import causal_mask, padding_mask
from ..gradcheck import Case, FunctionModule, register


def _random_biases(module, rng):
    """Zero biases (PyTorch's init) would hide bias mistakes: make them random."""
    for name, p in module.named_parameters():
        if name.endswith("bias"):
            p.data[...] = rng.normal(p.shape)
    return module


@register("scaled_dot_product_attention")
def sdpa_cases(rng):
    pair = FunctionModule(scaled_dot_product_attention, scaled_dot_product_attention_backward)
    mask = rng.random((4, 6)) > 0.7
    yield Case(pair, (rng.normal((2, 3, 4, 5)), rng.normal((2, 3, 6, 5)), rng.normal((2, 3, 6, 7))),
              kwargs={"attn_mask": mask}, label="(B, H, L, E) with mask", options={"max_entries": 60})
    yield Case(FunctionModule(scaled_dot_product_attention, scaled_dot_product_attention_backward),
               (rng.normal((3, 5, 4)), rng.normal((3, 5, 4)), rng.normal((3, 5, 2))),
               kwargs={"is_causal": True, "dropout_p": 0.3}, label="(B, T, E) causal, dropout")
    yield Case(FunctionModule(scaled_dot_product_attention, scaled_dot_product_attention_backward),
               (rng.normal((2, 3, 4)), rng.normal((1, 5, 4)), rng.normal((5, 3))),
               kwargs={"scale": 0.7}, label="broadcast key/value, scale 0.7")


@register("MultiheadAttention")
def multihead_cases(rng):
    B, L, S = 2, 3, 5
    kpm = padding_mask(xp.asarray([5, 2]), S)  # second sequence: 3 padded keys
    yield Case(_random_biases(MultiheadAttention(8, 2), rng),
               (rng.normal((B, L, 8)), rng.normal((B, S, 8)), rng.normal((B, S, 8))),
               kwargs={"key_padding_mask": kpm, "attn_mask": causal_mask(L, S)},
               label="E=8 H=2, padding + causal masks", options={"max_entries": 40})
    mha = _random_biases(MultiheadAttention(6, 3, dropout=0.25, kdim=4, vdim=5), rng)
    yield Case(mha, (rng.normal((B, 4, 6)), rng.normal((B, 3, 4)), rng.normal((B, 3, 5))),
               kwargs={"average_attn_weights": False}, label="E=6 H=3 kdim=4 vdim=5, dropout (train)",
               options={"max_entries": 40})
    yield Case(MultiheadAttention(4, 4, bias=False), (rng.normal((1, 2, 4)), rng.normal((1, 3, 4)),
                                                      rng.normal((1, 3, 4))),
               kwargs={"attn_mask": rng.random((1, 4, 2, 3)) > 0.6}, label="H=4 D=1, no bias, per-head mask")


@register("SelfAttention")
def self_attention_cases(rng):
    kpm = padding_mask(xp.asarray([4, 2]), 4)
    yield Case(_random_biases(SelfAttention(8, 2), rng), (rng.normal((2, 4, 8)),),
               kwargs={"key_padding_mask": kpm}, label="fused QKV, padded batch", options={"max_entries": 40})
    yield Case(_random_biases(SelfAttention(6, 1, dropout=0.2), rng), (rng.normal((3, 5, 6)),),
               label="one head, dropout (train)", options={"max_entries": 40})


@register("CausalSelfAttention")
def causal_cases(rng):
    yield Case(_random_biases(CausalSelfAttention(8, 4), rng), (rng.normal((2, 5, 8)),),
               label="E=8 H=4", options={"max_entries": 40})
    yield Case(_random_biases(CausalSelfAttention(4, 2), rng), (rng.normal((1, 3, 4)),), label="E=4 H=2 T=3")


@register("LocalSelfAttention")
def local_cases(rng):
    yield Case(_random_biases(LocalSelfAttention(8, 2, window=1), rng), (rng.normal((2, 6, 8)),),
               label="window 1", options={"max_entries": 40})
    yield Case(_random_biases(LocalSelfAttention(4, 1, window=0), rng), (rng.normal((1, 3, 4)),),
               kwargs={"key_padding_mask": padding_mask(xp.asarray([2]), 3)}, label="window 0 + padding")
    yield Case(_random_biases(LocalSelfAttention(4, 2, window=2, impl="band"), rng), (rng.normal((2, 9, 4)),),
               kwargs={"is_causal": True, "key_padding_mask": padding_mask(xp.asarray([9, 6]), 9)},
               label="band, window 2, causal + padding", options={"max_entries": 40})


@register("CrossAttention")
def cross_cases(rng):
    kpm = padding_mask(xp.asarray([3, 5]), 5)
    yield Case(_random_biases(CrossAttention(8, 2, enc_dim=6), rng), (rng.normal((2, 4, 8)), rng.normal((2, 5, 6))),
               kwargs={"key_padding_mask": kpm}, label="enc_dim 6, padded encoder", options={"max_entries": 40})
    yield Case(_random_biases(CrossAttention(4, 2), rng), (rng.normal((1, 2, 4)), rng.normal((1, 3, 4))),
               label="enc_dim = embed_dim")
