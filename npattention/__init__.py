"""npattention: attention mechanisms in NumPy, with hand-written backward passes.

Start with ``docs/contract.md`` and ``notebooks/README.md``.  The array module is chosen
once, at import, from ``NPATTENTION_BACKEND`` (see :mod:`npattention.backend`).
"""
from . import attention, data, masks, softmax, vision, viz
from .attention import LocationAttention
from .attention import (AdditiveScore, Attention, Attn, CausalSelfAttention, ConcatScore, Context,
                        CosineScore, CrossAttention, DotScore, GeneralScore, HardAlign, LocalSelfAttention,
                        MultiheadAttention, ScaledDotScore, SelfAttention, SoftmaxAlign,
                        scaled_dot_product_attention, scaled_dot_product_attention_backward)
from .attention import tiled_attention, tiled_attention_backward
from .backend import BACKEND, get_rng, manual_seed, to_numpy, xp
from .checkpoint import load_checkpoint, save_checkpoint
from .masks import causal_mask, padding_mask
from .gradcheck import check_function, gradcheck
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .losses import CrossEntropyLoss, MSELoss
from .module import AnomalyError, Module, Parameter, Sequential, detect_anomaly, set_detect_anomaly
from .optim import SGD, Adam, AdamW, WarmupCosine, WarmupInverseSqrt, clip_grad_norm_
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .seq2seq import (BahdanauDecoder, Encoder, LocationDecoder, LuongDecoder, Note004Decoder, PlainDecoder,
                      Seq2Seq)
from .train import fit
from .vision import (CBAM, ECA, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm2d, Conv1d, Conv2d, Flatten, MaxPool2d,
                     PixelAttention, SEBasicBlock, SEBlock, SEInception, SelfAttention2d, SpatialTransformer,
                     affine_grid, grid_sample)
from .transformer import (PositionwiseFeedForward, Transformer, TransformerDecoder, TransformerDecoderLayer,
                          TransformerEncoder, TransformerEncoderLayer, greedy_decode)

from .vision.multi_order import HighOrderAttention, MultiOrderGatedAggregation

__version__ = "0.1.0"
from . import decoding
from .decoding import KVCache, beam_search, beam_search_transformer, generate, greedy_search, sample
from .gpt import GPT
from .attention import (ALiBi, GroupedQueryAttention, LinearAttention, RelativePositionBias,  # noqa: E402
                        RotaryEmbedding, linear_attention)
