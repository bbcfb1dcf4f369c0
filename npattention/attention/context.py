"""Step 3 of attention, the **context**: the weighted sum of the values.

    context_i = sum_j w_ij v_j,    i.e.  C = W V  (a batched matmul, ``bmm`` in note 004)

weights ``(..., Tq, Tk)`` and values ``(..., Tk, Dv)`` -> context ``(..., Tq, Dv)``.

*Normal mode* (note 001): the values are the keys, ``K = V = X``.  *Key-value mode*:
``K != V`` (keys say *where* to look, values say *what* is found there).
:class:`npattention.attention.attention.Attention` shows both.
"""
from ..backend import xp
from ..module import Module
from ..validate import check_array
from .scores import _stack_rows, transposed_matmul


class Context(Module):
    """``C = W V``.  forward(weights ``(..., Tq, Tk)``, values ``(..., Tk, Dv)``) -> context
    ``(..., Tq, Dv)``; backward(dC) -> ``(dW, dV)``.  ``step(weights, values) -> (context, cache)``
    and ``step_backward(dC, cache)``: the same without the argument checks, the cache returned
    instead of kept (for a caller that checked its inputs once, e.g. a seq2seq decoder step; see
    :mod:`npattention.attention.scores`, "Checked and unchecked calls").  ``weights_backward`` and
    ``values_backward`` are its two halves, the second summed over many calls at once.

    cache: ``(weights, values)``.
    """

    def forward(self, weights, values):
        check_array(weights, "weights", "Context", shape=(..., None, None))
        check_array(values, "values", "Context", shape=(..., None, None))
        if values.ndim != weights.ndim or values.shape[:-2] != weights.shape[:-2] \
                or values.shape[-2] != weights.shape[-1]:
            raise ValueError(
                f"Context: 'values' must have shape {tuple(weights.shape[:-2]) + (weights.shape[-1], 'Dv')} "
                f"(one value per key of 'weights' {tuple(weights.shape)}), got {tuple(values.shape)}"
            )
        context, self.cache = self.step(weights, values)
        return context

    def step(self, weights, values):
        return weights @ values, (weights, values)

    def backward(self, grad_output):
        return self.step_backward(grad_output, self.cache)

    def step_backward(self, grad_output, cache):
        weights, values = cache
        # C = W V  =>  dW = dC V^T (how much each weight moved each output),  dV = W^T dC
        return self.weights_backward(grad_output, cache), transposed_matmul(weights, grad_output)

    def weights_backward(self, grad_output, cache):
        """``dW = dC V^T`` alone, for a caller that sums ``dV`` over many calls (:meth:`values_backward`)."""
        return grad_output @ xp.swapaxes(cache[1], -1, -2)

    def values_backward(self, calls):
        """``dV`` summed over several calls on the SAME values, ``calls = [(dC, cache), ...]``.

        A decoder attends over the same encoder outputs at every step, so their gradient is
        ``sum_t W_t^T dC_t``: with the calls' query rows stacked, ONE product ``W^T dC``,
        ``(..., Tk, N*Tq) @ (..., N*Tq, Dv)``, instead of N outer products (one per step).
        """
        weights = _stack_rows([cache[0] for _, cache in calls])  # (..., N*Tq, Tk)
        d_context = _stack_rows([d for d, _ in calls])  # (..., N*Tq, Dv)
        return transposed_matmul(weights, d_context)
