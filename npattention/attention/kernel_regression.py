"""Attention as kernel regression: Nadaraya-Watson pooling, the opening example of attention.

Given training pairs ``(k_j, v_j)`` (keys: inputs, values: outputs) and a query ``q``, predict
``f(q)`` as a weighted average of the values, weighted by how close each key is to the query::

    1. score:   s_ij = -((q_i - k_j) w)^2 / 2         Gaussian kernel, bandwidth h = 1 / |w|
    2. align:   a_ij = softmax_j(s_ij, mask)          (Nadaraya 1964, Watson 1964)
    3. context: c_i  = sum_j a_ij v_j

With a fixed ``w`` this is non-parametric; :class:`NadarayaWatson` also learns ``w`` by gradient
descent.  Shapes: ``query (..., L)``, ``key (..., S)``, ``value (..., S)`` or ``(..., S, Dv)``;
output ``(..., L)`` or ``(..., L, Dv)``.

Backward (docs/kernel_regression.md), with ``u_ij = q_i - k_j``::

    dA = dC V^T          dV = A^T dC                       (context)
    dS = A * (dA - rowsum(A * dA))                         (softmax)
    dq_i = -w^2 sum_j dS_ij u_ij    dk_j = w^2 sum_i dS_ij u_ij    dw = -w sum_ij dS_ij u_ij^2
"""
from ..backend import DEFAULT_DTYPE, xp
from ..module import Module, Parameter
from ..softmax import softmax
from ..validate import check_array

__all__ = ["NadarayaWatson"]


class NadarayaWatson(Module):
    """Nadaraya-Watson attention pooling with a Gaussian kernel of learnable width.

    ``NadarayaWatson(bandwidth=1.0, learnable=True)``; ``forward(query, key, value, mask=None)``
    (``mask (..., L, S)`` boolean, True = key not used, e.g. the diagonal for leave-one-out)
    returns the predictions; ``last_weights`` keeps ``A (..., L, S)``.  The parameter is
    ``w = 1 / bandwidth`` (shape ``(1,)``); ``learnable=False`` keeps it fixed (no parameters).
    ``backward(dout)`` returns ``(dquery, dkey, dvalue)``.  cache: ``(u, A, value)``.
    """

    def __init__(self, bandwidth=1.0, learnable=True):
        if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not bandwidth > 0:
            raise ValueError(f"NadarayaWatson: 'bandwidth' must be a positive number, got {bandwidth!r}")
        w = xp.asarray([1.0 / float(bandwidth)], dtype=DEFAULT_DTYPE)
        self.learnable = bool(learnable)
        if self.learnable:
            self.w = Parameter(w)
        else:
            self._w = w
        self.last_weights = None

    @property
    def bandwidth(self):
        return 1.0 / abs(float(self._weight()[0]))

    def _weight(self):
        return self.w.data if self.learnable else self._w

    def forward(self, query, key, value, mask=None):
        where = "NadarayaWatson"
        check_array(query, "query", where, shape=(..., "L"))
        check_array(key, "key", where, shape=(..., "S"))
        check_array(value, "value", where)
        S = key.shape[-1]
        vector = value.ndim > key.ndim                            # (..., S, Dv) rather than (..., S)
        if value.shape[-2 if vector else -1] != S:
            raise ValueError(f"{where}: 'value' must be (..., S) or (..., S, Dv) with S = {S} keys, "
                             f"got {tuple(value.shape)}")
        w = self._weight()
        u = query[..., :, None] - key[..., None, :]               # (..., L, S): q_i - k_j
        scores = -0.5 * (u * w) ** 2                              # 1. score: Gaussian kernel
        weights = softmax(scores, mask=mask)                      # 2. align
        self.last_weights = weights
        self.cache = (u, weights, value, vector)
        if vector:
            return weights @ value                                # 3. context (..., L, Dv)
        return (weights * value[..., None, :]).sum(axis=-1)       # 3. context (..., L)

    def backward(self, grad_output):
        u, weights, value, vector = self.cache
        w = self._weight()
        if vector:
            dvalue = xp.swapaxes(weights, -1, -2) @ grad_output              # c = A v
            dweights = grad_output @ xp.swapaxes(value, -1, -2)
        else:
            dvalue = (weights * grad_output[..., :, None]).sum(axis=-2)      # c_i = sum_j a_ij v_j
            dweights = grad_output[..., :, None] * value[..., None, :]
        dscores = weights * (dweights - (weights * dweights).sum(axis=-1, keepdims=True))   # softmax
        # s = -(u w)^2 / 2:  ds/du = -u w^2,  ds/dw = -u^2 w;  u = q_i - k_j
        du = -dscores * u * (w * w)
        if self.learnable:
            self.w.grad += xp.reshape(-(dscores * u * u).sum() * w, (1,))
        dquery = du.sum(axis=-1)
        dkey = -du.sum(axis=-2)
        return dquery, dkey, dvalue

    def extra_repr(self):
        return f"bandwidth={self.bandwidth:.4g}, learnable={self.learnable}"
