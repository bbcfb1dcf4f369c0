"""Softmax and log-softmax over one axis, with their backward passes.

One masked softmax for the whole package: :func:`softmax` takes a boolean ``mask``
(**True = masked out**, the convention of :mod:`npattention.masks`) and, with
``out=scores``, works in place in the scores buffer (no temporaries of the scores' size,
which is what the attention hot path uses).  :func:`softmax_numerator` is the same
softmax stopped before its division, ``softmax(s) = e / rowsum(e)``: attention divides
its (smaller) context by the row sums instead (docs/multihead.md, "Speed").
"""
from .backend import BACKEND, xp
from .validate import check_array, check_mask

__all__ = ["softmax", "softmax_numerator", "softmax_backward", "log_softmax", "log_softmax_backward"]


def _row_max(x, axis):
    """``x.max(axis, keepdims=True)``.  On NumPy, ``fmax.reduce`` gives the same numbers
    (no NaN bookkeeping; a NaN row stays NaN after the exp anyway) about 3x faster."""
    if BACKEND != "numpy":
        return x.max(axis=axis, keepdims=True)
    n = x.shape[axis] if x.ndim else 1
    if axis in (-1, x.ndim - 1) and 1 < n <= 48 and 16 * n * n <= x.size <= 1 << 18:
        # Many short rows in a cache-sized array (the demo's attention: thousands of rows of 11-26
        # keys): NumPy's reduction pays about 40 ns per row whatever its length, while n column-wise
        # fmax calls over all rows at once are vectorised: 3-6x faster here.  Slower with fewer than
        # about 10 n rows (n calls of about 0.4 us each) or once the array leaves the cache.
        row_max = x[..., 0].copy()
        for j in range(1, n):
            xp.fmax(row_max, x[..., j], out=row_max)
        return row_max[..., None]
    return xp.fmax.reduce(x, axis=axis, keepdims=True)


def _cap_posinf_rows(x, rows):
    """``+inf -> `` the largest float in the rows flagged by the row-sized bool ``rows``."""
    big = xp.finfo(x.dtype).max
    if BACKEND == "numpy":   # where= visits only the flagged rows: about 4x cheaper than a full pass
        xp.minimum(x, big, out=x, where=rows)
    else:                    # CuPy's ufuncs take no where=: a full pass (cheap on a GPU)
        xp.minimum(x, xp.where(rows, big, xp.inf).astype(x.dtype), out=x)


def _check(scores, axis, mask, out):
    check_array(scores, "scores", "softmax", dtype=None)
    if scores.dtype.kind not in "fiu":
        raise TypeError(f"softmax: 'scores' must be a float (or int) array, got dtype {scores.dtype}")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -scores.ndim <= axis < max(scores.ndim, 1):
        raise ValueError(f"softmax: 'axis' must be an int in [-{scores.ndim}, {scores.ndim}) for scores of shape "
                         f"{tuple(scores.shape)}, got {axis!r}")
    if scores.shape[axis] == 0 if scores.ndim else False:
        raise ValueError(f"softmax: 'scores' has size 0 along axis {axis} (shape {tuple(scores.shape)}): a softmax "
                         "over no entries is undefined")
    check_mask(mask, "mask", "softmax", tuple(scores.shape))
    if out is not None:
        check_array(out, "out", "softmax", shape=tuple(scores.shape))


def softmax_numerator(scores, axis=-1, mask=None, out=None):
    """``e = exp(scores - row max)``, 0 where ``mask`` is True: the softmax before its
    division, ``softmax(scores) = e / e.sum(axis)`` (an all-masked row: ``e = 0``).

    Same arguments, checks and extremes as :func:`softmax` (a row holding ``+inf``: 1 at
    the ``+inf`` entries, 0 elsewhere).  Every entry of ``e`` is in ``[0, 1]`` and each row's
    largest is 1, so the row sums are in ``[1, n]`` (or 0 for an all-masked row).
    """
    _check(scores, axis, mask, out)
    if out is None:   # a fresh float array (integer scores give float64, as np.exp would)
        out = scores.copy() if scores.dtype.kind == "f" else scores.astype(xp.result_type(scores.dtype, 1.0))
    elif out is not scores:
        xp.copyto(out, scores)
    if mask is not None:
        xp.copyto(out, -xp.inf, where=mask)            # exp(-inf) = 0 below
    row_max = _row_max(out, axis)
    # Extremes without a host sync (no `if` on array values): in a row holding +inf, cap
    # +inf at the largest float and subtract that, so those entries become exp(0) = 1 and
    # the others exp(about -max) = 0; an all -inf (all-masked) row subtracts 0 instead.
    has_posinf = row_max == xp.inf                     # (row-sized; a ufunc: cheaper than xp.isposinf)
    _cap_posinf_rows(out, has_posinf)                  # a no-op in rows without +inf
    xp.copyto(row_max, xp.finfo(out.dtype).max, where=has_posinf)
    xp.copyto(row_max, 0.0, where=row_max == -xp.inf)
    out -= row_max                                     # stable: every exponent <= 0
    xp.exp(out, out=out)
    return out


def softmax(scores, axis=-1, mask=None, out=None):
    """Softmax along ``axis``; entries where ``mask`` is True get weight exactly 0.

    Stable for any finite logits (the row maximum is subtracted first).  Extremes are
    defined by their limits, never NaN: a row whose entries are all masked (or all
    ``-inf``) returns zeros; in a row holding ``+inf`` the ``+inf`` entries share the
    weight equally and the others get 0.  (A NaN score gives a NaN row: find it with
    :func:`npattention.detect_anomaly`.)

    ``mask``: boolean, True = masked out, broadcasting to the scores' shape (an int or
    float mask is refused: a float mask is an additive bias, add it to the scores).
    ``out``: a float array of the scores' shape to write into; ``out=scores`` computes
    in place (the scores are overwritten).
    """
    out = softmax_numerator(scores, axis, mask, out)
    total = out.sum(axis=axis, keepdims=True)
    xp.copyto(total, 1.0, where=total == 0)            # all-masked rows: 0 / 1 = 0 (no boolean indexing: no GPU sync)
    out *= 1.0 / total
    return out


def softmax_backward(grad_weights, weights, axis=-1, out=None):
    """Gradient of the scores from the gradient of ``weights = softmax(scores)``.

    With ``w = softmax(s)``: ``dL/ds_i = w_i (dL/dw_i - sum_j w_j dL/dw_j)``.
    Masked entries have ``w = 0`` and so get zero gradient automatically.
    ``out``: an array of the weights' shape to write into; ``out=grad_weights`` works in
    place in that buffer (no temporaries of the weights' size).
    """
    check_array(weights, "weights", "softmax_backward")
    check_array(grad_weights, "grad_weights", "softmax_backward", shape=tuple(weights.shape))
    if out is not None:
        check_array(out, "out", "softmax_backward", shape=tuple(weights.shape))
    inner = _row_dot(grad_weights, weights, axis)      # sum_j w_j dL/dw_j
    out = xp.subtract(grad_weights, inner, out=out)
    out *= weights
    return out


def _row_dot(a, b, axis):
    """``(a * b).sum(axis, keepdims=True)`` without the product's temporary: einsum contracts
    the axis in one pass (about 2.5x faster than the product + sum at attention sizes); the
    common last axis needs no ``moveaxis`` (which costs more than the sum on small rows)."""
    last = axis in (-1, a.ndim - 1)
    if not last:
        a, b = xp.moveaxis(a, axis, -1), xp.moveaxis(b, axis, -1)
    dot = xp.einsum("...i,...i->...", a, b)[..., None]
    return dot if last else xp.moveaxis(dot, -1, axis)


def log_softmax(scores, axis=-1):
    """``log softmax`` computed as ``s - max - log sum exp(s - max)`` (no overflow)."""
    shifted = scores - _row_max(scores, axis)                  # a fresh array (fmax.reduce: see _row_max)
    log_sum = xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
    if shifted.dtype.kind != "f":                              # integer scores: a float result, as np.exp gives
        return shifted - log_sum
    shifted -= log_sum                                         # in place: one (N, V) array fewer, same numbers
    return shifted


def log_softmax_backward(grad_out, log_probs, axis=-1):
    """``dL/ds = g - softmax(s) * sum(g)``."""
    return grad_out - xp.exp(log_probs) * xp.sum(grad_out, axis=axis, keepdims=True)
