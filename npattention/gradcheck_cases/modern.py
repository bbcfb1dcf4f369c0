"""Cases for the attention variants beyond the 2017 Transformer (issue 15): the additive
score bias of scaled dot-product attention, RoPE, ALiBi, the relative position bias and
the ``positional=`` option of MultiheadAttention."""
from ..attention.grouped_query import GroupedQueryAttention
from ..attention.linear_attention import LinearAttention, linear_attention, linear_attention_backward
from ..attention.multihead import MultiheadAttention
from ..attention.relative_bias import RelativePositionBias
from ..attention.rotary import RotaryEmbedding
from ..attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from ..backend import xp
from ..gpt import GPT
from ..gradcheck import Case, FunctionModule, register
from ..masks import padding_mask
from .multihead import _random_biases


@register("scaled_dot_product_attention (additive bias)")
def sdpa_bias_cases(rng):
    pair = FunctionModule(scaled_dot_product_attention, scaled_dot_product_attention_backward)
    # a float attn_mask (PyTorch's additive mask) is the 4th input and gets a gradient
    yield Case(pair, (rng.normal((2, 3, 4, 5)), rng.normal((2, 3, 6, 5)), rng.normal((2, 3, 6, 2)),
                      rng.normal((3, 4, 6))), label="float attn_mask (H, L, S) broadcast over B",
               options={"max_entries": 40})
    yield Case(FunctionModule(scaled_dot_product_attention, scaled_dot_product_attention_backward),
               (rng.normal((2, 4, 3)), rng.normal((2, 4, 3)), rng.normal((2, 4, 3)), rng.normal((2, 4, 4))),
               kwargs={"is_causal": True}, label="float mask (B, L, S) + causal")


@register("RotaryEmbedding")
def rotary_cases(rng):
    yield Case(RotaryEmbedding(4), (rng.normal((2, 3, 5, 4)),), label="(B, H, T, D=4)")
    yield Case(RotaryEmbedding(6, base=100.0), (rng.normal((3, 6)),), kwargs={"offset": 7},
               label="(T, D=6), offset 7")


@register("RelativePositionBias")
def relative_bias_cases(rng):
    m = RelativePositionBias(2, num_buckets=8, max_distance=16)
    yield Case(m, (5, 5), label="H=2, 8 buckets, L=S=5")
    yield Case(RelativePositionBias(3, num_buckets=6, max_distance=10, bidirectional=False, init_std=1.0),
               (3, 12), kwargs={"offset": 9}, label="causal buckets, L=3 S=12 offset 9")


@register("MultiheadAttention (positional)")
def positional_mha_cases(rng):
    x = rng.normal((2, 5, 8))
    kpm = padding_mask(xp.asarray([5, 3]), 5)
    for positional in ("rope", "alibi", "relative"):
        m = _random_biases(MultiheadAttention(8, 2, positional=positional), rng)
        if positional == "relative":
            m.positional.weight.data[...] = rng.normal(m.positional.weight.shape)
        yield Case(m, (x, x, x), kwargs={"key_padding_mask": kpm, "is_causal": positional == "relative"},
                   label=f"positional={positional!r}, padded", options={"max_entries": 30})
    m = _random_biases(MultiheadAttention(4, 2, positional="relative"), rng)
    yield Case(m, (rng.normal((1, 3, 4)), rng.normal((1, 3, 4)), rng.normal((1, 3, 4))),
               kwargs={"attn_mask": rng.normal((2, 3, 3))}, label="relative + float attn_mask (B*H, L, S)")


@register("GroupedQueryAttention")
def grouped_query_cases(rng):
    kpm = padding_mask(xp.asarray([4, 2]), 4)
    yield Case(_random_biases(GroupedQueryAttention(8, 4, num_kv_heads=2), rng),
               (rng.normal((2, 3, 8)), rng.normal((2, 4, 8)), rng.normal((2, 4, 8))),
               kwargs={"key_padding_mask": kpm}, label="H=4 H_kv=2, padded keys", options={"max_entries": 30})
    x = rng.normal((2, 5, 8))
    yield Case(_random_biases(GroupedQueryAttention(8, 4, num_kv_heads=1, dropout=0.2, positional="rope"), rng),
               (x, x, x), kwargs={"is_causal": True}, label="multi-query, RoPE, causal, dropout (train)",
               options={"max_entries": 30})
    m = _random_biases(GroupedQueryAttention(6, 3, num_kv_heads=1, positional="relative"), rng)
    m.positional.weight.data[...] = rng.normal(m.positional.weight.shape)
    yield Case(m, (x[..., :6], x[..., :6], x[..., :6]), kwargs={"attn_mask": rng.random((6, 5, 5)) > 0.7},
               label="H=3 H_kv=1, relative bias, per-head mask (B*H, L, S)")


@register("linear_attention")
def linear_attention_cases(rng):
    for causal in (False, True):
        pair = FunctionModule(linear_attention, linear_attention_backward)
        # eps=0: the first causal query sees one key, so its output v_0 does not depend on q_0 at all
        # (its gradient is exactly 0; with eps > 0 it would be ~1e-7 and its relative error pure noise)
        kpm = padding_mask(xp.asarray([5, 3]), 5)[:, None]
        yield Case(pair, (rng.normal((2, 3, 5, 4)), rng.normal((2, 3, 5, 4)), rng.normal((2, 3, 5, 3))),
                   kwargs={"causal": causal, "eps": 0.0, "key_padding_mask": kpm},
                   label=f"(B, H, T, D), causal={causal}, padded keys", options={"max_entries": 40})
    yield Case(FunctionModule(linear_attention, linear_attention_backward),
               (rng.normal((4, 2)), rng.normal((2, 6, 2)), rng.normal((1, 6, 3))),
               label="bidirectional, L != S, broadcast leading axes")


@register("LinearAttention")
def linear_attention_module_cases(rng):
    x = rng.normal((2, 5, 8))
    yield Case(_random_biases(LinearAttention(8, 2, causal=True, eps=0.0), rng), (x, x, x), label="causal, E=8 H=2",
               options={"max_entries": 30})
    yield Case(_random_biases(LinearAttention(6, 3), rng), (rng.normal((2, 3, 6)), rng.normal((2, 4, 6)),
                                                             rng.normal((2, 4, 6))),
               kwargs={"key_padding_mask": padding_mask(xp.asarray([4, 2]), 4)},
               label="bidirectional cross, padded keys", options={"max_entries": 30})


@register("GPT (positional)")
def gpt_positional_cases(rng):
    idx = xp.asarray([[0, 5, 6, 4, 7], [5, 7, 7, 6, 4]], dtype=xp.int64)
    for positional in ("rope", "alibi", "relative"):
        yield Case(GPT(8, 6, n_layer=1, n_head=2, d_model=8, pad_idx=0, positional=positional), (idx,),
                   label=f"positional={positional!r}, a padded row", options={"max_entries": 12, "eps": 1e-5})
