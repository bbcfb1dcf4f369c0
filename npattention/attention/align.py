"""Step 2 of attention, the **align**: turn scores ``(..., Tq, Tk)`` into weights.

* :class:`SoftmaxAlign` -- *soft* attention: ``w = softmax(s / T)`` over the keys,
  differentiable; the weights of a row sum to 1 over the keys that are not masked.
* :class:`HardAlign` -- *hard* attention: one key per query, chosen by ``argmax`` or
  sampled from the softmax; the weights are one-hot.  A one-hot choice is piecewise
  constant in the scores, so its true gradient is 0 almost everywhere: training needs
  another route, and this file gives the two classical ones:

  - **REINFORCE** (score-function estimator, Williams 1992), :class:`Reinforce`:
    sample ``a ~ p = softmax(s)``, observe a reward ``R``, and use
    ``grad_s log p(a) = onehot(a) - p``; with a moving-average baseline ``b`` the
    gradient of the loss ``-E[R]`` is estimated by ``-(R - b) (onehot(a) - p)``.
    Unbiased, but noisy.
  - **straight-through** (Bengio et al. 2013), ``HardAlign(..., straight_through=True)``:
    the forward pass uses the one-hot weights, the backward pass pretends the
    forward was the softmax and returns ``softmax_backward(dw, p)``.  Biased, but low
    variance and it plugs into ordinary backprop.

Mask convention (:mod:`npattention.masks`): boolean, **True = masked out**.  Masked
keys get weight exactly 0 and are never chosen; a row whose keys are all masked gets
all-zero weights and zero gradient (never NaN).
"""
from ..backend import get_rng, xp
from ..softmax import softmax, softmax_backward
from ..module import Module
from ..validate import check_array, check_mask


def check_scores_mask(scores, mask, where):
    """Float ``scores (..., Tq, Tk)`` and a boolean ``mask`` that broadcasts to them."""
    check_array(scores, "scores", where, shape=(..., None, None))
    check_mask(mask, "mask", where, scores.shape)


def _check_temperature(temperature, where):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"{where}: 'temperature' must be a positive number, got {temperature!r}")
    return float(temperature)


class SoftmaxAlign(Module):
    """Soft alignment ``w_ij = exp(s_ij / T) / sum_{j' unmasked} exp(s_ij' / T)``.

    forward(scores ``(..., Tq, Tk)``, mask=None) -> weights ``(..., Tq, Tk)``;
    backward(dweights) -> dscores.  ``temperature`` T < 1 sharpens, T > 1 flattens.
    Stable for large logits (e.g. +-1e4): the row maximum is subtracted first.

    ``step(scores, mask=None) -> (weights, cache)`` and ``step_backward(dweights, cache)``: the
    same without the argument checks, the cache returned instead of kept (for a caller that
    checked its inputs once, e.g. a seq2seq decoder step; see :mod:`npattention.attention.scores`,
    "Checked and unchecked calls").

    cache: ``weights`` (the softmax's gradient needs only its output).
    """

    def __init__(self, temperature=1.0):
        self.temperature = _check_temperature(temperature, "SoftmaxAlign")

    def forward(self, scores, mask=None):
        check_scores_mask(scores, mask, "SoftmaxAlign")
        weights, self.cache = self.step(scores, mask)
        return weights

    def step(self, scores, mask=None):
        scaled = scores if self.temperature == 1.0 else scores / self.temperature
        weights = softmax(scaled, axis=-1, mask=mask)
        return weights, weights

    def backward(self, grad_output):
        return self.step_backward(grad_output, self.cache)

    def step_backward(self, grad_output, cache):
        weights = cache
        # ds = w * (dw - sum_j w_j dw_j) / T; masked entries have w = 0 -> 0 gradient
        d_scaled = softmax_backward(grad_output, weights)
        return d_scaled if self.temperature == 1.0 else d_scaled / self.temperature

    def extra_repr(self):
        return f"temperature={self.temperature}"


class HardAlign(Module):
    """Hard alignment: each query attends to exactly one key.

    forward(scores ``(..., Tq, Tk)``, mask=None) -> ``(weights, indices, log_prob)``:

    * ``weights`` ``(..., Tq, Tk)``: one-hot rows (all-zero where every key is masked);
    * ``indices`` ``(..., Tq)`` int64: the chosen key (0 for an all-masked row);
    * ``log_prob`` ``(..., Tq)``: ``log p(chosen key)`` under ``p = softmax(s / T)``
      (0 for an all-masked row), what REINFORCE differentiates.

    ``mode="argmax"`` picks the best key (deterministic, for evaluation);
    ``mode="sample"`` draws it from ``p`` with the Gumbel-max trick
    (``argmax_j (log p_j + g_j)``, ``g = -log(-log U)``), using ``get_rng()``.
    The probabilities of the last forward are kept in ``self.probs``.

    backward: the one-hot output has no useful gradient.  With
    ``straight_through=False`` (default) backward raises and points to the two
    routes; with ``straight_through=True`` it returns the softmax's gradient
    ``softmax_backward(dw, p) / T`` (the straight-through estimator).
    cache: ``probs``, the softmax the choice was made from (for the straight-through backward).
    """

    gradcheck_exempt = ("not differentiable (one-hot output); see Reinforce and straight_through=True, whose "
                        "backward is SoftmaxAlign's, which is gradchecked")

    def __init__(self, mode="argmax", temperature=1.0, straight_through=False):
        if mode not in ("argmax", "sample"):
            raise ValueError(f"HardAlign: 'mode' must be 'argmax' or 'sample', got {mode!r}")
        self.mode = mode
        self.temperature = _check_temperature(temperature, "HardAlign")
        self.straight_through = bool(straight_through)
        self.probs = None

    def forward(self, scores, mask=None):
        check_scores_mask(scores, mask, "HardAlign")
        probs = softmax(scores / self.temperature, axis=-1, mask=mask)
        allowed = probs > 0  # masked keys (and keys with underflowed probability) are never chosen
        valid = xp.any(allowed, axis=-1)  # rows with at least one key
        log_p = xp.log(xp.where(allowed, probs, 1.0))
        if self.mode == "argmax":
            pick = xp.where(allowed, scores, -xp.inf)
        else:
            u = get_rng().uniform(probs.shape, 1e-12, 1.0, dtype=xp.float64)  # float64: u < 1 stays < 1
            pick = xp.where(allowed, log_p - xp.log(-xp.log(u)), -xp.inf)  # Gumbel-max
        indices = xp.argmax(pick, axis=-1)
        onehot = (xp.arange(scores.shape[-1]) == indices[..., None]) & valid[..., None]
        weights = onehot.astype(scores.dtype)
        log_prob = xp.where(valid, xp.sum(log_p * weights, axis=-1), 0.0)
        self.probs = probs
        self.cache = probs
        return weights, indices, log_prob

    def backward(self, grad_output):
        if not self.straight_through:
            raise RuntimeError(
                "HardAlign.backward: a one-hot choice is not differentiable (its gradient is 0 almost "
                "everywhere). Train it with REINFORCE (npattention.attention.align.Reinforce) or build "
                "HardAlign(straight_through=True) to back-propagate through the softmax."
            )
        # straight-through: forward was one-hot, backward pretends it was softmax(s / T)
        return softmax_backward(grad_output, self.cache) / self.temperature

    def extra_repr(self):
        return f"mode={self.mode!r}, temperature={self.temperature}, straight_through={self.straight_through}"


class Reinforce:
    """REINFORCE (score-function) gradient for a sampled hard choice, with a baseline.

    For ``p = softmax(s / T)`` and a sampled key ``a``, ``d log p(a) / ds = (onehot(a) - p) / T``.
    To *maximise* the expected reward, minimise ``L = -E[R]``; its one-sample estimate is::

        dL/ds = -(R - b) * (onehot(a) - p) / T

    The baseline ``b`` does not change the expectation (``E[onehot(a) - p] = 0``) but
    cuts the variance; here it is a moving average of the mean reward,
    ``b <- momentum * b + (1 - momentum) * mean(R)`` (updated after use).

    Usage::

        weights, idx, logp = hard(scores)          # HardAlign(mode="sample")
        reward = ...                                # (..., Tq), e.g. 1.0 if correct
        dscores = reinforce.grad_scores(reward, weights, hard.probs, hard.temperature)
        score_module.backward(dscores)              # then an optimiser step
    """

    def __init__(self, momentum=0.9, normalize=True):
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
            raise ValueError(f"Reinforce: 'momentum' must be a float in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.normalize = bool(normalize)  # divide by the number of choices (a mean, not a sum)
        self.baseline = None  # a 0-d array after the first call

    def grad_scores(self, reward, weights, probs, temperature=1.0):
        """``dL/dscores`` for ``L = -mean(R)`` (or ``-sum(R)`` with ``normalize=False``).

        ``reward``: ``(..., Tq)`` float; ``weights``: the one-hot ``(..., Tq, Tk)``;
        ``probs``: the softmax ``(..., Tq, Tk)`` the choice was sampled from.
        """
        check_array(weights, "weights", "Reinforce", shape=(..., None, None))
        check_array(probs, "probs", "Reinforce", shape=weights.shape)
        check_array(reward, "reward", "Reinforce", shape=weights.shape[:-1])
        mean_reward = xp.mean(reward)  # a 0-d array: no device -> host copy on CuPy
        b = mean_reward if self.baseline is None else self.baseline
        # all-masked rows have weights = probs = 0, so they contribute nothing
        grad = -((reward - b)[..., None]) * (weights - probs) / temperature
        if self.normalize:
            grad = grad / reward.size
        self.baseline = mean_reward if self.baseline is None else (
            self.momentum * self.baseline + (1.0 - self.momentum) * mean_reward)
        return grad
