"""A small CNN with a pluggable attention block, for the glyph task (demo, benchmark, notebooks)."""
from ..layers import Linear
from ..module import Module
from .channel import CBAM, ECA, PixelAttention, SEBlock
from .layers import AdaptiveAvgPool2d, BasicConv2d, Flatten, MaxPool2d

#: names accepted by :class:`AttentionCNN`'s ``block`` argument
BLOCKS = ("none", "se", "cbam", "eca", "pixel", "sagan", "high_order", "moga")


def make_block(name, channels, reduction=4):
    """The attention block ``name`` for ``channels`` feature maps (None for ``"none"``).

    ``"sagan"`` needs :mod:`npattention.vision.sagan`; a clear ``ImportError`` says so if it
    is missing.
    """
    if name == "none":
        return None
    if name == "se":
        return SEBlock(channels, reduction=reduction)
    if name == "cbam":
        return CBAM(channels, ratio=reduction, kernel_size=7)
    if name == "eca":
        return ECA(channels)
    if name == "pixel":
        return PixelAttention(channels)
    if name == "high_order":          # MHN's mixed high-order attention, orders 1..3
        from .multi_order import HighOrderAttention
        return HighOrderAttention(channels, order=3, reduction=reduction)
    if name == "moga":                # MogaNet's multi-order gated aggregation (channels: a multiple of 8)
        from .multi_order import MultiOrderGatedAggregation
        return MultiOrderGatedAggregation(channels)
    if name == "sagan":
        try:
            from .sagan import SelfAttention2d
        except ImportError as err:  # written in parallel by another module
            raise ImportError(f"block 'sagan' needs npattention.vision.sagan.SelfAttention2d ({err})") from None
        return SelfAttention2d(channels)
    raise ValueError(f"make_block: 'name' must be one of {BLOCKS}, got {name!r}")


class AttentionCNN(Module):
    """``(B, C_in, S, S)`` images -> ``(B, n_classes)`` logits, with an attention block in the middle.

    conv3x3(w) + BN + ReLU -> maxpool 2 -> conv3x3(2w) + BN + ReLU -> **block** ->
    maxpool 2 -> conv3x3(2w) + BN + ReLU -> global average pool -> Linear.
    The block sees ``2w`` channels at ``S/2 x S/2``; ``block="none"`` leaves it out.
    The block's gates / attention map stay on ``model.block`` (``.last_gate``, ...),
    and SAGAN's ``(B, N, N)`` map in ``model.last_attention``.
    cache: only a flag that forward ran; the layers keep their own caches.
    """

    def __init__(self, in_channels=1, n_classes=8, block="se", width=8, reduction=4):
        self.block_name = block
        self.features1 = [BasicConv2d(in_channels, width, 3, padding=1, batch_norm=True), MaxPool2d(2),
                          BasicConv2d(width, 2 * width, 3, padding=1, batch_norm=True)]
        self.block = make_block(block, 2 * width, reduction)
        self.features2 = [MaxPool2d(2), BasicConv2d(2 * width, 2 * width, 3, padding=1, batch_norm=True),
                          AdaptiveAvgPool2d(1), Flatten()]
        self.classifier = Linear(2 * width, n_classes)
        self.last_attention = None

    def _layers(self):
        return self.features1 + ([self.block] if self.block is not None else []) + self.features2 + [self.classifier]

    def forward(self, x):
        for layer in self._layers():
            x = layer(x)
            if isinstance(x, tuple):          # SAGAN returns (out, attention)
                x, self.last_attention = x
        self.cache = True
        return x

    def backward(self, grad_output):
        for layer in reversed(self._layers()):
            grad_output = layer.backward(grad_output)
        return grad_output

    def extra_repr(self):
        return f"block={self.block_name!r}"
