"""Cases for the convolutional substrate (npattention/vision/layers.py)."""
from ..gradcheck import Case, register
from ..vision.layers import (
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    AvgPool2d,
    BasicConv2d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Flatten,
    MaxPool2d,
)


@register("Conv2d")
def conv2d_cases(rng):
    yield Case(Conv2d(2, 3, 3, padding=1), (rng.normal((2, 2, 5, 4)),), label="3x3 same, bias")
    yield Case(Conv2d(3, 2, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), bias=False),
               (rng.normal((2, 3, 7, 6)),), label="stride/pad/dilation pairs, no bias", options={"max_entries": 60})
    yield Case(Conv2d(2, 2, 1, stride=2), (rng.normal((1, 2, 5, 5)),), label="1x1 stride 2, odd size")
    yield Case(Conv2d(3, 3, 5, padding=4, dilation=2, groups=3), (rng.normal((2, 3, 6, 5)),),
               label="depthwise 5x5, dilation 2", options={"max_entries": 60})
    yield Case(Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2), (rng.normal((2, 4, 5, 6)),),
               label="groups=2, 4->6", options={"max_entries": 60})


@register("Conv1d")
def conv1d_cases(rng):
    yield Case(Conv1d(1, 1, 3, padding=1, bias=False), (rng.normal((3, 1, 8)),), label="ECA-style 1->1, k=3")
    yield Case(Conv1d(2, 3, 3, stride=2, padding=1, dilation=2), (rng.normal((2, 2, 9)),), label="stride 2, dilation 2")
    yield Case(Conv1d(4, 4, 3, padding=2, dilation=2, groups=4), (rng.normal((2, 4, 7)),), label="depthwise, dilation 2")


@register("MaxPool2d")
def maxpool_cases(rng):
    yield Case(MaxPool2d(2), (rng.normal((2, 3, 4, 6)),), label="2x2 / 2")
    yield Case(MaxPool2d(3, stride=2, padding=1), (rng.normal((2, 2, 7, 5)),), label="3x3 / 2 pad 1 (overlap)")


@register("AdaptiveAvgPool2d")
def adaptive_avg_cases(rng):
    yield Case(AdaptiveAvgPool2d(1), (rng.normal((2, 3, 5, 3)),), label="global, odd size")
    yield Case(AdaptiveAvgPool2d((2, 3)), (rng.normal((2, 2, 4, 6)),), label="(2, 3) windows")


@register("AdaptiveMaxPool2d")
def adaptive_max_cases(rng):
    yield Case(AdaptiveMaxPool2d(1), (rng.normal((2, 3, 5, 3)),), label="global, odd size")
    yield Case(AdaptiveMaxPool2d((2, 1)), (rng.normal((2, 2, 4, 3)),), label="(2, 1) windows")


@register("BatchNorm2d")
def batchnorm_cases(rng):
    bn = BatchNorm2d(3)
    bn.weight.data = rng.uniform((3,), 0.5, 2.0)
    yield Case(bn, (rng.normal((2, 3, 4, 5), 1.0, 1.0),), label="train")
    bn = BatchNorm2d(2)
    bn.running_mean = rng.normal((2,))
    bn.running_var = rng.uniform((2,), 0.5, 2.0)
    bn.weight.data = rng.normal((2,))
    yield Case(bn.eval(), (rng.normal((3, 2, 3, 3)),), label="eval (running stats)")
    yield Case(BatchNorm2d(2), (rng.normal((1, 2, 3, 5)),), label="train, batch of 1")
    yield Case(BatchNorm2d(3, affine=False), (rng.normal((2, 3, 3, 2)),), label="affine=False, train")
    yield Case(BatchNorm2d(2, track_running_stats=False).eval(), (rng.normal((2, 2, 3, 3)),),
               label="track_running_stats=False, eval (batch stats)")


@register("AvgPool2d")
def avgpool_cases(rng):
    yield Case(AvgPool2d(2), (rng.normal((2, 3, 4, 6)),), label="2x2 / 2")
    yield Case(AvgPool2d(3, stride=2, padding=1), (rng.normal((2, 2, 7, 5)),), label="3x3 / 2 pad 1 (overlap)")
    yield Case(AvgPool2d((3, 2), stride=1, padding=1, count_include_pad=False), (rng.normal((1, 2, 4, 3)),),
               label="3x2 / 1 pad 1, count_include_pad=False")


@register("Flatten")
def flatten_cases(rng):
    yield Case(Flatten(), (rng.normal((2, 3, 2, 2)),), label="(2, 3, 2, 2) -> (2, 12)")
    yield Case(Flatten(2), (rng.normal((2, 3, 2, 3)),), label="start_dim=2")


@register("BasicConv2d")
def basicconv_cases(rng):
    yield Case(BasicConv2d(2, 3, 3, padding=1), (rng.normal((2, 2, 4, 4)),), label="conv + relu")
    yield Case(BasicConv2d(2, 2, 3, stride=2, batch_norm=True), (rng.normal((2, 2, 5, 5)),), label="conv + BN + relu")
