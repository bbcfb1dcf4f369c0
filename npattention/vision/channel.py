"""Channel attention (SE, ECA, CBAM) and the gates built on it, each with a hand-written backward.

All blocks take and return ``(B, C, H, W)`` feature maps.  The common pattern is the three
attention steps applied to channels:

1. **score** -- summarise each channel (global average / max pooling, the *squeeze*) and
   turn the summary into one logit per channel (an MLP, a 1-D conv: the *excitation*);
2. **align** -- a sigmoid squashes each logit into a gate in ``(0, 1)``;
3. **context** -- the input is re-weighted channel by channel, ``out = x * gate``.

Each module keeps its last gate (``.last_gate``, or ``.last_channel_gate`` /
``.last_spatial_gate`` for CBAM) for plotting.  The defaults follow the class notes'
PyTorch snippets (note 002): SE ``ratio 16`` without biases; CBAM ``ratio 8``, a shared
1x1-conv MLP without biases and a 7x7 (or 3x3) spatial conv without bias; ECA ``b = 1,
gamma = 2`` and a bias-free 1-D conv.
"""
import math

from ..backend import xp
from ..layers import Linear, sigmoid
from ..module import Module
from ..validate import check_positive_int
from .layers import (
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    BasicConv2d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    MaxPool2d,
    _check_map,
)
from .layers import downsample as _make_downsample


def _relu(z):
    return xp.maximum(z, 0).astype(z.dtype)


def _pixel_mean(x):
    """``x.mean(axis=(2, 3))`` ``(B, C)``: einsum sums each channel's H*W pixels in one pass,
    ~3x faster than NumPy's mean over two axes (a reduction per row of the map)."""
    return xp.einsum("bchw->bc", x) / (x.shape[2] * x.shape[3])


def _sum_of_product(a, b, shape):
    """``sum_to_shape(a * b, shape)`` for two ``(B, C, H, W)`` maps and a gate's ``shape``
    (``(B, C, 1, 1)`` or ``(B, 1, H, W)``): one einsum pass, no ``(B, C, H, W)`` product."""
    kept = "".join(axis for axis, n, m in zip("bchw", shape, a.shape) if n == m)
    return xp.einsum(f"bchw,bchw->{kept}", a, b).reshape(shape)


def _scale_back(grad_output, gate, through_gate):
    """``grad_output * gate + through_gate``: the gradient of ``out = x * gate(x)`` reaching
    ``x`` directly and through the gate; the sum is made in place (one full-size temporary)."""
    dx = grad_output * gate
    dx += through_gate
    return dx


def _check_ratio(channels, ratio, where, channel_name="channel", ratio_name="ratio"):
    check_positive_int(channels, channel_name, where)
    check_positive_int(ratio, ratio_name, where)
    if channels % ratio:
        raise ValueError(f"{where}: {channel_name} ({channels}) must be divisible by {ratio_name} ({ratio}), "
                         f"so that the hidden layer has {channel_name}/{ratio_name} units")
    return channels // ratio


# ---------------------------------------------------------------- SE
class SEBlock(Module):
    """Squeeze-and-Excitation (Hu et al., 2018), as ``se_block`` in the class notes.

    ``s = mean_{h,w} x`` (squeeze, ``(B, C)``) -> ``a = relu(s W1^T)`` (``(B, C/r)``) ->
    ``gate = sigmoid(a W2^T)`` (``(B, C)``) -> ``out = x * gate[:, :, None, None]``.
    Both fully connected layers have no bias.  ``reduction`` (alias ``ratio``, the notes'
    name) is ``r``; ``channel`` must be divisible by it.
    cache: ``(x, z, gate)``: the input, the squeezed hidden layer and the gate.
    """

    def __init__(self, channel, reduction=16, ratio=None):
        reduction = reduction if ratio is None else ratio
        hidden = _check_ratio(channel, reduction, "SEBlock", "channel", "reduction")
        self.channel, self.reduction = channel, reduction
        self.fc1 = Linear(channel, hidden, bias=False)
        self.fc2 = Linear(hidden, channel, bias=False)
        self.last_gate = None

    def forward(self, x):
        _check_map(x, "SEBlock", self.channel)
        s = _pixel_mean(x)                           # squeeze: (B, C)
        z = self.fc1(s)                              # (B, C/r)
        gate = sigmoid(self.fc2(_relu(z)))          # excitation: (B, C) in (0, 1)
        self.cache = (x, z, gate)
        self.last_gate = gate
        return x * gate[:, :, None, None]            # scale

    def backward(self, grad_output):
        x, z, gate = self.cache
        H, W = x.shape[2:]
        # out = x * gate: sum over the pixels gate touched (an einsum, no (B, C, H, W) product)
        dgate = xp.einsum("bchw,bchw->bc", grad_output, x)
        de = dgate * gate * (1 - gate)               # sigmoid' = g (1 - g)
        dz = self.fc2.backward(de) * (z > 0)         # ReLU passes where z > 0
        ds = self.fc1.backward(dz)
        # x reaches the output twice: directly (times the gate) and through the mean
        return _scale_back(grad_output, gate[:, :, None, None], (ds / (H * W))[:, :, None, None])

    def extra_repr(self):
        return f"channel={self.channel}, reduction={self.reduction}"


class SEBasicBlock(Module):
    """SE-ResNet basic block: ``relu(SE(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))``.

    Convolutions are 3x3 without bias (the first with ``stride``); the SE block sits on the
    residual branch *before* the addition (Hu et al., Fig. 3).  ``downsample``: None (the
    identity shortcut; needs ``stride == 1`` and ``inplanes == planes``), True (build
    ResNet's 1x1 conv + BatchNorm projection) or any Module mapping ``x`` to the branch's shape.
    cache: ``(mask1, mask_out)``, the two ReLU masks (the convolutions, norms and SE block keep theirs).
    """

    def __init__(self, inplanes, planes, stride=1, downsample=None, reduction=16):
        where = "SEBasicBlock"
        check_positive_int(inplanes, "inplanes", where)
        check_positive_int(planes, "planes", where)
        if downsample is False:
            downsample = None
        if downsample is True:
            downsample = _make_downsample(inplanes, planes, stride)
        elif downsample is None and (stride != 1 or inplanes != planes):
            raise ValueError(f"{where}: with stride={stride} and inplanes={inplanes} != planes={planes} the identity "
                             "shortcut does not fit the residual branch; pass downsample=True")
        elif downsample is not None and not isinstance(downsample, Module):
            raise TypeError(f"{where}: 'downsample' must be None, True or a Module, got {type(downsample).__name__}")
        self.conv1 = Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.se = SEBlock(planes, reduction)
        self.downsample = downsample

    @property
    def last_gate(self):
        """The SE gates ``(B, planes)`` of the last forward."""
        return self.se.last_gate

    def forward(self, x):
        h = self.bn1(self.conv1(x))
        mask1 = h > 0
        branch = self.se(self.bn2(self.conv2(xp.where(mask1, h, 0.0).astype(h.dtype))))
        shortcut = x if self.downsample is None else self.downsample(x)
        total = branch + shortcut
        self.cache = (mask1, total > 0)
        return xp.where(total > 0, total, 0.0).astype(total.dtype)

    def backward(self, grad_output):
        mask1, mask_out = self.cache
        g = grad_output * mask_out                   # final ReLU
        dx = g if self.downsample is None else self.downsample.backward(g)    # shortcut
        d = self.bn2.backward(self.se.backward(g))   # residual branch, in reverse
        d = self.bn1.backward(self.conv2.backward(d) * mask1)
        return dx + self.conv1.backward(d)


class SEInception(Module):
    """An Inception module (GoogLeNet) whose concatenated output is re-weighted by an SE block.

    Branches, each ``Conv2d + ReLU``: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool (stride 1,
    padding 1) -> 1x1.  They keep ``H, W`` and are concatenated along channels into
    ``C_out = ch1x1 + ch3x3 + ch5x5 + pool_proj`` channels, then ``SEBlock(C_out, reduction)``
    scales them (the SE-Inception module of Hu et al., Fig. 2).
    cache: only a flag that forward ran; the branches keep their own caches.
    """

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, reduction=16):
        self.branch1 = [BasicConv2d(in_channels, ch1x1, 1)]
        self.branch2 = [BasicConv2d(in_channels, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1)]
        self.branch3 = [BasicConv2d(in_channels, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, 5, padding=2)]
        self.branch4 = [MaxPool2d(3, stride=1, padding=1), BasicConv2d(in_channels, pool_proj, 1)]
        self.splits = (ch1x1, ch3x3, ch5x5, pool_proj)
        self.se = SEBlock(sum(self.splits), reduction)

    @property
    def last_gate(self):
        """The SE gates ``(B, C_out)`` of the last forward."""
        return self.se.last_gate

    def _branches(self):
        return (self.branch1, self.branch2, self.branch3, self.branch4)

    def forward(self, x):
        outs = []
        for branch in self._branches():
            h = x
            for layer in branch:
                h = layer(h)
            outs.append(h)
        self.cache = True
        return self.se(xp.concatenate(outs, axis=1))

    def backward(self, grad_output):
        g = self.se.backward(grad_output)
        bounds = [0]
        for c in self.splits:
            bounds.append(bounds[-1] + c)
        dx = 0
        for k, branch in enumerate(self._branches()):   # split the gradient by channel, add the branches up
            d = g[:, bounds[k]:bounds[k + 1]]
            for layer in reversed(branch):
                d = layer.backward(d)
            dx = dx + d
        return dx


# ---------------------------------------------------------------- CBAM
class ChannelAttention(Module):
    """CBAM's channel attention; returns the **gate** ``(B, C, 1, 1)``, not the gated input.

    As in the notes: ``gate = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` with one shared
    MLP ``fc2(relu(fc1(.)))`` made of 1x1 convs without bias (``C -> C/ratio -> C``).
    The caller multiplies: ``x * ChannelAttention(C)(x)``.  Both pooled vectors go through
    the MLP as one stacked batch of ``2B``, so the shared weights get both gradients.
    cache: ``(z, gate)``: the pooled descriptors and the gate.
    """

    def __init__(self, in_planes, ratio=8):
        hidden = _check_ratio(in_planes, ratio, "ChannelAttention", "in_planes", "ratio")
        self.in_planes, self.ratio = in_planes, ratio
        self.avg_pool = AdaptiveAvgPool2d(1)
        self.max_pool = AdaptiveMaxPool2d(1)
        self.fc1 = Conv2d(in_planes, hidden, 1, bias=False)
        self.fc2 = Conv2d(hidden, in_planes, 1, bias=False)
        self.last_gate = None

    def forward(self, x):
        _check_map(x, "ChannelAttention", self.in_planes)
        B = x.shape[0]
        pooled = xp.concatenate([self.avg_pool(x), self.max_pool(x)], axis=0)    # (2B, C, 1, 1)
        z = self.fc1(pooled)
        mlp = self.fc2(_relu(z))
        gate = sigmoid(mlp[:B] + mlp[B:])                                         # avg_out + max_out
        self.cache = (z, gate)
        self.last_gate = gate
        return gate

    def backward(self, grad_output):
        z, gate = self.cache
        de = grad_output * gate * (1 - gate)
        d = self.fc2.backward(xp.concatenate([de, de], axis=0))   # the sum sends de to both halves
        dpooled = self.fc1.backward(d * (z > 0))
        B = grad_output.shape[0]
        return self.avg_pool.backward(dpooled[:B]) + self.max_pool.backward(dpooled[B:])

    def extra_repr(self):
        return f"in_planes={self.in_planes}, ratio={self.ratio}"


class SpatialAttention(Module):
    """CBAM's spatial attention; returns the **gate** ``(B, 1, H, W)``.

    ``gate = sigmoid(conv_k([mean_c x ; max_c x]))``: the channel-wise mean and maximum
    are stacked into 2 maps and a ``k x k`` conv (no bias, padding ``k // 2``) makes one map.
    ``kernel_size`` must be 7 or 3, as in the notes.
    cache: ``(C, first_max, gate)``: the channel count (for the mean), the channel of each pixel's (first)
    maximum ``(B, 1, H, W)`` and the gate.
    """

    def __init__(self, kernel_size=7):
        if kernel_size not in (3, 7) or isinstance(kernel_size, bool):
            raise ValueError(f"SpatialAttention: 'kernel_size' must be 3 or 7, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.conv1 = Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.last_gate = None

    def forward(self, x):
        _check_map(x, "SpatialAttention")
        C = x.shape[1]
        avg = xp.einsum("bchw->bhw", x)[:, None] / C   # mean over channels (einsum: one pass)
        mx = x.max(axis=1, keepdims=True)
        # the first channel holding the maximum; argmax of the boolean map is ~3x faster than of x
        first_max = xp.argmax(x == mx, axis=1)[:, None]
        gate = sigmoid(self.conv1(xp.concatenate([avg, mx], axis=1)))
        self.cache = (C, first_max, gate)
        self.last_gate = gate
        return gate

    def backward(self, grad_output):
        C, first_max, gate = self.cache
        d = self.conv1.backward(grad_output * gate * (1 - gate))        # (B, 2, H, W)
        # mean over channels spreads d/C to every channel; max sends d to the arg-max channel
        d_mean = d[:, :1] / C
        is_max = xp.arange(C).reshape(1, C, 1, 1) == first_max
        return xp.where(is_max, d_mean + d[:, 1:], d_mean)   # one pass writes the (B, C, H, W) gradient

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}"


class CBAM(Module):
    """Convolutional Block Attention Module (Woo et al., 2018), ``cbam_block`` in the notes.

    ``order="channel-spatial"`` (default; the notes' code and the paper's chosen
    arrangement): ``x1 = x * Mc(x)``, ``out = x1 * Ms(x1)``.  ``order="spatial-channel"``
    applies the spatial gate first (one of the paper's ablations).  ``Mc`` is
    :class:`ChannelAttention` (``ratio``, default 8 as in the notes), ``Ms`` is
    :class:`SpatialAttention` (``kernel_size`` 7 or 3).  The gates are kept in
    ``.last_channel_gate`` ``(B, C, 1, 1)`` and ``.last_spatial_gate`` ``(B, 1, H, W)``.
    cache: ``(x, g1, x1, g2)``: the input, the channel gate, the channel-gated map and the spatial gate.
    """

    def __init__(self, in_planes, ratio=8, kernel_size=7, order="channel-spatial"):
        if order not in ("channel-spatial", "spatial-channel"):
            raise ValueError(f"CBAM: 'order' must be 'channel-spatial' or 'spatial-channel', got {order!r}")
        self.order = order
        self.channelattention = ChannelAttention(in_planes, ratio=ratio)
        self.spatialattention = SpatialAttention(kernel_size=kernel_size)

    @property
    def last_channel_gate(self):
        return self.channelattention.last_gate

    @property
    def last_spatial_gate(self):
        return self.spatialattention.last_gate

    def _stages(self):
        pair = (self.channelattention, self.spatialattention)
        return pair if self.order == "channel-spatial" else pair[::-1]

    def forward(self, x):
        first, second = self._stages()
        _check_map(x, "CBAM", self.channelattention.in_planes)
        g1 = first(x)
        x1 = x * g1
        g2 = second(x1)
        self.cache = (x, g1, x1, g2)
        return x1 * g2

    def backward(self, grad_output):
        first, second = self._stages()
        x, g1, x1, g2 = self.cache
        # out = x1 * g2(x1): x1 is reached directly and through the second gate
        dg2 = _sum_of_product(grad_output, x1, g2.shape)      # = sum_to_shape(grad_output * x1, g2.shape)
        dx1 = _scale_back(grad_output, g2, second.backward(dg2))
        # x1 = x * g1(x): the same product rule one step earlier
        dg1 = _sum_of_product(dx1, x, g1.shape)
        return _scale_back(dx1, g1, first.backward(dg1))

    def extra_repr(self):
        return f"order={self.order!r}"


# ---------------------------------------------------------------- ECA
def eca_kernel_size(channels, b=1, gamma=2):
    """ECA's adaptive kernel size ``k = |(log2(C) + b) / gamma|``, truncated, made odd.

    ``C = 64, 128, 256, 512, 2048`` -> ``3, 5, 5, 5, 7`` with the defaults.
    """
    check_positive_int(channels, "channels", "eca_kernel_size")
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


class ECA(Module):
    """Efficient Channel Attention (Wang et al., 2020), ``eca_block`` in the notes.

    ``y = mean_{h,w} x`` (``(B, C)``), then a 1-D conv *across channels* (``(B, 1, C)``,
    kernel ``k = eca_kernel_size(C, b, gamma)``, padding ``(k - 1) // 2``, no bias), so each
    channel's gate sees only its ``k`` neighbours; ``gate = sigmoid(.)``; ``out = x * gate``.
    ``kernel_size`` overrides the rule.
    cache: ``(x, gate)``.
    """

    def __init__(self, channel, b=1, gamma=2, kernel_size=None):
        check_positive_int(channel, "channel", "ECA")
        self.channel = channel
        k = eca_kernel_size(channel, b, gamma) if kernel_size is None else check_positive_int(
            kernel_size, "kernel_size", "ECA")
        self.kernel_size = k
        self.conv = Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.last_gate = None

    def forward(self, x):
        _check_map(x, "ECA", self.channel)
        y = _pixel_mean(x)                                       # (B, C)
        gate = sigmoid(self.conv(y[:, None, :])[:, 0, :])       # channels as a 1-D signal
        self.cache = (x, gate)
        self.last_gate = gate
        return x * gate[:, :, None, None]

    def backward(self, grad_output):
        x, gate = self.cache
        H, W = x.shape[2:]
        de = xp.einsum("bchw,bchw->bc", grad_output, x) * gate * (1 - gate)   # as SEBlock.backward
        dy = self.conv.backward(de[:, None, :])[:, 0, :]
        return _scale_back(grad_output, gate[:, :, None, None], (dy / (H * W))[:, :, None, None])

    def extra_repr(self):
        return f"channel={self.channel}, kernel_size={self.kernel_size}"


# ---------------------------------------------------------------- pixel attention
class PixelAttention(Module):
    """Pixel attention (PAN, Zhao et al., 2020): ``out = x * sigmoid(conv1x1(x))``.

    The 1x1 conv (``C -> C``, with bias) gives one gate per pixel *and* channel,
    ``(B, C, H, W)`` in ``(0, 1)``, kept in ``.last_gate``.
    cache: ``(x, gate)``.
    """

    def __init__(self, channels):
        self.channels = check_positive_int(channels, "channels", "PixelAttention")
        self.conv = Conv2d(channels, channels, 1)
        self.last_gate = None

    def forward(self, x):
        _check_map(x, "PixelAttention", self.channels)
        gate = sigmoid(self.conv(x))
        self.cache = (x, gate)
        self.last_gate = gate
        return x * gate

    def backward(self, grad_output):
        x, gate = self.cache
        return grad_output * gate + self.conv.backward(grad_output * x * gate * (1 - gate))

    def extra_repr(self):
        return f"channels={self.channels}"
