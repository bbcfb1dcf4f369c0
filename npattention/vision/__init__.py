"""Attention for images: the convolutional substrate and the vision attention blocks.

* :mod:`npattention.vision.layers` -- ``Conv2d``, ``Conv1d``, ``MaxPool2d``,
  ``AdaptiveAvgPool2d``, ``AdaptiveMaxPool2d``, ``BatchNorm2d``, ``Flatten``,
  ``BasicConv2d`` (conv [+ BN] + ReLU), all on ``(B, C, H, W)`` feature maps, each with a
  hand-written backward (im2col / col2im for the convolutions).
* :mod:`npattention.vision.channel` -- channel (and CBAM's spatial) attention:
  ``SEBlock``, ``SEBasicBlock``, ``SEInception``, ``ChannelAttention``,
  ``SpatialAttention``, ``CBAM``, ``ECA`` (+ ``eca_kernel_size``), ``PixelAttention``.
* :mod:`npattention.vision.sagan` -- SAGAN self-attention on feature maps.
* :mod:`npattention.vision.multi_order` -- multi-order attention: MHN's ``HighOrderAttention``
  and MogaNet's ``MultiOrderGatedAggregation`` (with ``MultiOrderDWConv``).
* :mod:`npattention.vision.stn` -- the spatial transformer (affine grid + bilinear sampler).
* :mod:`npattention.vision.data` -- ``make_glyphs``: a synthetic, seeded image task
  (glyphs on noisy, cluttered backgrounds, optionally translated / rotated / scaled).
* :mod:`npattention.vision.models` -- ``AttentionCNN``: a small CNN with a pluggable
  block (``none``, ``se``, ``cbam``, ``eca``, ``pixel``, ``sagan``, ``high_order``, ``moga``) for the demo,
  benchmark and notebooks (trained with :func:`npattention.train.fit`).
"""
from .channel import CBAM, ECA, ChannelAttention, PixelAttention, SEBasicBlock, SEBlock, SEInception, SpatialAttention, eca_kernel_size
from ..data.glyphs import GLYPHS, make_glyphs
from .layers import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BasicConv2d, BatchNorm2d, Conv1d, Conv2d, Flatten, MaxPool2d,
                     col2im, im2col)
from .models import AttentionCNN
from .multi_order import HighOrderAttention, MultiOrderDWConv, MultiOrderGatedAggregation
from .sagan import SelfAttention2d
from .stn import (AffineGrid, GridSample, SpatialTransformer, affine_grid, affine_grid_backward, grid_sample,
                  grid_sample_backward)
