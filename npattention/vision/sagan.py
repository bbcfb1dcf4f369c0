"""SAGAN self-attention on feature maps (Zhang et al., 2019, "Self-Attention GANs").

Every pixel (position) of a feature map attends to every other pixel: the ``N = H*W``
positions play the role of the tokens of a sequence, and the channels are their features.
"""
from ..backend import xp
from ..softmax import softmax, softmax_backward
from ..layers import Linear
from ..module import Module, Parameter
from ..validate import check_array, check_positive_int


class SelfAttention2d(Module):
    """SAGAN's ``Self_Attn``: ``x`` ``(B, C, H, W)`` -> ``(out (B, C, H, W), attention (B, N, N))``.

    With ``X`` the ``(B, N, C)`` pixels-as-tokens view of ``x`` (``N = H*W``)::

        Q = X Wq^T + bq      (B, N, C/8)   1x1 conv "query_conv"
        K = X Wk^T + bk      (B, N, C/8)   1x1 conv "key_conv"
        V = X Wv^T + bv      (B, N, C)     1x1 conv "value_conv"
        score:   energy    = Q K^T                     (B, N, N)   energy[i, j] = q_i . k_j
        align:   attention = softmax(energy, over j)   (B, N, N)   row i sums to 1
        context: O         = attention V               (B, N, C)   o_i = sum_j a_ij v_j
        out      = gamma * O + X   (as (B, C, H, W))

    A 1x1 convolution is the same linear map applied to the channel vector of every pixel,
    i.e. a :class:`~npattention.layers.Linear` on the channels-last view ``X``; the weights
    have shape ``(C_out, C)`` instead of PyTorch's ``(C_out, C, 1, 1)``.  As in the note,
    the energy is *not* scaled by ``1/sqrt(d)``, there is no output projection, and
    ``gamma`` (a learned scalar) starts at **0**, so a fresh block is the identity and the
    network learns how much non-local evidence to mix in.

    ``reduction`` (8 in SAGAN): query/key get ``in_dim // reduction`` channels.
    cache: ``(q, k, v, attention, o)``: the projected maps, the attention map and the attention output.
    """

    def __init__(self, in_dim, reduction=8):
        where = "SelfAttention2d"
        self.in_dim = check_positive_int(in_dim, "in_dim", where)
        check_positive_int(reduction, "reduction", where)
        if in_dim // reduction < 1:
            raise ValueError(f"{where}: 'in_dim' must be at least reduction={reduction} so that "
                             f"query/key have in_dim // {reduction} >= 1 channels, got in_dim={in_dim}")
        self.reduction = reduction
        self.qk_dim = in_dim // reduction
        self.query_conv = Linear(in_dim, self.qk_dim)
        self.key_conv = Linear(in_dim, self.qk_dim)
        self.value_conv = Linear(in_dim, in_dim)
        self.gamma = Parameter(xp.zeros(1, dtype=self.value_conv.weight.data.dtype))

    def forward(self, x):
        check_array(x, "x", "SelfAttention2d", shape=(None, self.in_dim, None, None))
        B, C, H, W = x.shape
        X = x.reshape(B, C, H * W).transpose(0, 2, 1)  # (B, N, C): pixels as tokens
        q, k, v = self.query_conv(X), self.key_conv(X), self.value_conv(X)
        energy = q @ k.transpose(0, 2, 1)  # score   (B, N, N)
        attention = softmax(energy, axis=-1)  # align   over the key positions j
        o = attention @ v  # context (B, N, C)
        o = o.transpose(0, 2, 1).reshape(B, C, H, W)
        self.cache = (q, k, v, attention, o)
        return self.gamma.data * o + x, attention

    def backward(self, grad_output):
        q, k, v, attention, o = self.cache
        B, C, H, W = grad_output.shape
        self.gamma.grad += xp.sum(grad_output * o).reshape(1)  # out = gamma * o + x
        do = (self.gamma.data * grad_output).reshape(B, C, H * W).transpose(0, 2, 1)  # (B, N, C)
        # context: o = a v  ->  da = do v^T,  dv = a^T do
        d_attention = do @ v.transpose(0, 2, 1)
        dv = attention.transpose(0, 2, 1) @ do
        # align: softmax over each row
        d_energy = softmax_backward(d_attention, attention)
        # score: e = q k^T  ->  dq = de k,  dk = de^T q
        dq = d_energy @ k
        dk = d_energy.transpose(0, 2, 1) @ q
        # the three 1x1 convs all read X: their input gradients add up
        dX = self.query_conv.backward(dq) + self.key_conv.backward(dk) + self.value_conv.backward(dv)
        return grad_output + dX.transpose(0, 2, 1).reshape(B, C, H, W)  # + the residual path

    def extra_repr(self):
        return f"in_dim={self.in_dim}, qk_dim={self.qk_dim}"
