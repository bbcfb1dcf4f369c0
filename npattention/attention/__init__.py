"""Attention: score -> align -> context, and the modules built from them.

* :mod:`.scores`   -- step 1, score functions ``(B, Tq, Dq), (B, Tk, Dk) -> (B, Tq, Tk)``
* :mod:`.align`    -- step 2, soft (softmax) and hard alignment, REINFORCE
* :mod:`.context`  -- step 3, the weighted sum of values
* :mod:`.attention` -- ``Attention`` (the three steps composed) and ``LocationAttention`` (old name ``Attn``)
* :mod:`.sdpa` -- ``scaled_dot_product_attention`` and its backward
* :mod:`.multihead`, :mod:`.self_attention` -- multi-head, self, cross, causal, local
"""
from .align import HardAlign, Reinforce, SoftmaxAlign
from .attention import Attention, Attn, LocationAttention
from .context import Context
from .sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from .multihead import MultiheadAttention
from .scores import AdditiveScore, ConcatScore, CosineScore, DotScore, GeneralScore, ScaledDotScore
from .self_attention import CausalSelfAttention, CrossAttention, LocalSelfAttention, SelfAttention, band_mask

__all__ = [
    "DotScore", "ScaledDotScore", "GeneralScore", "ConcatScore", "AdditiveScore", "CosineScore",
    "SoftmaxAlign", "HardAlign", "Reinforce", "Context", "Attention", "LocationAttention", "Attn",
    "scaled_dot_product_attention", "scaled_dot_product_attention_backward",
    "MultiheadAttention", "SelfAttention", "CrossAttention", "CausalSelfAttention",
    "LocalSelfAttention", "band_mask",
]

# tiled (memory-efficient, FlashAttention-2 style) attention: docs/tiled.md
from .tiled import TiledAttentionCache, tiled_attention, tiled_attention_backward, tiled_dropout_mask  # noqa: E402

__all__ += ["TiledAttentionCache", "tiled_attention", "tiled_attention_backward", "tiled_dropout_mask"]
