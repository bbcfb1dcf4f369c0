"""SAGAN self-attention on feature maps (Zhang et al., 2019, "Self-Attention GANs").

Every pixel (position) of a feature map attends to every other pixel: the ``N = H*W``
positions play the role of the tokens of a sequence, and the channels are their features.
"""
from ..backend import xp
from ..softmax import softmax
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
    have shape ``(C_out, C)`` instead of PyTorch's ``(C_out, C, 1, 1)``.  The code computes
    the transposed equations on the channels-first view ``X^T = x.reshape(B, C, N)``
    (``[Q^T; K^T; V^T] = W X^T + b``, ``O^T = V^T A^T``), with the three Linears' parameters
    stacked: no transposed copies, and one product for the three convs.  As in the note,
    the energy is *not* scaled by ``1/sqrt(d)``, there is no output projection, and
    ``gamma`` (a learned scalar) starts at **0**, so a fresh block is the identity and the
    network learns how much non-local evidence to mix in.

    ``reduction`` (8 in SAGAN): query/key get ``in_dim // reduction`` channels.
    cache: ``(X^T, Q, K^T, V^T, attention, O^T)``: the input view, the projected maps, the attention
    map and the attention output.
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

    def _conv_params(self):
        """The three 1x1 convs stacked: ``W (2d + C, C)``, ``b (2d + C, 1)`` (``d = C / reduction``)."""
        convs = (self.query_conv, self.key_conv, self.value_conv)
        return (xp.concatenate([c.weight.data for c in convs]),
                xp.concatenate([c.bias.data for c in convs])[:, None])

    def forward(self, x):
        check_array(x, "x", "SelfAttention2d", shape=(None, self.in_dim, None, None))
        B, C, H, W = x.shape
        d = self.qk_dim
        # The code works on the channels-first (B, C, N) view X^T of x (N = H*W), as the notes'
        # PyTorch code does: no transposed copies of the feature map, and the three 1x1 convs run
        # as one stacked (2d + C, C) @ (C, N) product per image instead of three.
        XT = x.reshape(B, C, H * W)                    # (B, C, N): X^T, a view
        Wc, bc = self._conv_params()
        Y = Wc @ XT                                    # (B, 2d + C, N) = [Q^T; K^T; V^T]
        Y += bc
        qT, kT, vT = Y[:, :d], Y[:, d:2 * d], Y[:, 2 * d:]
        q = xp.ascontiguousarray(qT.transpose(0, 2, 1))   # (B, N, d): BLAS is 2x faster on rows than on columns here
        energy = q @ kT                                # score   (B, N, N)   energy[i, j] = q_i . k_j
        attention = softmax(energy, axis=-1, out=energy)   # align   over the key positions j (in place)
        oT = vT @ attention.transpose(0, 2, 1)         # context O^T = V^T A^T (B, C, N): o_i = sum_j a_ij v_j
        self.cache = (XT, q, kT, vT, attention, oT)
        return self.gamma.data * oT.reshape(B, C, H, W) + x, attention

    def backward(self, grad_output):
        XT, q, kT, vT, attention, oT = self.cache
        B, C, H, W = grad_output.shape
        gT = grad_output.reshape(B, C, H * W)
        self.gamma.grad += (gT.reshape(-1) @ oT.reshape(-1)).reshape(1)   # out = gamma * o + x
        doT = self.gamma.data * gT                     # (B, C, N): dO^T
        # context: O^T = V^T A^T  ->  dV^T = dO^T A,  dA = dO V^T
        dvT = doT @ attention
        # align: dE = A * (dA - delta), delta_i = sum_j a_ij dA_ij = do_i . o_i (the FlashAttention
        # identity, docs/multihead.md: (B, N, C) work instead of (B, N, N)); dA - delta as one
        # product [dO | -delta] [V | 1]^T, so the subtraction rides in the GEMM's inner dimension
        delta = xp.einsum("bcn,bcn->bn", doT, oT)[:, None, :]           # (B, 1, N)
        d_energy = xp.concatenate([doT, -delta], axis=1).transpose(0, 2, 1) @ \
            xp.concatenate([vT, xp.ones_like(delta)], axis=1)           # (B, N, N): dA - delta
        d_energy *= attention
        # score: E = Q K^T  ->  dQ = dE K,  dK^T = Q^T dE
        dqT = (d_energy @ kT.transpose(0, 2, 1)).transpose(0, 2, 1)     # (B, d, N)
        dkT = q.transpose(0, 2, 1) @ d_energy                           # (B, d, N)
        # the three 1x1 convs, Y = W X^T + b: dW = sum over images of dY X, db = sum dY, and
        # dX^T = W^T dY -- one product for the three, whose input gradients add up (all read X)
        dY = xp.concatenate([dqT, dkT, dvT], axis=1)                    # (B, 2d + C, N)
        dW = (dY @ XT.transpose(0, 2, 1)).sum(axis=0)                   # (2d + C, C)
        db = dY.sum(axis=(0, 2))
        d = self.qk_dim
        for conv, rows in ((self.query_conv, slice(0, d)), (self.key_conv, slice(d, 2 * d)),
                           (self.value_conv, slice(2 * d, None))):
            conv.weight.grad += dW[rows]
            conv.bias.grad += db[rows]
        dXT = self._conv_params()[0].T @ dY                              # (B, C, N)
        return grad_output + dXT.reshape(B, C, H, W)  # + the residual path

    def extra_repr(self):
        return f"in_dim={self.in_dim}, qk_dim={self.qk_dim}"
