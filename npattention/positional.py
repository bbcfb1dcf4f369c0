"""Positional encodings: tell a permutation-blind attention layer where each token sits.

Self-attention treats its input as a *set*: permuting the tokens permutes the outputs
the same way.  Adding a vector that depends on the position ``t`` to each token's
embedding breaks that symmetry.  Two choices (docs/transformer.md has the maths):

* :class:`SinusoidalPositionalEncoding` -- a fixed table (Vaswani et al., 2017)::

      PE[t, 2i]   = sin(t / 10000^(2i / d))
      PE[t, 2i+1] = cos(t / 10000^(2i / d))

  Each pair of columns is a point on a circle turning at its own frequency, so
  ``PE[t + k]`` is a fixed rotation of ``PE[t]`` (a linear map depending on ``k`` only):
  relative offsets are easy for a linear layer to read.  No parameters; works for any
  length up to ``max_len`` (the table could be extended to longer ones).

* :class:`LearnedPositionalEmbedding` -- a trainable table ``P`` of shape
  ``(max_len, d)`` (BERT, GPT): more flexible, but knows nothing about positions it
  never saw in training.

Both take embeddings ``x`` of shape ``(B, T, d)`` and return ``x + PE[:T]`` (then
dropout), so they are interchangeable in :class:`npattention.transformer.Transformer`.
"""
from .backend import DEFAULT_DTYPE, get_rng, xp
from .layers import Dropout
from .module import Module, Parameter
from .validate import check_array, check_positive_int, check_probability


def sinusoidal_table(max_len, d_model, base=10000.0, dtype=None):
    """The ``(max_len, d_model)`` table of sines (even columns) and cosines (odd columns).

    Computed in float64 and returned in ``dtype`` (default ``DEFAULT_DTYPE``, float32), so a
    float64 model gets a table exact to float64 rounding.

    Column pair ``(2i, 2i+1)`` has angular frequency ``w_i = base^(-2i/d)``: from one
    cycle per ``2 pi`` positions (``i = 0``) down to one per ``2 pi * base`` positions.
    """
    check_positive_int(max_len, "max_len", "sinusoidal_table")
    check_positive_int(d_model, "d_model", "sinusoidal_table")
    t = xp.arange(max_len, dtype=xp.float64)[:, None]  # (L, 1)
    freq = base ** (-xp.arange(0, d_model, 2, dtype=xp.float64) / d_model)  # (ceil(d/2),)
    angle = t * freq  # (L, ceil(d/2))
    pe = xp.zeros((max_len, d_model), dtype=xp.float64)
    pe[:, 0::2] = xp.sin(angle)
    pe[:, 1::2] = xp.cos(angle[:, : d_model // 2])  # odd d: one cosine column fewer
    return pe.astype(DEFAULT_DTYPE if dtype is None else dtype)


class SinusoidalPositionalEncoding(Module):
    """``y = dropout(x + PE[:T])`` with the fixed sinusoidal table ``PE`` (a buffer).

    ``x``: ``(B, T, d_model)`` with ``T <= max_len`` -> ``y``: same shape.
    Backward: the table is constant, so ``dL/dx = dropout.backward(dL/dy)``.
    cache: none of its own (the table is constant; the dropout keeps its mask).
    """

    def __init__(self, d_model, max_len=5000, dropout=0.0):
        self.d_model = check_positive_int(d_model, "d_model", "SinusoidalPositionalEncoding")
        self.max_len = check_positive_int(max_len, "max_len", "SinusoidalPositionalEncoding")
        self.dropout = Dropout(check_probability(dropout, "dropout", "SinusoidalPositionalEncoding"))
        self.register_buffer("pe", sinusoidal_table(max_len, d_model))

    def forward(self, x):
        check_array(x, "x", "SinusoidalPositionalEncoding", shape=(None, None, self.d_model))
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"SinusoidalPositionalEncoding: sequence length {T} exceeds 'max_len' {self.max_len}")
        return self.dropout(x + self.pe[:T].astype(x.dtype))

    def backward(self, grad_output):
        return self.dropout.backward(grad_output)  # d(x + PE)/dx = I

    def _cast_buffers(self, dtype):
        # .double() / .to(dtype): rebuild the table in dtype rather than cast the float32 one
        self.pe = sinusoidal_table(self.max_len, self.d_model, dtype=dtype)

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}, dropout={self.dropout.p}"


class LearnedPositionalEmbedding(Module):
    """``y = dropout(x + P[:T])`` with a trainable table ``P`` of shape ``(max_len, d_model)``.

    ``x``: ``(B, T, d_model)`` with ``T <= max_len``.  ``P`` starts as ``N(0, init_std^2)``
    (small, as in BERT/GPT-2, so the token embeddings dominate at first).
    Backward: ``dL/dx = g`` and ``dL/dP[t] = sum_b g[b, t]`` for ``t < T`` (rows ``>= T``
    were not used and get nothing), where ``g`` is the gradient after dropout's backward.
    cache: ``T``, the sequence length (rows ``0..T-1`` of the table get the gradient).
    """

    def __init__(self, max_len, d_model, dropout=0.0, init_std=0.02):
        self.max_len = check_positive_int(max_len, "max_len", "LearnedPositionalEmbedding")
        self.d_model = check_positive_int(d_model, "d_model", "LearnedPositionalEmbedding")
        self.dropout = Dropout(check_probability(dropout, "dropout", "LearnedPositionalEmbedding"))
        self.weight = Parameter(get_rng().normal((max_len, d_model), scale=init_std))

    def forward(self, x):
        check_array(x, "x", "LearnedPositionalEmbedding", shape=(None, None, self.d_model))
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"LearnedPositionalEmbedding: sequence length {T} exceeds 'max_len' {self.max_len}")
        self.cache = T
        return self.dropout(x + self.weight.data[:T])

    def backward(self, grad_output):
        T = self.cache
        g = self.dropout.backward(grad_output)
        self.weight.grad[:T] += g.sum(axis=0)  # P[t] was added to every batch row
        return g

    def extra_repr(self):
        return f"max_len={self.max_len}, d_model={self.d_model}, dropout={self.dropout.p}"


def relative_position_rotation(d_model, k, base=10000.0):
    """The ``(d, d)`` matrix ``M_k`` with ``PE[t + k] = M_k @ PE[t]`` for every ``t``.

    Block diagonal: for column pair ``(2i, 2i+1)`` with frequency ``w_i`` the block is the
    rotation ``[[cos(k w_i), sin(k w_i)], [-sin(k w_i), cos(k w_i)]]`` (from
    ``sin(a + b) = sin a cos b + cos a sin b`` and ``cos(a + b) = cos a cos b - sin a sin b``).
    ``M_k`` depends on the offset ``k`` only, not on ``t``.  ``d_model`` must be even.
    """
    if check_positive_int(d_model, "d_model", "relative_position_rotation") % 2:
        raise ValueError(f"relative_position_rotation: 'd_model' must be even, got {d_model}")
    freq = base ** (-xp.arange(0, d_model, 2, dtype=xp.float64) / d_model)
    c, s = xp.cos(k * freq), xp.sin(k * freq)
    M = xp.zeros((d_model, d_model), dtype=xp.float64)
    i = xp.arange(0, d_model, 2)
    M[i, i], M[i, i + 1] = c, s  # sin row:  sin(a+b) = c*sin a + s*cos a
    M[i + 1, i], M[i + 1, i + 1] = -s, c  # cos row:  cos(a+b) = -s*sin a + c*cos a
    return M


__all__ = [
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "relative_position_rotation",
    "sinusoidal_table",
]
