"""Cases for the channel-attention blocks (npattention/vision/channel.py)."""
from ..gradcheck import Case, register
from ..vision.channel import (
    CBAM,
    ECA,
    ChannelAttention,
    PixelAttention,
    SEBasicBlock,
    SEBlock,
    SEInception,
    SpatialAttention,
)


@register("SEBlock")
def se_cases(rng):
    yield Case(SEBlock(8, reduction=4), (rng.normal((2, 8, 3, 3)),), label="C=8, r=4")
    yield Case(SEBlock(16), (rng.normal((2, 16, 3, 5)),), label="C=16, r=16 (1 hidden unit)",
               options={"max_entries": 60})


@register("SEBasicBlock")
def se_basic_cases(rng):
    yield Case(SEBasicBlock(4, 4, reduction=2), (rng.normal((2, 4, 4, 4)),), label="identity shortcut",
               options={"max_entries": 40})
    yield Case(SEBasicBlock(2, 4, stride=2, downsample=True, reduction=2), (rng.normal((2, 2, 5, 5)),),
               label="stride 2 + projection, odd size", options={"max_entries": 40})


@register("SEInception")
def se_inception_cases(rng):
    yield Case(SEInception(3, 2, 2, 2, 1, 2, 2, reduction=4), (rng.normal((2, 3, 4, 4)),), label="C_out=8",
               options={"max_entries": 30})
    yield Case(SEInception(2, 1, 1, 2, 1, 1, 2, reduction=2), (rng.normal((1, 2, 5, 3)),), label="C_out=6, odd size",
               options={"max_entries": 30})


@register("ChannelAttention")
def channel_attention_cases(rng):
    yield Case(ChannelAttention(8), (rng.normal((2, 8, 3, 3)),), label="C=8, ratio 8")
    yield Case(ChannelAttention(6, ratio=2), (rng.normal((2, 6, 4, 5)),), label="C=6, ratio 2")


@register("SpatialAttention")
def spatial_attention_cases(rng):
    yield Case(SpatialAttention(7), (rng.normal((2, 3, 5, 6)),), label="7x7")
    yield Case(SpatialAttention(3), (rng.normal((2, 4, 3, 3)),), label="3x3")


@register("CBAM")
def cbam_cases(rng):
    yield Case(CBAM(8, ratio=4), (rng.normal((2, 8, 4, 4)),), label="channel-spatial, 7x7", options={"max_entries": 60})
    yield Case(CBAM(4, ratio=2, kernel_size=3, order="spatial-channel"), (rng.normal((2, 4, 3, 5)),),
               label="spatial-channel, 3x3")


@register("ECA")
def eca_cases(rng):
    yield Case(ECA(8), (rng.normal((2, 8, 3, 3)),), label="C=8 (k=3)")
    yield Case(ECA(32, kernel_size=5), (rng.normal((2, 32, 2, 3)),), label="C=32, k=5", options={"max_entries": 60})


@register("PixelAttention")
def pixel_attention_cases(rng):
    yield Case(PixelAttention(3), (rng.normal((2, 3, 4, 4)),), label="C=3")
    yield Case(PixelAttention(2), (rng.normal((1, 2, 5, 3)),), label="C=2, odd size")


@register("AttentionCNN")
def attention_cnn_cases(rng):
    from ..vision.models import AttentionCNN

    yield Case(AttentionCNN(1, 3, block="cbam", width=4, reduction=4), (rng.normal((2, 1, 8, 8)),),
               label="CBAM inside, 8x8", options={"max_entries": 12})
    yield Case(AttentionCNN(2, 2, block="eca", width=2), (rng.normal((2, 2, 4, 4)),),
               label="ECA inside, 4x4", options={"max_entries": 12})
