"""Attention: score -> align -> context, and the modules built from them.

* :mod:`.scores`   -- step 1, score functions ``(B, Tq, Dq), (B, Tk, Dk) -> (B, Tq, Tk)``
* :mod:`.align`    -- step 2, soft (softmax) and hard alignment, REINFORCE
* :mod:`.context`  -- step 3, the weighted sum of values
* :mod:`.attention` -- ``Attention`` (the three steps composed) and ``LocationAttention`` (old name ``Attn``)
* :mod:`.sdpa` -- ``scaled_dot_product_attention`` and its backward
* :mod:`.multihead`, :mod:`.self_attention` -- multi-head, self, cross, causal, local
* beyond 2017 (docs/modern_attention.md): :mod:`.rotary` (RoPE), :mod:`.alibi`, :mod:`.relative_bias`
  (T5), :mod:`.positions` (the ``positional=`` option), :mod:`.grouped_query` (GQA/MQA),
  :mod:`.linear_attention`
"""
from .align import HardAlign, Reinforce, SoftmaxAlign
from .attention import Attention, Attn, LocationAttention
from .context import Context
from .sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from .multihead import MultiheadAttention
from .scores import AdditiveScore, ConcatScore, CosineScore, DotScore, GeneralScore, ScaledDotScore
from .self_attention import CausalSelfAttention, CrossAttention, LocalSelfAttention, SelfAttention, band_mask
from .rotary import RotaryEmbedding, apply_rotary, rotary_tables
from .alibi import ALiBi, alibi_bias, alibi_slopes
from .relative_bias import RelativePositionBias, relative_position_bucket
from .grouped_query import GroupedQueryAttention
from .linear_attention import LinearAttention, linear_attention, linear_attention_backward, linear_attention_quadratic

__all__ = [
    "DotScore", "ScaledDotScore", "GeneralScore", "ConcatScore", "AdditiveScore", "CosineScore",
    "SoftmaxAlign", "HardAlign", "Reinforce", "Context", "Attention", "LocationAttention", "Attn",
    "scaled_dot_product_attention", "scaled_dot_product_attention_backward",
    "MultiheadAttention", "SelfAttention", "CrossAttention", "CausalSelfAttention",
    "LocalSelfAttention", "band_mask",
    "RotaryEmbedding", "apply_rotary", "rotary_tables", "ALiBi", "alibi_bias", "alibi_slopes",
    "RelativePositionBias", "relative_position_bucket", "GroupedQueryAttention", "LinearAttention",
    "linear_attention", "linear_attention_backward", "linear_attention_quadratic",
]

# tiled (memory-efficient, FlashAttention-2 style) attention: docs/tiled.md
from .tiled import TiledAttentionCache, tiled_attention, tiled_attention_backward, tiled_dropout_mask  # noqa: E402

__all__ += ["TiledAttentionCache", "tiled_attention", "tiled_attention_backward", "tiled_dropout_mask"]
