"""Step 1 of attention, the **score**: how well does query i match key j?

Every score module maps

    query ``(..., Tq, Dq)``, key ``(..., Tk, Dk)``  ->  scores ``(..., Tq, Tk)``

where ``...`` are leading axes shared by query and key (batch ``B``, heads ``h``, ...).
``backward(dscores)`` returns ``(dquery, dkey)`` and adds parameter gradients to
``.grad``.  ``Tq = 1`` (one decoder state per step, as in seq2seq) works like any other size.

=======================  ===========================================  ===================
class                    score ``s_ij``                               parameters
=======================  ===========================================  ===================
:class:`DotScore`        ``q_i . k_j``                                none
:class:`ScaledDotScore`  ``q_i . k_j / sqrt(d)``                      none
:class:`GeneralScore`    ``q_i^T W k_j`` (bilinear, Luong "general")  ``W (Dq, Dk)``
:class:`ConcatScore`     ``w^T [q_i; k_j] + b`` (a linear layer on    ``weight (1, Dq+Dk)``, ``bias (1,)``
                         the concatenated pair)
:class:`AdditiveScore`   ``v^T tanh(W_q q_i + W_k k_j)`` (Bahdanau;   ``W_q (H, Dq)``, ``W_k (H, Dk)``, ``v (H,)``
                         Luong's "concat")
:class:`CosineScore`     ``scale * cos(q_i, k_j)``                    none
=======================  ===========================================  ===================

Checked and unchecked calls: ``forward`` checks its arguments (errors name them), then runs
``step(query, key) -> (scores, cache)``, the computation itself, which *returns* its cache
instead of keeping it in ``self.cache``; ``backward(dscores)`` is
``step_backward(dscores, self.cache)``.  A caller that checks its inputs once and then calls
the same score many times with the same shapes -- a seq2seq decoder, once per target step
(npattention/seq2seq.py) -- calls ``step`` / ``step_backward`` directly: no checks per call
(they cost about as much as the maths at one query row), and each call's cache stays with the caller.
The same pair exists on :class:`~npattention.attention.align.SoftmaxAlign` and
:class:`~npattention.attention.context.Context`.  :class:`DotScore` and :class:`GeneralScore` also
split ``step_backward`` into ``query_backward(dscores, cache)`` and ``key_backward(calls)``, the key
gradient summed over many calls on the same keys in one product (a decoder's steps all score the
same encoder outputs; per call it would be an outer product ``(B, Tk, D)`` each, added up).

"concat" names one formula here: :class:`ConcatScore`.  Luong et al. (2015) call the
additive score "concat" (``v^T tanh(W [q; k])`` splits into ``W_q q + W_k k``); in this
library that formula is :class:`AdditiveScore` (``LuongDecoder(score="additive")``).
The maths of every backward is derived in ``docs/attention.md``.
"""
from ..backend import get_rng, xp
from ..module import Module, Parameter
from ..validate import check_array, check_positive_int


def _check_query_key(query, key, where, query_dim=None, key_dim=None, same_dim=False):
    """Check the (query, key) pair of a score module: float arrays with at least 2 axes,
    the same leading axes, and the expected feature sizes."""
    check_array(query, "query", where, shape=(..., None, query_dim))
    check_array(key, "key", where, shape=(..., None, key_dim))
    if query.ndim != key.ndim or query.shape[:-2] != key.shape[:-2]:
        raise ValueError(
            f"{where}: 'query' {tuple(query.shape)} and 'key' {tuple(key.shape)} must share their "
            f"leading (batch/head) axes: expected key of shape {tuple(query.shape[:-2]) + ('Tk', 'Dk')}"
        )
    if same_dim and query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"{where}: 'key' must have the query's feature size {query.shape[-1]} (last axis), "
            f"got key of shape {tuple(key.shape)}"
        )


def _batch_transpose(a):
    """Swap the last two axes (a batched transpose)."""
    return xp.swapaxes(a, -1, -2)


def transposed_matmul(a, b):
    """``a^T b`` over the last two axes: ``(..., n, p), (..., n, q) -> (..., p, q)``.

    With ``n = 1`` (one query row: a decoder step) the product is an outer product, which
    broadcasting computes several times faster than a batched matmul of inner size 1.
    """
    if a.shape[-2] == 1 and b.shape[-2] == 1:
        return _batch_transpose(a) * b
    return _batch_transpose(a) @ b


def _matmul_rows(a, w):
    """``a @ w`` for ``a (..., n)`` and a matrix ``w (n, m)``, as ONE matrix product over the
    flattened rows (NumPy runs ``(B, 1, n) @ (n, m)`` as B small products, much slower)."""
    return (a.reshape(-1, a.shape[-1]) @ w).reshape(a.shape[:-1] + (w.shape[-1],))


def _stack_rows(arrays):
    """Several ``(..., n_i, D)`` arrays as one ``(..., sum n_i, D)`` (the rows of several calls)."""
    return xp.concatenate(arrays, axis=-2)


def _flatten_rows(a):
    """Flatten all axes but the last: ``(..., D) -> (N, D)`` (for parameter gradients)."""
    return a.reshape(-1, a.shape[-1])


class DotScore(Module):
    """Dot-product score ``s_ij = q_i . k_j``, i.e. ``S = Q K^T``.

    query ``(..., Tq, D)``, key ``(..., Tk, D)`` -> ``(..., Tq, Tk)``.  No parameters.
    cache: ``(query, key)``.
    """

    def forward(self, query, key):
        _check_query_key(query, key, type(self).__name__, same_dim=True)
        scores, self.cache = self.step(query, key)
        return scores

    def step(self, query, key):
        """``(scores, cache)`` without the checks (module docstring: "Checked and unchecked calls")."""
        return query @ _batch_transpose(key), (query, key)

    def backward(self, grad_output):
        return self.step_backward(grad_output, self.cache)

    def step_backward(self, grad_output, cache):
        query, key = cache
        # S = Q K^T  =>  dQ = dS K,  dK = dS^T Q
        return self.query_backward(grad_output, cache), transposed_matmul(grad_output, query)

    def query_backward(self, grad_output, cache):
        """``dQ = dS K`` alone, for a caller that sums ``dK`` over many calls (:meth:`key_backward`)."""
        return grad_output @ cache[1]

    def key_backward(self, calls):
        """``dK = sum dS^T Q`` over several calls on the SAME keys, ``calls = [(dS, cache), ...]``: ONE
        product with the calls' query rows stacked (a decoder: all its steps) instead of one per call."""
        return transposed_matmul(_stack_rows([d for d, _ in calls]), _stack_rows([c[0] for _, c in calls]))


class ScaledDotScore(Module):
    """Scaled dot product ``s_ij = q_i . k_j / sqrt(d)`` (Vaswani et al. 2017).

    Dividing by ``sqrt(d)`` keeps the variance of the scores near 1 when q and k have
    unit-variance entries, so the softmax does not saturate.  ``scale`` overrides
    ``1/sqrt(d)`` (``d`` = the feature size, read from the query at forward time).
    cache: ``(query, key, scale)``.
    """

    def __init__(self, scale=None):
        if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"ScaledDotScore: 'scale' must be a positive number or None, got {scale!r}")
        self.scale = scale

    def forward(self, query, key):
        _check_query_key(query, key, type(self).__name__, same_dim=True)
        scores, self.cache = self.step(query, key)
        return scores

    def step(self, query, key):
        """``(scores, cache)`` without the checks."""
        scale = self.scale if self.scale is not None else 1.0 / query.shape[-1] ** 0.5
        return (query @ _batch_transpose(key)) * scale, (query, key, scale)

    def backward(self, grad_output):
        return self.step_backward(grad_output, self.cache)

    def step_backward(self, grad_output, cache):
        query, key, scale = cache
        g = grad_output * scale  # the constant factor passes straight through
        return g @ key, transposed_matmul(g, query)

    def extra_repr(self):
        return "scale=1/sqrt(d)" if self.scale is None else f"scale={self.scale}"


class GeneralScore(Module):
    """Bilinear ("general", Luong et al. 2015) score ``s_ij = q_i^T W k_j``.

    ``W``: ``(query_dim, key_dim)``, so query and key may have different sizes.
    Initialised from ``U(-1/sqrt(query_dim), 1/sqrt(query_dim))`` like ``nn.Bilinear``.
    cache: ``(query, key, qw)`` with ``qw = query W``.
    """

    def __init__(self, query_dim, key_dim):
        self.query_dim = check_positive_int(query_dim, "query_dim", "GeneralScore")
        self.key_dim = check_positive_int(key_dim, "key_dim", "GeneralScore")
        bound = 1.0 / query_dim ** 0.5
        self.weight = Parameter(get_rng().uniform((query_dim, key_dim), -bound, bound))

    def forward(self, query, key):
        _check_query_key(query, key, "GeneralScore", self.query_dim, self.key_dim)
        scores, self.cache = self.step(query, key)
        return scores

    def step(self, query, key):
        """``(scores, cache)`` without the checks."""
        qw = _matmul_rows(query, self.weight.data)  # (..., Tq, Dk): the query mapped into key space
        return qw @ _batch_transpose(key), (query, key, qw)

    def backward(self, grad_output):
        return self.step_backward(grad_output, self.cache)

    def step_backward(self, grad_output, cache):
        query, key, qw = cache
        dquery = self.query_backward(grad_output, cache)
        return dquery, transposed_matmul(grad_output, qw)  # S = (QW) K^T: dK = dS^T (QW)

    def query_backward(self, grad_output, cache):
        """``dQ`` (and ``dW``) alone, for a caller that sums ``dK`` over many calls (:meth:`key_backward`)."""
        query, key, qw = cache
        d_qw = grad_output @ key  # S = (QW) K^T
        self.weight.grad += _flatten_rows(query).T @ _flatten_rows(d_qw)  # QW: dW = sum over rows q^T d(qw)
        return _matmul_rows(d_qw, self.weight.data.T)

    def key_backward(self, calls):
        """``dK = sum dS^T (QW)`` over several calls on the SAME keys, ``calls = [(dS, cache), ...]``:
        ONE product with the calls' rows stacked instead of one per call (see :meth:`DotScore.key_backward`)."""
        return transposed_matmul(_stack_rows([d for d, _ in calls]), _stack_rows([c[2] for _, c in calls]))

    def extra_repr(self):
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}"


class ConcatScore(Module):
    """Concat score: ``s_ij = w^T [q_i; k_j] + b``, one linear layer on the concatenated pair.

    One linear layer ``(Dq + Dk) -> 1`` applied to every concatenated pair.  Because
    the layer is linear it splits as ``w = [w_q; w_k]``::

        s_ij = w_q . q_i + w_k . k_j + b

    so we never build the ``(..., Tq, Tk, Dq + Dk)`` tensor of pairs: two matrix-vector
    products and a broadcast sum, ``(..., Tq, 1) + (..., 1, Tk)``.

    Teaching point: the query term ``w_q . q_i`` is the same for every key j, and the
    softmax over keys is shift-invariant, so **after softmax the weights do not depend
    on the query at all** (only on the keys).  This is why the additive score puts a
    ``tanh`` between the linear layer and the sum (:class:`AdditiveScore`), and why
    :class:`~npattention.attention.attention.LocationAttention` instead maps ``[q; k]``
    to one score *per source position*.

    ``weight``: ``(1, query_dim + key_dim)`` and ``bias``: ``(1,)``, laid out and
    initialised exactly like ``Linear(query_dim + key_dim, 1)``.
    cache: ``(query, key)``.
    """

    def __init__(self, query_dim, key_dim):
        self.query_dim = check_positive_int(query_dim, "query_dim", "ConcatScore")
        self.key_dim = check_positive_int(key_dim, "key_dim", "ConcatScore")
        bound = 1.0 / (query_dim + key_dim) ** 0.5
        rng = get_rng()
        self.weight = Parameter(rng.uniform((1, query_dim + key_dim), -bound, bound))
        self.bias = Parameter(rng.uniform((1,), -bound, bound))

    def forward(self, query, key):
        _check_query_key(query, key, "ConcatScore", self.query_dim, self.key_dim)
        scores, self.cache = self.step(query, key)
        return scores

    def step(self, query, key):
        """``(scores, cache)`` without the checks."""
        w_q, w_k = self.weight.data[0, :self.query_dim], self.weight.data[0, self.query_dim:]
        # w^T [q_i; k_j] + b = (w_q . q_i) + (w_k . k_j) + b, broadcast over (i, j)
        return (query @ w_q)[..., :, None] + (key @ w_k)[..., None, :] + self.bias.data, (query, key)

    def backward(self, grad_output):
        return self.step_backward(grad_output, self.cache)

    def step_backward(self, grad_output, cache):
        query, key = cache
        w_q, w_k = self.weight.data[0, :self.query_dim], self.weight.data[0, self.query_dim:]
        dq_term = grad_output.sum(axis=-1)  # (..., Tq): q_i's term was broadcast over all j
        dk_term = grad_output.sum(axis=-2)  # (..., Tk): k_j's term was broadcast over all i
        self.weight.grad[0, :self.query_dim] += dq_term.reshape(-1) @ _flatten_rows(query)
        self.weight.grad[0, self.query_dim:] += dk_term.reshape(-1) @ _flatten_rows(key)
        self.bias.grad += grad_output.sum()
        return dq_term[..., None] * w_q, dk_term[..., None] * w_k

    def extra_repr(self):
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}"


class AdditiveScore(Module):
    """Additive / perceptron score (Bahdanau et al. 2015; Luong et al. call it "concat")::

        s_ij = v^T tanh(W_q q_i + W_k k_j)          (+ b inside the tanh with ``bias=True``)

    A one-hidden-layer network on the pair: unlike :class:`ConcatScore` (the same
    without the ``tanh``) the weights after softmax depend on the query.
    ``W_q``: ``(hidden_dim, query_dim)``, ``W_k``: ``(hidden_dim, key_dim)``, ``v``:
    ``(hidden_dim,)``; no biases by default (as in d2l's ``AdditiveAttention``),
    ``bias=True`` adds ``bias (hidden_dim,)`` (the seq2seq decoders' layout).  Initialised
    like ``Linear`` layers.  The pairs are formed by broadcasting
    ``(..., Tq, 1, H) + (..., 1, Tk, H) -> (..., Tq, Tk, H)``; memory grows as
    ``Tq * Tk * H`` (the price of the non-linearity).

    A decoder scores the *same* keys with a new query at every step, so it projects them
    once per sequence, ``kh = score.project_keys(key)``, and calls
    ``score.step(query, kh, projected=True)`` at each step (unchecked: the decoder checked
    its inputs once); ``step_backward`` then returns ``(dquery, dkh)`` and
    ``score.project_keys_backward(dkh_summed_over_steps, key)`` finishes.

    cache: ``(query, key, feat)``, ``feat = tanh(W_q q_i + W_k k_j) (..., Tq, Tk, H)``
    (``key`` is ``None`` when the keys came projected).
    """

    def __init__(self, query_dim, key_dim, hidden_dim, bias=False):
        self.query_dim = check_positive_int(query_dim, "query_dim", "AdditiveScore")
        self.key_dim = check_positive_int(key_dim, "key_dim", "AdditiveScore")
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim", "AdditiveScore")
        rng = get_rng()
        bq, bk, bv = 1.0 / query_dim ** 0.5, 1.0 / key_dim ** 0.5, 1.0 / hidden_dim ** 0.5  # as Linear
        self.W_q = Parameter(rng.uniform((hidden_dim, query_dim), -bq, bq))
        self.W_k = Parameter(rng.uniform((hidden_dim, key_dim), -bk, bk))
        self.bias = Parameter(rng.uniform((hidden_dim,), -bk, bk)) if bias else None  # Linear(key_dim, H)'s bias
        self.v = Parameter(rng.uniform((hidden_dim,), -bv, bv))

    def project_keys(self, key):
        """``kh_j = W_k k_j (+ b)``: ``(..., Tk, key_dim) -> (..., Tk, hidden_dim)``."""
        kh = key @ self.W_k.data.T
        return kh + self.bias.data if self.bias is not None else kh

    def project_keys_backward(self, d_kh, key):
        """Backward of :meth:`project_keys`: adds ``dW_k`` (and ``db``), returns ``dkey``."""
        self.W_k.grad += _flatten_rows(d_kh).T @ _flatten_rows(key)
        if self.bias is not None:
            self.bias.grad += _flatten_rows(d_kh).sum(axis=0)
        return d_kh @ self.W_k.data

    def forward(self, query, key, projected=False):
        _check_query_key(query, key, "AdditiveScore", self.query_dim,
                         self.hidden_dim if projected else self.key_dim)
        scores, self.cache = self.step(query, key, projected)
        return scores

    def step(self, query, key, projected=False):
        """``(scores, cache)`` without the checks (module docstring: "Checked and unchecked calls")."""
        qh = _matmul_rows(query, self.W_q.data.T)  # (..., Tq, H)
        kh = key if projected else self.project_keys(key)  # (..., Tk, H)
        feat = qh[..., :, None, :] + kh[..., None, :, :]  # (..., Tq, Tk, H)
        xp.tanh(feat, out=feat)  # in place: one array of the pairs' size instead of two
        return feat @ self.v.data, (query, None if projected else key, feat)  # scores (..., Tq, Tk)

    def backward(self, grad_output):
        return self.step_backward(grad_output, self.cache)

    def step_backward(self, grad_output, cache):
        query, key, feat = cache
        self.v.grad += _flatten_rows(feat).T @ grad_output.reshape(-1)  # s = feat . v
        d_pre = grad_output[..., None] * self.v.data  # d feat (..., Tq, Tk, H)
        tanh_grad = feat * feat
        xp.subtract(1.0, tanh_grad, out=tanh_grad)  # tanh'(x) = 1 - tanh(x)^2, in place (no third array)
        d_pre *= tanh_grad  # through the tanh
        d_qh = d_pre.sum(axis=-2)  # qh_i was broadcast over keys j
        # kh_j was broadcast over queries i (one query, as in a decoder step: nothing to sum)
        d_kh = d_pre[..., 0, :, :] if d_pre.shape[-3] == 1 else d_pre.sum(axis=-3)
        self.W_q.grad += _flatten_rows(d_qh).T @ _flatten_rows(query)
        dquery = _matmul_rows(d_qh, self.W_q.data)
        if key is None:  # the keys came projected: their gradient goes back to the caller
            return dquery, d_kh
        return dquery, self.project_keys_backward(d_kh, key)

    def extra_repr(self):
        bias = ", bias=True" if self.bias is not None else ""
        return f"query_dim={self.query_dim}, key_dim={self.key_dim}, hidden_dim={self.hidden_dim}{bias}"


def _unit(x, eps):
    """``x / max(|x|, eps)`` along the last axis, and the norm used."""
    norm = xp.maximum(xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True)), eps)
    return x / norm, norm


def _unit_backward(d_unit, unit, norm, eps):
    """Backward of ``u = x / max(|x|, eps)``.

    Where ``|x| > eps``: ``dx = (du - u (u . du)) / |x|`` (the radial part of ``du`` is
    removed: scaling x does not change u).  Where the norm was clamped to eps, the
    divisor is a constant and ``dx = du / eps``.
    """
    radial = xp.sum(unit * d_unit, axis=-1, keepdims=True)
    return xp.where(norm > eps, d_unit - unit * radial, d_unit) / norm


class CosineScore(Module):
    """Cosine similarity ``s_ij = scale * q_i . k_j / (max(|q_i|, eps) max(|k_j|, eps))``.

    In ``[-scale, scale]`` and invariant to rescaling q or k.  Cosines are at most 1, so
    a softmax over them is flat; ``scale`` (an inverse temperature, e.g. 5-20) sharpens
    it.  Like ``torch.nn.functional.cosine_similarity``, norms below ``eps`` are clamped.
    cache: ``(qu, qn, ku, kn)``: the unit vectors and the (clamped) norms of queries and keys.
    """

    def __init__(self, eps=1e-8, scale=1.0):
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"CosineScore: 'eps' must be a positive number, got {eps!r}")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ValueError(f"CosineScore: 'scale' must be a positive number, got {scale!r}")
        self.eps, self.scale = float(eps), float(scale)

    def forward(self, query, key):
        _check_query_key(query, key, "CosineScore", same_dim=True)
        scores, self.cache = self.step(query, key)
        return scores

    def step(self, query, key):
        """``(scores, cache)`` without the checks."""
        qu, qn = _unit(query, self.eps)
        ku, kn = _unit(key, self.eps)
        return self.scale * (qu @ _batch_transpose(ku)), (qu, qn, ku, kn)

    def backward(self, grad_output):
        return self.step_backward(grad_output, self.cache)

    def step_backward(self, grad_output, cache):
        qu, qn, ku, kn = cache
        g = grad_output * self.scale
        # S = Qu Ku^T, then back through each normalisation
        dquery = _unit_backward(g @ ku, qu, qn, self.eps)
        dkey = _unit_backward(transposed_matmul(g, qu), ku, kn, self.eps)
        return dquery, dkey

    def extra_repr(self):
        return f"eps={self.eps}, scale={self.scale}"
