"""Core layers: each a forward that caches what it needs and a hand-written backward.

Shapes use ``...`` for any leading axes, e.g. ``(B, T, D)``.  The derivations of every
backward are in ``docs/layers.md``; the rules all layers follow are in ``docs/contract.md``.

=================  =========================================================================
``Linear``         ``y = x W^T + b``
``Embedding``      ``y = W[ids]`` (a row lookup; ids are not differentiable)
``LayerNorm``      normalise the last axis to mean 0 / variance 1, then ``* gamma + beta``
``Dropout``        inverted dropout: zero with probability ``p``, scale the rest by ``1/(1-p)``
``ReLU``           ``max(x, 0)``
``GELU``           ``x Phi(x)`` (tanh approximation by default; exact ``"none"`` via our own erf)
``Tanh``           ``tanh(x)``
``Sigmoid``        ``1 / (1 + exp(-x))``
``SiLU``           ``x sigmoid(x)`` (swish; MogaNet's gate activation)
``Softmax``        ``softmax`` along ``dim`` (npattention.softmax)
``LogSoftmax``     ``log softmax`` along ``dim`` (npattention.softmax)
=================  =========================================================================
"""
import math

from .backend import DEFAULT_DTYPE, add_at, get_rng, xp
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward
from .module import Module, Parameter
from .validate import check_array, check_positive_int, check_probability


def sigmoid(x, precise=True, out=None):
    """The logistic function ``1 / (1 + exp(-x))`` without overflow: from ``e = exp(-|x|) <= 1``
    it is ``1 / (1 + e)`` for ``x >= 0`` and ``e / (1 + e)`` for ``x < 0`` (full relative
    precision even for ``x = -30``).  Used by :class:`Sigmoid`, :class:`SiLU`, the RNN gates and
    the vision gates.

    ``precise=False`` (the RNN gates): ``(1 + tanh(x / 2)) / 2``, about 3x faster (one ``tanh`` and
    two in-place updates; the ``where`` on the sign above mispredicts on random signs), also without
    overflow, with an error that is absolute (about one rounding of 1) instead of relative: fine
    for a gate, whose value multiplies numbers of order 1.  ``out`` (with ``precise=False``): the
    array to write into, ``out=x`` for in place."""
    if not precise:
        s = xp.multiply(x, 0.5, out=out)
        xp.tanh(s, out=s)
        s += 1.0
        s *= 0.5
        return s
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0, e) / (1.0 + e)


def xavier_uniform(shape, dtype=None):
    """Glorot/Xavier initialisation of a ``(fan_out, fan_in)`` weight, ``U(-a, a)`` with
    ``a = sqrt(6 / (fan_in + fan_out))``: the variance of activations and of gradients stays about
    the same from layer to layer (``torch.nn.init.xavier_uniform_``)."""
    fan_out, fan_in = shape
    bound = math.sqrt(6.0 / (fan_out + fan_in))
    return get_rng().uniform(tuple(shape), -bound, bound, dtype=dtype)


class Linear(Module):
    """``y = x W^T + b``.  ``x``: ``(..., in_features)`` -> ``y``: ``(..., out_features)``.

    ``W``: ``(out_features, in_features)``, ``b``: ``(out_features,)``, both initialised
    from ``U(-1/sqrt(in), 1/sqrt(in))`` as in PyTorch.
    cache: ``x``.
    """

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = check_positive_int(in_features, "in_features", "Linear")
        self.out_features = check_positive_int(out_features, "out_features", "Linear")
        bound = 1.0 / in_features ** 0.5
        rng = get_rng()
        self.weight = Parameter(rng.uniform((out_features, in_features), -bound, bound))
        self.bias = Parameter(rng.uniform((out_features,), -bound, bound)) if bias else None

    def forward(self, x):
        check_array(x, "x", "Linear", shape=(..., self.in_features))
        self.cache = x
        # one (N, in) @ (in, out) GEMM over all N = prod(...) rows: NumPy's stacked matmul of a
        # (B, T, in) array calls BLAS once per batch item (2x slower at the demo's (64, 24, 64))
        y = x.reshape(-1, self.in_features) @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data  # in place: no second (N, out) array
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, grad_output):
        x = self.cache
        # Flatten the leading axes so each product is one GEMM over all N rows.
        grad_rows = grad_output.reshape(-1, self.out_features)  # (N, out)
        x_rows = x.reshape(-1, self.in_features)  # (N, in)
        self.weight.grad += grad_rows.T @ x_rows  # dL/dW = sum over rows of g x^T
        if self.bias is not None:
            # dL/db = sum over rows of g, as ones(N) @ g: one BLAS gemv, ~5x faster than
            # NumPy's column sum grad_rows.sum(axis=0) at (1536, 64)
            self.bias.grad += xp.ones(grad_rows.shape[0], dtype=grad_rows.dtype) @ grad_rows
        return (grad_rows @ self.weight.data).reshape(x.shape)  # dL/dx = g W

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: ``y[..., :] = W[ids[...], :]``.

    ``ids``: integer array ``(...)`` with values in ``[0, num_embeddings)`` ->
    ``y``: ``(..., embedding_dim)``.  ``W``: ``(num_embeddings, embedding_dim)``,
    initialised from ``N(0, 1)`` as in PyTorch.

    ``padding_idx``: that row of ``W`` starts at zero and never receives a gradient, so
    it stays zero during training (as in PyTorch).  Positions holding ``padding_idx``
    output exactly zero (the row is treated as the constant 0), which keeps forward and
    backward consistent for the gradient check.

    Backward scatter-adds ``grad_output`` into the rows that were looked up (a row used
    twice gets both gradients) and returns ``None``: integer ids are not differentiable.
    cache: ``ids``.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        self.num_embeddings = check_positive_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = check_positive_int(embedding_dim, "embedding_dim", "Embedding")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int) or \
                    not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: 'padding_idx' must be an int in [{-num_embeddings}, "
                                 f"{num_embeddings}) or None, got {padding_idx!r}")
            padding_idx %= num_embeddings  # negative index counts from the end, as in PyTorch
        self.padding_idx = padding_idx
        self.weight = Parameter(get_rng().normal((num_embeddings, embedding_dim)))
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, ids):
        check_array(ids, "ids", "Embedding", dtype="int")
        # one sync on CuPy, which would otherwise wrap out-of-range indices silently
        if bool(((ids < 0) | (ids >= self.num_embeddings)).any()):
            raise ValueError(f"Embedding: 'ids' must lie in [0, {self.num_embeddings}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        self.cache = ids
        table = self.weight.data
        # xp.take(table, ids, axis=0) is table[ids]: the same rows, 2x faster than fancy indexing
        if self.padding_idx is None:
            return xp.take(table, ids, axis=0)  # (..., D)
        # padding positions are the constant 0 ...
        if self.num_embeddings <= ids.size:
            # ... read from a copy of the table whose padding row is 0: (V, D) work, less than
            # masking the (..., D) output when there are more ids than rows (the demo: 10x faster)
            table = table.copy()
            table[self.padding_idx] = 0
            return xp.take(table, ids, axis=0)
        out = xp.take(table, ids, axis=0)
        out *= (ids != self.padding_idx).astype(out.dtype)[..., None]  # ... or masked: in place, float mask
        return out

    def backward(self, grad_output):
        ids = self.cache.reshape(-1)
        g = grad_output.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:  # the padding row gets no gradient: keep its value and restore it
            kept = self.weight.grad[self.padding_idx].copy()  # (D,) instead of masking the (N, D) gradient
        # dL/dW[v] = sum of grad_output over every position whose id is v.  Plain
        # ``W.grad[ids] += g`` would keep only ONE of the repeated ids: scatter-add instead.
        add_at(self.weight.grad, ids, g)
        if self.padding_idx is not None:
            self.weight.grad[self.padding_idx] = kept  # exactly what it was before this backward
        # no return value (None): integer ids have no gradient

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class LayerNorm(Module):
    """Layer normalisation over the last axis.

    ``x``: ``(..., D)`` -> ``y``: ``(..., D)`` with, for each row,

    ``mu = mean(x)``, ``var = mean((x - mu)^2)`` (biased), ``xhat = (x - mu) / sqrt(var + eps)``,
    ``y = gamma * xhat + beta``.

    ``gamma`` (``weight``, ones) and ``beta`` (``bias``, zeros) have shape ``(D,)``; with
    ``elementwise_affine=False`` there are none, with ``bias=False`` there is no ``beta``.
    Only the last axis can be normalised: ``normalized_shape`` is ``D`` or ``(D,)``.

    cache: ``(xhat, rstd)`` with the leading axes flattened: ``xhat`` ``(N, D)`` and
    ``rstd = 1 / sqrt(var + eps)`` ``(N, 1)``, ``N = prod(...)``.  llm.c keeps only ``mean``
    and ``rstd`` and recomputes ``xhat``; we keep ``xhat`` (one more array the size of ``x``) because
    both ``dgamma`` and ``dx`` read it, and it saves recomputing it in every backward.
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        shape = normalized_shape
        if isinstance(shape, (tuple, list)):
            if len(shape) != 1:
                raise ValueError(f"LayerNorm: 'normalized_shape' must be an int or a 1-tuple "
                                 f"(only the last axis is normalised), got {normalized_shape!r}")
            shape = shape[0]
        self.normalized_shape = (check_positive_int(shape, "normalized_shape", "LayerNorm"),)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
            raise ValueError(f"LayerNorm: 'eps' must be a positive float, got {eps!r}")
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        D = self.normalized_shape[0]
        self.weight = Parameter(xp.ones(D, dtype=DEFAULT_DTYPE)) if elementwise_affine else None
        self.bias = Parameter(xp.zeros_like(self.weight.data)) if elementwise_affine and bias else None

    def forward(self, x):
        check_array(x, "x", "LayerNorm", shape=(..., self.normalized_shape[0]))
        params = [p.data for p in (self.weight, self.bias) if p is not None]
        x = x.astype(xp.result_type(x.dtype, *(p.dtype for p in params)), copy=False)  # scratch below in one dtype
        shape, D = x.shape, x.shape[-1]
        x = x.reshape(-1, D)  # (N, D), N = prod(...): each product below is one BLAS call, not one per batch item
        # Row means as matrix-vector products  x @ (1/D, ..., 1/D): one BLAS gemv, ~6x faster
        # than x.mean(axis=-1) over a short last axis (D = 64).
        mean_vec = xp.full(D, 1.0 / D, dtype=x.dtype)
        xc = x - (x @ mean_vec)[:, None]  # x - mu
        sq = xp.square(xc)  # (xc)^2; the buffer is reused for y below
        rstd = (1.0 / xp.sqrt(sq @ mean_vec + self.eps))[:, None]  # 1 / sqrt(var + eps)  (N, 1)
        xhat = xc
        xhat *= rstd  # in place (fewer passes and temporaries): xc becomes xhat
        self.cache = (xhat, rstd)
        if self.weight is None:
            return xhat.reshape(shape)
        y = xp.multiply(xhat, self.weight.data, out=sq)  # gamma * xhat, into the (xc)^2 buffer
        if self.bias is not None:
            y += self.bias.data  # + beta, in place
        return y.reshape(shape)

    def backward(self, grad_output):
        xhat, rstd = self.cache
        D = xhat.shape[-1]
        g = grad_output.astype(xp.result_type(grad_output.dtype, xhat.dtype), copy=False).reshape(-1, D)  # (N, D)
        g_xhat = g * xhat
        # column sums over the N rows as ones(N) @ (N, D) and row sums as (N, D) @ (D,): BLAS gemv,
        # 5-6x faster than NumPy's .sum over an axis at these sizes
        ones = xp.ones(g.shape[0], dtype=g.dtype)
        if self.bias is not None:
            self.bias.grad += ones @ g  # dL/dbeta = sum_rows g
        if self.weight is None:
            gamma = xp.ones(D, dtype=g.dtype)
            d_xhat = g.copy()  # dL/dxhat (a copy: edited in place below)
        else:
            gamma = self.weight.data
            self.weight.grad += ones @ g_xhat  # dL/dgamma = sum_rows g*xhat
            d_xhat = g * gamma  # dL/dxhat
        # The compact form (docs/layers.md): mu and var depend on every x_j of the row, which
        # gives the two mean terms; each removes one direction (the mean, the xhat direction).
        # dL/dx = rstd * (d_xhat - mean(d_xhat) - xhat * mean(d_xhat * xhat))
        # Both means are gemvs with gamma / D, since d_xhat = g * gamma: no (N, D) product is formed.
        mean_d_xhat = (g @ (gamma / D))[:, None]  # (N, 1)
        mean_d_xhat_xhat = (g_xhat @ (gamma / D))[:, None]  # (N, 1)
        dx = d_xhat
        dx -= mean_d_xhat  # in place, in the d_xhat buffer
        dx -= xp.multiply(xhat, mean_d_xhat_xhat, out=g_xhat)  # the product reuses the g*xhat buffer
        dx *= rstd
        return dx.reshape(grad_output.shape)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Dropout(Module):
    """Inverted dropout: ``y = x * m / (1 - p)`` with ``m_i ~ Bernoulli(1 - p)``.

    In training mode each entry is zeroed with probability ``p`` and the survivors are
    scaled by ``1/(1-p)`` so that ``E[y] = x``; in eval mode (``.eval()``) or with
    ``p = 0`` it is the identity.  The mask is drawn from the global generator
    ``get_rng()``, so ``manual_seed`` makes it reproducible.  ``p`` must lie in ``[0, 1)``
    (PyTorch also allows ``p = 1``, which zeros everything).
    Backward: ``dL/dx = dL/dy * m / (1 - p)`` (the same mask).
    cache: ``scale`` = keep mask / (1 - p), so ``dx = dy * scale`` (``None`` when dropout is off).
    """

    def __init__(self, p=0.5):
        self.p = check_probability(p, "p", "Dropout")

    def forward(self, x):
        check_array(x, "x", "Dropout")
        if not self.training or self.p == 0.0:
            self.cache = None  # identity
            return x
        keep = get_rng().keep_mask(x.shape, self.p, dtype=x.dtype)  # True with probability 1-p
        scale = keep.astype(x.dtype) / (1.0 - self.p)
        self.cache = scale
        return x * scale

    def backward(self, grad_output):
        scale = self.cache
        return grad_output if scale is None else grad_output * scale

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(Module):
    """``y = max(x, 0)``; ``dy/dx = 1`` where ``x > 0``, else 0 (0 at the kink, as in PyTorch).

    cache: the boolean mask ``x > 0``.
    """

    def forward(self, x):
        check_array(x, "x", "ReLU")
        self.cache = x > 0
        # max(x, 0) against an array of zeros, written in place: NumPy's maximum with a scalar
        # operand is not vectorised, 2x slower (at (64, 24, 128), float32)
        y = xp.zeros_like(x)
        return xp.maximum(x, y, out=y)

    def backward(self, grad_output):
        return grad_output * self.cache


def erf(x, terms=100):
    """The error function, to about 1e-15 in float64, written with ``xp`` (NumPy has no erf).

    Uses the everywhere-convergent series with positive terms (no cancellation)
    ``erf(z) = 2/sqrt(pi) * exp(-z^2) * sum_n (2 z^2)^n z / (1*3*...*(2n+1))``
    for ``|z| <= 6`` and ``erf(z) = sign(z)`` beyond (``erfc(6) ~ 2e-17``).  The loop runs
    over the 100 series terms, not over the data.
    """
    a = xp.minimum(xp.abs(x), 6.0)
    term = a
    total = a
    two_a2 = 2.0 * a * a
    for n in range(1, terms):
        term = term * two_a2 / (2 * n + 1)
        total = total + term
    return xp.sign(x) * xp.minimum(2.0 / math.sqrt(math.pi) * xp.exp(-a * a) * total, 1.0)


class GELU(Module):
    """Gaussian error linear unit ``y = x Phi(x)``, ``Phi`` the standard normal CDF.

    As ``torch.nn.GELU``: ``approximate="none"`` (the default) is the exact
    ``Phi(x) = (1 + erf(x / sqrt 2)) / 2``, with :func:`erf` implemented here (NumPy has
    none: a 100-term series, about 60x slower than the tanh form, 15 ms vs 0.25 ms for a
    256 x 1024 array).  ``approximate="tanh"``: the approximation of BERT/GPT-2,
    ``y = 0.5 x (1 + tanh(u))``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``, within 4.7e-4 of
    the exact GELU (near x = -2.7).  In the Transformer layers ``activation="gelu"`` is the
    exact form and ``activation="gelu_tanh"`` the approximation.
    Backward: tanh form ``0.5 (1 + t) + 0.5 x (1 - t^2) du/dx``; exact ``Phi(x) + x phi(x)``.
    cache: ``(x, t)`` with ``t = tanh(...)`` (tanh approximation) or ``(x, cdf)`` with ``cdf = Phi(x)`` (exact).
    """

    _C = math.sqrt(2.0 / math.pi)
    _A = 0.044715

    def __init__(self, approximate="none"):
        if approximate not in ("tanh", "none"):
            raise ValueError(f"GELU: 'approximate' must be 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        check_array(x, "x", "GELU")
        if self.approximate == "tanh":
            t = xp.tanh(self._C * (x + self._A * x * x * x))
            self.cache = (x, t)
            return 0.5 * x * (1.0 + t)
        cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
        self.cache = (x, cdf)
        return x * cdf

    def backward(self, grad_output):
        x, c = self.cache
        if self.approximate == "tanh":
            du = self._C * (1.0 + 3.0 * self._A * x * x)  # du/dx
            return grad_output * (0.5 * (1.0 + c) + 0.5 * x * (1.0 - c * c) * du)  # tanh' = 1 - tanh^2
        pdf = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # phi(x) = Phi'(x)
        return grad_output * (c + x * pdf)  # product rule on x * Phi(x)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """``y = tanh(x)``; ``dy/dx = 1 - y^2``.

    cache: ``y``, the output (the derivative needs only it).
    """

    def forward(self, x):
        check_array(x, "x", "Tanh")
        y = xp.tanh(x)
        self.cache = y
        return y

    def backward(self, grad_output):
        y = self.cache
        return grad_output * (1.0 - y * y)


class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))`` (computed by :func:`sigmoid`, without overflow); ``dy/dx = y (1 - y)``.

    cache: ``y`` (the derivative needs only the output).
    """

    def forward(self, x):
        check_array(x, "x", "Sigmoid")
        y = sigmoid(x)
        self.cache = y
        return y

    def backward(self, grad_output):
        y = self.cache
        return grad_output * y * (1.0 - y)


def _check_dim(dim, where):
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{where}: 'dim' must be an int, got {dim!r}")
    return dim


def _check_axis_in_range(x, dim, where):
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{where}: 'dim'={dim} is out of range for an input with {x.ndim} axes {tuple(x.shape)}")


class Softmax(Module):
    """``y = softmax(x)`` along ``dim``: ``y_i = exp(x_i) / sum_j exp(x_j)`` (stable).

    Backward (``npattention.softmax.softmax_backward``):
    ``dL/dx_i = y_i (dL/dy_i - sum_j y_j dL/dy_j)``.
    cache: ``y``, the output (the gradient needs only the output).
    """

    def __init__(self, dim=-1):
        self.dim = _check_dim(dim, "Softmax")

    def forward(self, x):
        check_array(x, "x", "Softmax")
        _check_axis_in_range(x, self.dim, "Softmax")
        y = softmax(x, axis=self.dim)
        self.cache = y
        return y

    def backward(self, grad_output):
        return softmax_backward(grad_output, self.cache, axis=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """``y = log softmax(x)`` along ``dim``: ``y_i = x_i - log sum_j exp(x_j)`` (stable).

    Backward (``npattention.softmax.log_softmax_backward``):
    ``dL/dx_i = dL/dy_i - softmax(x)_i sum_j dL/dy_j``.
    cache: ``y``, the output (the gradient needs only ``p = exp(y)``).
    """

    def __init__(self, dim=-1):
        self.dim = _check_dim(dim, "LogSoftmax")

    def forward(self, x):
        check_array(x, "x", "LogSoftmax")
        _check_axis_in_range(x, self.dim, "LogSoftmax")
        y = log_softmax(x, axis=self.dim)
        self.cache = y
        return y

    def backward(self, grad_output):
        return log_softmax_backward(grad_output, self.cache, axis=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class SiLU(Module):
    """Sigmoid linear unit (swish) ``y = x sigmoid(x)``, as ``torch.nn.SiLU``.

    Backward (product rule, ``s = sigmoid(x)``, ``s' = s (1 - s)``):
    ``dy/dx = s + x s (1 - s) = s (1 + x (1 - s))``.  cache: ``(x, s)``.
    The sigmoid is :func:`sigmoid` (overflow-free).
    """

    def forward(self, x):
        check_array(x, "x", "SiLU")
        s = sigmoid(x)
        self.cache = (x, s)
        return x * s

    def backward(self, grad_output):
        x, s = self.cache
        return grad_output * s * (1.0 + x * (1.0 - s))
