"""Loss functions: a forward that returns a 0-d array and a hand-written backward.

``loss = criterion(input, target)`` returns a 0-d array (``float(loss)`` gives the
number; on CuPy that is the one synchronisation point).  ``criterion.backward()``
(``grad_output`` defaults to 1) returns the gradient with respect to ``input`` only:
targets are never differentiated.  ``docs/layers.md`` derives both backwards.
"""
from .backend import xp
from .softmax import log_softmax
from .module import Module
from .validate import check_array

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, where):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{where}: 'reduction' must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _grad_or_one(grad_output, shape, dtype):
    """``None`` or a Python number -> an array of ``shape`` (the usual call is ``backward()``)."""
    if grad_output is None:
        grad_output = 1.0
    return xp.broadcast_to(xp.asarray(grad_output, dtype=dtype), shape)


def _nonzero(denominator, dtype):
    """The mean's denominator, with 0 replaced by 1 (an all-ignored batch has loss 0, not 0/0)."""
    d = xp.asarray(denominator).astype(dtype)
    return xp.where(d == 0, 1, d).astype(dtype)


class CrossEntropyLoss(Module):
    """Cross-entropy of logits against integer class targets, with label smoothing.

    ``input``: logits ``(N, V)`` or ``(B, T, V)`` (any ``(..., V)``: the class axis is the
    **last** axis, the natural layout of a language model; PyTorch wants it at axis 1);
    ``target``: integers ``(N,)`` or ``(B, T)`` (the logits' shape without ``V``), each in
    ``[0, V)`` or equal to ``ignore_index``.

    With ``p = softmax(input)`` along ``V`` and smoothing ``eps``, each row's target
    distribution is ``q = (1 - eps) onehot(y) + eps / V`` and its loss
    ``l = -sum_c q_c log p_c = (1 - eps)(-log p_y) + eps * mean_c(-log p_c)``.

    Rows whose target is ``ignore_index`` have loss 0 and gradient 0.
    ``reduction="mean"`` divides by the number of **non-ignored** rows (as PyTorch);
    if every row is ignored the loss is 0 (PyTorch gives NaN).  ``"sum"``: the sum;
    ``"none"``: the per-row losses, shape of ``target``.

    Backward: ``dL/dinput = g * (p - q)`` on non-ignored rows (``g`` = ``grad_output``,
    divided by the count for ``"mean"``).

    Class weights ``weight`` ``(V,)`` (a buffer), exactly as PyTorch: each row's loss is
    ``l = (1 - eps) w_y (-log p_y) + (eps / V) sum_c w_c (-log p_c)``, and ``"mean"``
    divides the sum by ``sum_n w_{y_n}`` over the non-ignored rows (a weighted mean), not
    by their count.  Its gradient is ``p ((1 - eps) w_y + eps sum(w) / V) - ((1 - eps) w_y
    onehot(y) + eps w / V)``, which is ``p - q`` when every ``w_c = 1``.
    cache: ``(logp, y_safe, valid, denominator, input shape)``.
    """

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        if weight is not None:
            check_array(weight, "weight", "CrossEntropyLoss", shape=(None,))
            self.register_buffer("weight", weight.copy())
        else:
            self.weight = None
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"CrossEntropyLoss: 'ignore_index' must be an int, got {ignore_index!r}")
        if not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool) \
                or not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: 'label_smoothing' must be a float in [0, 1], got {label_smoothing!r}")
        self.ignore_index = ignore_index
        self.reduction = _check_reduction(reduction, "CrossEntropyLoss")
        self.label_smoothing = float(label_smoothing)

    def forward(self, input, target):
        where = "CrossEntropyLoss"
        check_array(input, "input", where)
        if input.ndim < 2:
            raise ValueError(f"{where}: 'input' must be logits of shape (N, V) or (B, T, V), got {tuple(input.shape)}")
        check_array(target, "target", where, dtype="int")
        if tuple(target.shape) != tuple(input.shape[:-1]):
            raise ValueError(f"{where}: 'target' must have the logits' shape without the class axis "
                             f"{tuple(input.shape[:-1])}, got {tuple(target.shape)}")
        V = input.shape[-1]
        w = self.weight
        if w is not None and w.shape[0] != V:
            raise ValueError(f"{where}: 'weight' has {w.shape[0]} entries but the logits have V={V} classes")
        logits = input.reshape(-1, V)  # (N, V)
        y = target.reshape(-1)  # (N,)
        valid = y != self.ignore_index  # (N,) rows that count
        bad = valid & ((y < 0) | (y >= V))
        if bool(bad.any()):
            raise ValueError(f"{where}: 'target' values must lie in [0, {V}) or equal ignore_index="
                             f"{self.ignore_index}, got e.g. {int(y[bad][0])}")
        y_safe = xp.where(valid, y, 0)  # any in-range class for ignored rows (masked below)
        logp = log_softmax(logits, axis=-1)  # (N, V), stable for large logits
        nll = -xp.take_along_axis(logp, y_safe[:, None], axis=-1)[:, 0]  # -log p_y
        eps = self.label_smoothing
        if w is None:
            # mean_c(-log p_c) as a gemv with ones: one BLAS call, ~5x faster than logp.mean(axis=-1)
            per_row = (1.0 - eps) * nll + eps * (-(logp @ xp.ones(V, dtype=logp.dtype)) / V) if eps else nll
            denom = valid.sum()                          # mean: over the non-ignored rows
        else:
            w = w.astype(logp.dtype)
            w_y = w[y_safe]                              # (N,) the weight of each row's class
            per_row = (1.0 - eps) * w_y * nll
            if eps:
                per_row = per_row + (eps / V) * (-(logp @ w))   # (eps / V) sum_c w_c (-log p_c)
            denom = (w_y * valid).sum()                  # mean: a weighted mean, as PyTorch
        per_row = per_row * valid  # ignored rows contribute exactly 0
        self.cache = (logp, y_safe, valid, denom, tuple(input.shape))
        if self.reduction == "none":
            return per_row.reshape(target.shape)
        total = per_row.sum()
        if self.reduction == "sum":
            return total
        return total / _nonzero(denom, total.dtype)  # all ignored -> 0, not 0/0

    def backward(self, grad_output=None):
        logp, y_safe, valid, count, input_shape = self.cache   # count: the mean's denominator
        V = logp.shape[-1]
        if self.reduction == "none":  # one upstream value per row
            g = _grad_or_one(grad_output, input_shape[:-1], logp.dtype).reshape(-1)
        else:  # one upstream value for the whole loss
            g = _grad_or_one(grad_output, (), logp.dtype)
        if self.reduction == "mean":
            g = g / _nonzero(count, logp.dtype)
        # dl/dlogits = softmax - q for each row, q = (1 - eps) onehot(y) + eps / V.  Formed in place in
        # one (N, V) buffer: no one-hot or q array of the logits' size (3 passes over it instead of 7)
        eps = self.label_smoothing
        rows = xp.arange(logp.shape[0])
        row_scale = (g * valid)[:, None]  # (N, 1); ignored rows get 0
        grad = xp.exp(logp)  # p = softmax(input)
        if self.weight is None:
            if eps:
                grad -= eps / V  # p - eps / V everywhere ...
            grad[rows, y_safe] -= 1.0 - eps  # ... and - (1 - eps) at the target class
            grad *= row_scale
            return grad.reshape(input_shape)
        # weighted: l = (1-eps) w_y (-log p_y) + (eps/V) sum_c w_c (-log p_c), and d(-log p_c)/dz = p - e_c:
        # dl/dz = p ((1 - eps) w_y + eps sum(w) / V) - ((1 - eps) w_y onehot(y) + eps w / V)
        w = self.weight.astype(logp.dtype)
        w_y = w[y_safe]  # (N,)
        grad *= ((1.0 - eps) * w_y + (eps / V) * w.sum())[:, None]  # the coefficient of p
        if eps:
            grad -= (eps / V) * w
        grad[rows, y_safe] -= (1.0 - eps) * w_y
        grad *= row_scale
        return grad.reshape(input_shape)

    def extra_repr(self):
        return (("weight=(V,), " if self.weight is not None else "")
                + f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
                f"label_smoothing={self.label_smoothing}")


class MSELoss(Module):
    """Mean squared error ``L = mean((input - target)^2)`` (``"sum"``: the sum; ``"none"``:
    the elementwise squares).

    ``input`` and ``target``: floating arrays of the **same** shape (no broadcasting).
    Backward returns only ``dL/dinput = 2 (input - target) / n * g`` (``n`` = number of
    entries for ``"mean"``, 1 otherwise): the target is treated as data, not as a
    differentiable input (for ``dL/dtarget`` negate the result).
    cache: ``diff = input - target``.
    """

    def __init__(self, reduction="mean"):
        self.reduction = _check_reduction(reduction, "MSELoss")

    def forward(self, input, target):
        check_array(input, "input", "MSELoss")
        check_array(target, "target", "MSELoss")
        if tuple(input.shape) != tuple(target.shape):
            raise ValueError(f"MSELoss: 'target' must have the input's shape {tuple(input.shape)}, "
                             f"got {tuple(target.shape)}")
        diff = input - target
        self.cache = diff
        sq = diff * diff
        if self.reduction == "none":
            return sq
        # an empty batch contributes nothing: its mean is 0, not 0/0 (docs/contract.md)
        return sq.sum() if self.reduction == "sum" else sq.sum() / max(diff.size, 1)

    def backward(self, grad_output=None):
        diff = self.cache
        shape = diff.shape if self.reduction == "none" else ()
        g = _grad_or_one(grad_output, shape, diff.dtype)
        scale = 2.0 / max(diff.size, 1) if self.reduction == "mean" else 2.0
        return scale * diff * g

    def extra_repr(self):
        return f"reduction={self.reduction!r}"
