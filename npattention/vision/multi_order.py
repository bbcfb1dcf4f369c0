"""Multi-order attention on ``(B, C, H, W)`` feature maps: two modules that carry the name.

Class note 003 lists "channel attention, pixel attention, multi-order attention" (a sentence
from a 2020 survey).  Two published modules fit the words; both are here, and docs/multi_order.md
says which is which:

* :class:`HighOrderAttention` -- MHN's *high-order attention* (Chen, Deng, Hu, "Mixed High-Order
  Attention Network", ICCV 2019), the one a 2020 survey means.  "Order" is the degree of the
  polynomial in ``x`` that builds the gate: order ``r`` multiplies ``r`` linear maps of ``x``.
* :class:`MultiOrderGatedAggregation` (with :class:`MultiOrderDWConv`) -- MogaNet's block (Li et al.,
  ICLR 2024), the module literally called *multi-order* today.  "Order" is the spatial reach of an
  interaction: small (5x5), middle (5x5 dilated by 2) and large (7x7 dilated by 3) receptive fields.

Both are attention in the note's three steps without a softmax: **score** (a per-pixel,
per-channel logit computed from ``x``), **align** (squash it into a gate: sigmoid / SiLU),
**context** (multiply the features by the gate).
"""
from ..backend import xp
from ..layers import ReLU, Sigmoid, SiLU
from ..module import Module, Parameter
from ..validate import check_positive_int
from .layers import Conv2d, _check_map

__all__ = ["HighOrderAttention", "MultiOrderDWConv", "MultiOrderGatedAggregation"]


def _products_of_others(factors):
    """``[prod_{j != i} f_j for i]`` with prefix and suffix products: no division (a factor may be 0)."""
    r = len(factors)
    prefix = [None] * r       # prefix[i] = f_0 ... f_{i-1}
    suffix = [None] * r       # suffix[i] = f_{i+1} ... f_{r-1}
    acc = None
    for i in range(r):
        prefix[i] = acc
        acc = factors[i] if acc is None else acc * factors[i]
    acc = None
    for i in reversed(range(r)):
        suffix[i] = acc
        acc = factors[i] if acc is None else acc * factors[i]
    out = []
    for p, s in zip(prefix, suffix):
        if p is None and s is None:
            out.append(xp.ones_like(factors[0]))
        else:
            out.append(s if p is None else (p if s is None else p * s))
    return out


class HighOrderAttention(Module):
    """MHN's high-order attention: a gate built from products of up to ``order`` linear maps of ``x``.

    For each order ``r = 1..R`` (``R = order``), with ``C' = channels // reduction``::

        z_{r,i} = W_{r,i} x           i = 1..r, each a bias-free 1x1 conv C -> C'   (B, C', H, W)
        p_r     = z_{r,1} * ... * z_{r,r}     an r-th order polynomial of x          (B, C', H, W)
        s_r     = sigmoid(V_r relu(p_r))      V_r a bias-free 1x1 conv C' -> C       (B, C, H, W)
        out     = x * (s_1 + ... + s_R) / R                                          (B, C, H, W)

    Order 1 is an ordinary (first-order) attention gate, as in pixel attention; order 2 sees
    pairwise products of channels (like a bilinear / covariance feature); order 3 triple
    products.  The three steps: **score** ``V_r relu(p_r)``, **align** the sigmoid, **context**
    ``x * gate``.  The mixed gate ``(1/R) sum_r s_r`` is kept in ``last_gate``
    ``(B, C, H, W)`` and each order's gate in ``last_gates`` ``(B, R, C, H, W)`` (for figures).

    Backward (docs/multi_order.md derives it): ``dx = dout * gate`` plus, through every order,
    ``ds_r = (dout * x) / R``, the sigmoid and ReLU backwards, and for the product
    ``dz_{r,i} = dp_r * prod_{j != i} z_{r,j}`` -- the product of the *other* factors,
    computed with prefix/suffix products (no division, so a zero factor is fine).
    cache: ``(x, gate, [z_{r,i}])`` (each conv, ReLU and sigmoid caches its own input/output).
    """

    def __init__(self, channels, order=3, reduction=4):
        where = "HighOrderAttention"
        self.channels = check_positive_int(channels, "channels", where)
        self.order = check_positive_int(order, "order", where)
        self.reduction = check_positive_int(reduction, "reduction", where)
        hidden = max(1, channels // reduction)
        self.hidden = hidden
        # z_convs: order 1 has 1 conv, order 2 has 2, ..., flattened; r*(r-1)/2 + i indexes (r, i)
        self.z_convs = [Conv2d(channels, hidden, 1, bias=False) for r in range(1, order + 1) for _ in range(r)]
        self.v_convs = [Conv2d(hidden, channels, 1, bias=False) for _ in range(order)]
        self.relus = [ReLU() for _ in range(order)]
        self.sigmoids = [Sigmoid() for _ in range(order)]
        self.last_gate = None
        self.last_gates = None

    def _convs_of_order(self, r):
        start = r * (r - 1) // 2
        return self.z_convs[start:start + r]

    def forward(self, x):
        _check_map(x, "HighOrderAttention", self.channels)
        R = self.order
        gates, factors = [], []
        for r in range(1, R + 1):
            z = [conv(x) for conv in self._convs_of_order(r)]      # r maps (B, C', H, W)
            p = z[0]
            for zi in z[1:]:
                p = p * zi                                          # p_r = z_{r,1} ... z_{r,r}
            score = self.v_convs[r - 1](self.relus[r - 1](p))      # 1. score   (B, C, H, W)
            gates.append(self.sigmoids[r - 1](score))              # 2. align: s_r in (0, 1)
            factors.append(z)
        gate = sum(gates) / R
        self.last_gate = gate
        self.last_gates = xp.stack(gates, axis=1)                   # (B, R, C, H, W)
        self.cache = (x, gate, factors)
        return x * gate                                             # 3. context

    def backward(self, grad_output):
        x, gate, factors = self.cache
        R = self.order
        dx = grad_output * gate                                     # out = x * gate (x directly)
        dgate = grad_output * x                                     # ... and through the gate
        for r in range(R, 0, -1):
            ds = dgate / R                                          # gate = (s_1 + ... + s_R) / R
            da = self.sigmoids[r - 1].backward(ds)                  # s_r = sigmoid(a_r)
            dp = self.relus[r - 1].backward(self.v_convs[r - 1].backward(da))   # a_r = V_r relu(p_r)
            z = factors[r - 1]
            # p_r = prod_i z_{r,i}  =>  dz_{r,i} = dp * prod_{j != i} z_{r,j}
            for conv, others in zip(self._convs_of_order(r), _products_of_others(z)):
                dx = dx + conv.backward(dp * others)
        return dx

    def extra_repr(self):
        return f"{self.channels}, order={self.order}, reduction={self.reduction}"


class MultiOrderDWConv(Module):
    """MogaNet's multi-order depthwise convolution: three receptive fields on three channel groups.

    ``channels`` must be a multiple of ``sum(channel_split)`` (8 by default).  With the splits
    ``C_0 = C/8, C_1 = 3C/8, C_2 = 4C/8``::

        y0 = DW5x5, d=1 (x)                    all C channels, padding 2  (reach 5 pixels)
        y1 = DW5x5, d=2 (y0[:, C_0 : C_0+C_1])                padding 4  (reach 9 pixels)
        y2 = DW7x7, d=3 (y0[:, C - C_2 :])                    padding 9  (reach 19 pixels)
        out = PW1x1( concat(y0[:, :C_0], y1, y2) )            (B, C, H, W)

    So the first eighth of the channels keeps a small (low-order) context, the next three
    eighths a middle one and the last half a large one; the 1x1 conv mixes the three.
    ``last_orders`` keeps the three parts ``(y0[:, :C_0], y1, y2)`` of the last forward.
    ``dilations`` must lie in 1..3 as in the official code.  Backward runs the steps in reverse:
    the pointwise conv, the split of the concat, the two dilated convs, and adds their
    input gradients into the matching channel slices of ``dy0`` before the first conv.
    cache: only a flag that forward ran; the convolutions keep their own caches.
    """

    def __init__(self, channels, dilations=(1, 2, 3), channel_split=(1, 3, 4)):
        where = "MultiOrderDWConv"
        self.channels = check_positive_int(channels, "channels", where)
        if len(dilations) != 3 or not all(isinstance(d, int) and 1 <= d <= 3 for d in dilations):
            raise ValueError(f"{where}: 'dilations' must be three ints in 1..3, got {dilations!r}")
        if len(channel_split) != 3 or not all(isinstance(s, int) and s > 0 for s in channel_split):
            raise ValueError(f"{where}: 'channel_split' must be three positive ints, got {channel_split!r}")
        total = sum(channel_split)
        if channels % total:
            raise ValueError(f"{where}: 'channels' ({channels}) must be a multiple of sum(channel_split) = {total}")
        self.dilations, self.channel_split = tuple(dilations), tuple(channel_split)
        self.c1 = channels * channel_split[1] // total
        self.c2 = channels * channel_split[2] // total
        self.c0 = channels - self.c1 - self.c2
        d0, d1, d2 = dilations
        self.dw_conv0 = Conv2d(channels, channels, 5, padding=(1 + 4 * d0) // 2, dilation=d0, groups=channels)
        self.dw_conv1 = Conv2d(self.c1, self.c1, 5, padding=(1 + 4 * d1) // 2, dilation=d1, groups=self.c1)
        self.dw_conv2 = Conv2d(self.c2, self.c2, 7, padding=(1 + 6 * d2) // 2, dilation=d2, groups=self.c2)
        self.pw_conv = Conv2d(channels, channels, 1)
        self.last_orders = None

    def forward(self, x):
        _check_map(x, "MultiOrderDWConv", self.channels)
        C, c0, c1, c2 = self.channels, self.c0, self.c1, self.c2
        y0 = self.dw_conv0(x)
        y1 = self.dw_conv1(y0[:, c0:c0 + c1])
        y2 = self.dw_conv2(y0[:, C - c2:])
        self.last_orders = (y0[:, :c0], y1, y2)                    # low / middle / high order, for figures
        self.cache = True
        return self.pw_conv(xp.concatenate([y0[:, :c0], y1, y2], axis=1))

    def backward(self, grad_output):
        C, c0, c1, c2 = self.channels, self.c0, self.c1, self.c2
        dcat = self.pw_conv.backward(grad_output)                  # out = PW(concat(...))
        dy0 = xp.zeros_like(dcat)
        dy0[:, :c0] = dcat[:, :c0]                                  # concat: slice the gradient back
        dy0[:, c0:c0 + c1] += self.dw_conv1.backward(dcat[:, c0:c0 + c1])
        dy0[:, C - c2:] += self.dw_conv2.backward(dcat[:, c0 + c1:])
        return self.dw_conv0.backward(dy0)

    def extra_repr(self):
        return f"{self.channels}, dilations={self.dilations}, channel_split={self.channel_split}"


class MultiOrderGatedAggregation(Module):
    """MogaNet's spatial block: feature decomposition, then a SiLU gate times a multi-order value.

    ``x (B, C, H, W)``, ``C`` a multiple of 8::

        y   = proj_1(x)                              1x1 conv
        y   = y + sigma * (y - GAP(y))               feature decomposition (sigma: (C,), init 1e-5)
        a   = SiLU(y)
        g   = gate(a)                                1x1 conv       -- 1. score (the gate logits)
        v   = value(a)                               MultiOrderDWConv (the multi-order context)
        out = proj_2(SiLU(g) * SiLU(v)) + x          2. align (SiLU) and 3. context (product), 1x1, shortcut

    ``GAP`` is the global average over ``H, W``; ``y - GAP(y)`` keeps what differs from the
    image-wide average (the paper's "complementary" interactions) and ``sigma`` learns how much of
    it to add back.  ``last_gate`` keeps ``SiLU(g)`` and ``last_value`` keeps ``SiLU(v)`` for
    figures.  Backward of the decomposition (``n = H W``):
    ``dy_1 = dy (1 + sigma) - sigma mean_{HW}(dy)``, ``dsigma = sum_{b,h,w} dy (y_1 - GAP(y_1))``.
    cache: ``(y_1 - GAP(y_1), SiLU(g), SiLU(v))``.
    """

    def __init__(self, channels, dilations=(1, 2, 3), channel_split=(1, 3, 4)):
        where = "MultiOrderGatedAggregation"
        self.channels = check_positive_int(channels, "channels", where)
        self.proj_1 = Conv2d(channels, channels, 1)
        self.sigma = Parameter(xp.full((channels,), 1e-5, dtype=self.proj_1.weight.data.dtype))
        self.act_value = SiLU()
        self.gate = Conv2d(channels, channels, 1)
        self.value = MultiOrderDWConv(channels, dilations, channel_split)
        self.act_gate_g = SiLU()
        self.act_gate_v = SiLU()
        self.proj_2 = Conv2d(channels, channels, 1)
        self.last_gate = None
        self.last_value = None

    def forward(self, x):
        _check_map(x, "MultiOrderGatedAggregation", self.channels)
        y1 = self.proj_1(x)
        centred = y1 - y1.mean(axis=(2, 3), keepdims=True)          # y1 - GAP(y1), (B, C, H, W)
        y = y1 + self.sigma.data[:, None, None] * centred           # feature decomposition
        a = self.act_value(y)
        sg = self.act_gate_g(self.gate(a))                         # SiLU(g)
        sv = self.act_gate_v(self.value(a))                        # SiLU(v)
        self.last_gate, self.last_value = sg, sv
        self.cache = (centred, sg, sv)
        return self.proj_2(sg * sv) + x

    def backward(self, grad_output):
        centred, sg, sv = self.cache
        dprod = self.proj_2.backward(grad_output)                   # out = proj_2(sg * sv) + x
        dg = self.gate.backward(self.act_gate_g.backward(dprod * sv))
        dv = self.value.backward(self.act_gate_v.backward(dprod * sg))
        dy = self.act_value.backward(dg + dv)                       # a fed both branches: gradients add
        sigma = self.sigma.data[:, None, None]
        self.sigma.grad += (dy * centred).sum(axis=(0, 2, 3))      # y = y1 + sigma * (y1 - GAP(y1))
        # y1 enters directly (1 + sigma) and through -sigma * GAP(y1); GAP's backward hands each
        # pixel 1/(HW) of the summed gradient:  dy1 = dy (1 + sigma) - mean_{HW}(sigma dy)
        dy1 = dy * (1.0 + sigma) - (sigma * dy).mean(axis=(2, 3), keepdims=True)
        return self.proj_1.backward(dy1) + grad_output              # + the shortcut

    def extra_repr(self):
        return f"{self.channels}"
