"""Optimisers, gradient clipping and learning-rate schedules, with PyTorch's formulas.

Every optimiser updates a list of :class:`~npattention.module.Parameter` in place from
their accumulated ``.grad``::

    opt = Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()                # grads accumulate (+=) until cleared
    loss = ...; model.backward(...)
    clip_grad_norm_(model.parameters(), max_norm=1.0)   # optional
    opt.step()                     # theta <- theta - update
    sched.step()                   # optional: set opt.lr for the next step

Notation in the docstrings: ``theta`` a parameter, ``g`` its gradient, ``t`` the step
number counted from 1, ``lr`` the learning rate, ``wd`` the weight decay.  The formulas
are those of the pseudocode in the PyTorch documentation (``torch.optim.SGD``,
``torch.optim.Adam``, ``torch.optim.AdamW``) and docs/training.md derives them.

State dicts are flat ``{name: value}`` dictionaries of Python numbers (step count and
hyper-parameters) and arrays (per-parameter buffers named ``"state.<i>.<buffer>"``, with
``i`` the parameter's position in the list), so a checkpoint can store them as they are.
"""
import math
from collections.abc import Mapping

from .backend import xp
from .module import Parameter


def _as_param_list(params, where):
    from .module import Module   # (a model passed where its parameters are expected)

    if isinstance(params, Module) or callable(params):
        raise TypeError(f"{where}: 'params' must be the model's parameters: pass model.parameters(), "
                        f"got {type(params).__name__}")
    if isinstance(params, Parameter):
        params = [params]
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{where}: 'params' must be a list of Parameters (model.parameters()), "
                        f"got {type(params).__name__}") from None
    if not params:
        raise ValueError(f"{where}: 'params' is empty; pass model.parameters()")
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"{where}: 'params[{i}]' must be a npattention Parameter, got {type(p).__name__}")
    return params


def _check_nonneg(value, name, where):
    """A finite number >= 0 (``inf`` and ``nan`` are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{where}: {name!r} must be a finite number >= 0, got {value!r}")
    return float(value)


def _as_float(value):
    """``float(value)``, or NaN when it is not a number (so that the caller's check fails)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _check_positive(value, name, where):
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{where}: {name!r} must be a finite number > 0, got {value!r}")
    return float(value)


class Optimizer:
    """Base class: holds ``params``, ``lr``, the step count and per-parameter buffers.

    Subclasses list their hyper-parameter names in ``hyper`` and their buffer names
    in ``buffers``, and implement :meth:`update` for one parameter.
    """

    hyper = ("lr",)
    buffers = ()

    def __init__(self, params, lr):
        where = type(self).__name__
        self.params = _as_param_list(params, where)
        self.lr = _check_nonneg(lr, "lr", where)
        self.step_count = 0
        # state[i][name]: buffer `name` of parameter i, created lazily on the first step
        self.state = [{} for _ in self.params]

    def zero_grad(self):
        """Set every parameter's ``.grad`` to zero (gradients accumulate otherwise)."""
        for p in self.params:
            p.zero_grad()

    def step(self):
        """Apply one update to every parameter from its current ``.grad``."""
        self.step_count += 1
        for p, state in zip(self.params, self.state):
            self.update(p, p.grad, state, self.step_count)

    def update(self, p, g, state, t):
        raise NotImplementedError

    # ------------------------------------------------------------ state dicts
    def state_dict(self):
        """``{"step": int, "lr": float, <other hyper-parameters>, "state.<i>.<buffer>": array}``."""
        out = {"step": self.step_count}
        out.update({name: getattr(self, name) for name in self.hyper})
        for i, state in enumerate(self.state):
            for name, value in state.items():
                out[f"state.{i}.{name}"] = value.copy()
        return out

    def load_state_dict(self, state):
        """Restore step count, hyper-parameters and buffers (NumPy or CuPy arrays accepted).

        Missing or unexpected keys and buffers whose shape differs from their parameter
        raise an error listing every offending name; nothing is changed on error.
        """
        self._plan_load_state_dict(state)()

    def _plan_load_state_dict(self, state):
        """Check ``state``; return a function that writes it (see Module's twin)."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(f"{where}: 'state' must be a dict (from state_dict()), got {type(state).__name__}")
        expected = {"step", *self.hyper}
        buffer_keys = {f"state.{i}.{b}" for i in range(len(self.params)) for b in self.buffers}
        missing = sorted(expected - set(state))
        # Buffers are created on the first step: a state saved before any step has none,
        # so buffers may be absent all together, but not some of them.
        present = buffer_keys & set(state)
        if present and present != buffer_keys:
            missing += sorted(buffer_keys - present)
        unexpected = sorted(set(state) - expected - buffer_keys)
        if missing or unexpected:
            raise KeyError(f"{where}: missing keys {missing}, unexpected keys {unexpected}")
        wrong = []
        for key in sorted(present):
            i = int(key.split(".")[1])
            want = tuple(self.params[i].data.shape)
            got = tuple(getattr(state[key], "shape", ()))
            if got != want:
                wrong.append(f"{key}: checkpoint {got} vs parameter {want}")
        if wrong:
            raise ValueError(f"{where}: wrong shapes: " + "; ".join(wrong))
        numbers = {}
        for name in ("step", *self.hyper):
            value = _as_float(state[name])
            if not math.isfinite(value) or (name == "step" and (value < 0 or value != int(value))):
                raise ValueError(f"{where}: {name!r} must be a finite number"
                                 f"{' (a whole number >= 0)' if name == 'step' else ''}, got {state[name]!r}")
            numbers[name] = value

        def write():
            self.step_count = int(numbers["step"])
            for name in self.hyper:
                default = getattr(self, name)
                setattr(self, name, bool(numbers[name]) if isinstance(default, bool) else numbers[name])
            self.state = [{} for _ in self.params]
            for key in present:
                _, i, name = key.split(".")
                dtype = self.params[int(i)].data.dtype
                self.state[int(i)][name] = xp.asarray(state[key], dtype=dtype).copy()

        return write

    def __repr__(self):
        args = ", ".join(f"{n}={getattr(self, n)}" for n in self.hyper)
        return f"{type(self).__name__}({len(self.params)} params, {args}, step={self.step_count})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and weight decay.

    PyTorch's ``torch.optim.SGD`` (same arguments, same order)::

        g <- g + wd * theta                                 (weight decay = L2 in the gradient)
        if momentum:
            b <- g                             at t = 1
            b <- momentum * b + (1 - dampening) * g   for t > 1
            g <- g + momentum * b   if nesterov   else   g <- b
        theta <- theta - lr * g
    """

    hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    buffers = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr)
        self.momentum = _check_nonneg(momentum, "momentum", "SGD")
        self.dampening = _check_nonneg(dampening, "dampening", "SGD")
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay", "SGD")
        self.nesterov = bool(nesterov)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"SGD: nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={momentum!r}, dampening={dampening!r}")
        if self.momentum == 0:
            self.buffers = ()

    def update(self, p, g, state, t):
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()
            else:
                b = state["momentum_buffer"]
                b *= self.momentum
                b += (1 - self.dampening) * g
            b = state["momentum_buffer"]
            g = g + self.momentum * b if self.nesterov else b
        p.data -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with L2 weight decay added to the gradient, as ``torch.optim.Adam``::

        g <- g + wd * theta                      (L2: couples with the adaptive scaling)
        m <- beta1 * m + (1 - beta1) * g         (first moment)
        v <- beta2 * v + (1 - beta2) * g**2      (second moment)
        m_hat = m / (1 - beta1**t);  v_hat = v / (1 - beta2**t)   (bias corrections)
        theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)
    """

    hyper = ("lr", "beta1", "beta2", "eps", "weight_decay")
    buffers = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        where = type(self).__name__
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2
                and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"{where}: 'betas' must be a pair of numbers in [0, 1), got {betas!r}")
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = _check_positive(eps, "eps", where)   # eps = 0: 0/0 = NaN on a zero gradient
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay", where)

    @property
    def betas(self):
        return (self.beta1, self.beta2)

    def step(self):
        """:meth:`update` for every parameter at once, on flat vectors.

        The gradients are gathered into one ``(P,)`` vector (``P`` = entries of all the
        parameters) and the moments live in two such vectors (``self.state[i]`` holds views
        into them), so each line of the formula is one NumPy call instead of one per parameter
        (the demo's Transformer has 67).  Every operation writes into a vector kept from step to
        step (``out=``, in place): a fresh ``(P,)`` array per operation would cost more than the
        arithmetic (new pages from the OS).  The operations are those of :meth:`update`, in the
        same order: the numbers are identical.
        """
        self.step_count += 1
        t = self.step_count
        m, v, g, tmp = self._flat_buffers()
        xp.concatenate([p.grad.reshape(-1) for p in self.params], out=g)  # g: all the gradients
        if self.weight_decay and not self.decoupled:
            xp.concatenate([p.data.reshape(-1) for p in self.params], out=tmp)
            tmp *= self.weight_decay
            g += tmp  # Adam: L2 term enters m and v
        m *= self.beta1
        m += xp.multiply(g, 1 - self.beta1, out=tmp)
        v *= self.beta2
        g *= g
        g *= 1 - self.beta2
        v += g
        denom = xp.sqrt(xp.divide(v, 1 - self.beta2 ** t, out=tmp), out=tmp)  # sqrt(v_hat)
        denom += self.eps
        step = xp.divide(m, 1 - self.beta1 ** t, out=g)  # m_hat
        step *= self.lr
        step /= denom  # lr * m_hat / (sqrt(v_hat) + eps)
        for p, s in zip(self.params, self._split(step)):
            if self.weight_decay and self.decoupled:
                p.data *= 1 - self.lr * self.weight_decay  # AdamW: shrink theta directly
            p.data -= s

    def _split(self, flat):
        """Views of a flat ``(P,)`` vector, one per parameter, in the parameters' shapes."""
        start = 0
        for p in self.params:
            yield flat[start:start + p.data.size].reshape(p.data.shape)
            start += p.data.size

    def _flat_buffers(self):
        """``(m, v, g, tmp)``, four ``(P,)`` vectors: every parameter's ``exp_avg`` and
        ``exp_avg_sq`` side by side (``self.state[i]`` holds views into them, so ``state_dict``
        still shows one array per parameter) and two scratch vectors.  Made on the first step,
        and again after the state was replaced (``load_state_dict``, or a call of :meth:`update`)."""
        flat = getattr(self, "_flat", None)
        if flat is not None and all(s.get("exp_avg") is a and s.get("exp_avg_sq") is b
                                    for s, (a, b) in zip(self.state, flat[4])):
            return flat[:4]
        m, v = (xp.concatenate([s[name].reshape(-1) if name in s else xp.zeros(p.data.size, dtype=p.data.dtype)
                                for p, s in zip(self.params, self.state)]) for name in self.buffers)
        views = list(zip(self._split(m), self._split(v)))
        for s, (a, b) in zip(self.state, views):
            s["exp_avg"], s["exp_avg_sq"] = a, b
        self._flat = (m, v, xp.empty_like(m), xp.empty_like(m), views)
        return self._flat[:4]

    def update(self, p, g, state, t):
        """The update of one parameter (the reference form; :meth:`step` runs it on all at once)."""
        if self.weight_decay and self.decoupled:
            p.data *= 1 - self.lr * self.weight_decay  # AdamW: shrink theta directly
        elif self.weight_decay:
            g = g + self.weight_decay * p.data  # Adam: L2 term enters m and v
        if "exp_avg" not in state:
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        m_hat = m / (1 - self.beta1 ** t)
        v_hat = v / (1 - self.beta2 ** t)
        p.data -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    """Adam with *decoupled* weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``::

        theta <- theta * (1 - lr * wd)           (decay applied to the weights, not to g)
        m, v, m_hat, v_hat as in Adam with the raw gradient g
        theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

    With Adam's L2 term a weight with large gradients is decayed less (the decay is
    divided by ``sqrt(v_hat)`` too); here every weight shrinks by the same factor.
    """

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm_(params, max_norm, norm_type=2.0, eps=1e-6, error_if_nonfinite=False):
    """Scale all gradients together so that their global norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: ``total = ||(||g_1||, ..., ||g_n||)||`` (for
    ``norm_type=2`` the L2 norm of all gradient entries concatenated), then every
    ``g_i <- g_i * min(1, max_norm / (total + eps))``.  The direction of the update is
    kept; only its length is limited.  Returns ``total`` *before* clipping (a float).
    ``norm_type`` may be any ``p >= 1`` or ``float("inf")`` (largest absolute entry).

    A NaN or inf gradient makes ``total`` non-finite: nothing is clipped and ``total`` is
    returned as is, or, with ``error_if_nonfinite=True`` (as in PyTorch),
    ``FloatingPointError`` is raised naming the parameters whose gradient is non-finite
    and nothing is changed.
    """
    params = _as_param_list(params, "clip_grad_norm_")
    max_norm = _check_nonneg(max_norm, "max_norm", "clip_grad_norm_")
    norm_type = float(norm_type)
    if not norm_type >= 1:
        raise ValueError(f"clip_grad_norm_: 'norm_type' must be >= 1 or inf, got {norm_type!r}")
    # every gradient entry in one float64 vector: a few NumPy calls in all instead of a few per
    # parameter (4x faster for the demo's 67), and one read-back
    flat = xp.concatenate([p.grad.reshape(-1) for p in params], dtype=xp.float64)
    if math.isinf(norm_type):
        total = float(xp.max(xp.abs(flat)))
    elif norm_type == 2.0:
        total = float(xp.sqrt(flat @ flat))  # one BLAS dot
    else:
        total = float(xp.sum(xp.abs(flat) ** norm_type)) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        bad = [i for i, p in enumerate(params) if not bool(xp.isfinite(p.grad).all())]
        raise FloatingPointError(
            f"clip_grad_norm_: the total gradient norm is {total}: the gradients of params{bad} are "
            "non-finite (NaN or inf), so they cannot be clipped; find where with "
            "npattention.detect_anomaly(), or pass error_if_nonfinite=False")
    coef = max_norm / (total + eps)
    if coef < 1.0:
        for p in params:
            p.grad *= coef
    return total


# ------------------------------------------------------------------ LR schedules
class LRSchedule:
    """Base class: sets ``optimizer.lr`` from the number of optimiser steps taken.

    Call :meth:`step` once after every ``optimizer.step()``.  ``last_step`` counts those
    calls (0 at construction, when the learning rate of the first update is set);
    :meth:`get_lr` ``(step)`` is the learning rate used for update number ``step + 1``.
    ``base_lr`` is the optimiser's ``lr`` when the schedule is created.
    """

    def __init__(self, optimizer, warmup_steps):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: 'optimizer' must be an npattention Optimizer, "
                            f"got {type(optimizer).__name__}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"{type(self).__name__}: 'warmup_steps' must be an int >= 0, got {warmup_steps!r}")
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.base_lr = optimizer.lr
        self.last_step = 0
        optimizer.lr = self.get_lr(0)

    def get_lr(self, step=None):
        raise NotImplementedError

    def step(self):
        """Advance one step and set the optimiser's learning rate; returns it."""
        self.last_step += 1
        self.optimizer.lr = self.get_lr(self.last_step)
        return self.optimizer.lr

    def state_dict(self):
        return {"last_step": self.last_step, "base_lr": self.base_lr}

    def load_state_dict(self, state):
        """Restore ``last_step`` and ``base_lr`` and set the optimiser's learning rate."""
        self._plan_load_state_dict(state)()

    def _plan_load_state_dict(self, state):
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(f"{where}: 'state' must be a dict (from state_dict()), got {type(state).__name__}")
        missing = sorted({"last_step", "base_lr"} - set(state))
        unexpected = sorted(set(state) - {"last_step", "base_lr"})
        if missing or unexpected:
            raise KeyError(f"{where}: missing keys {missing}, unexpected keys {unexpected}")
        last_step, base_lr = _as_float(state["last_step"]), _as_float(state["base_lr"])
        if not (math.isfinite(last_step) and last_step >= 0 and last_step == int(last_step)):
            raise ValueError(f"{where}: 'last_step' must be a whole number >= 0, got {state['last_step']!r}")
        if not (math.isfinite(base_lr) and base_lr >= 0):
            raise ValueError(f"{where}: 'base_lr' must be a finite number >= 0, got {state['base_lr']!r}")

        def write():
            self.last_step, self.base_lr = int(last_step), base_lr
            self.optimizer.lr = self.get_lr(self.last_step)

        return write


class WarmupCosine(LRSchedule):
    """Linear warm-up to ``base_lr``, then half a cosine down to ``min_lr`` (nanoGPT's ``get_lr``)::

        lr(s) = base_lr * (s + 1) / (warmup_steps + 1)                 for s < warmup_steps
        lr(s) = min_lr + (base_lr - min_lr) * (1 + cos(pi * r)) / 2     for warmup_steps <= s <= total_steps
                with r = (s - warmup_steps) / (total_steps - warmup_steps)
        lr(s) = min_lr                                                  for s > total_steps

    ``s`` = optimiser steps already taken.  The first update never has ``lr = 0``.
    """

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr=0.0):
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= warmup_steps:
            raise ValueError(f"WarmupCosine: 'total_steps' must be an int > warmup_steps={warmup_steps!r}, "
                             f"got {total_steps!r}")
        self.total_steps = total_steps
        self.min_lr = _check_nonneg(min_lr, "min_lr", "WarmupCosine")
        super().__init__(optimizer, warmup_steps)

    def get_lr(self, step=None):
        s = self.last_step if step is None else step
        if s < self.warmup_steps:
            return self.base_lr * (s + 1) / (self.warmup_steps + 1)
        if s > self.total_steps:
            return self.min_lr
        r = (s - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * r))


class WarmupInverseSqrt(LRSchedule):
    """The Transformer paper's schedule ("Noam", Vaswani et al. 2017, eq. 3)::

        lr(n) = factor * d_model**-0.5 * min(n**-0.5, n * warmup_steps**-1.5),   n = s + 1

    a linear rise for ``warmup_steps`` updates, then decay as ``1/sqrt(n)``; ``s`` =
    optimiser steps already taken.  Without ``d_model`` the peak is the optimiser's
    ``lr`` instead: ``lr(n) = base_lr * min(n / warmup_steps, sqrt(warmup_steps / n))``.
    The paper uses ``d_model=512, warmup_steps=4000, factor=1`` with Adam(betas=(0.9, 0.98), eps=1e-9).
    """

    def __init__(self, optimizer, warmup_steps, d_model=None, factor=1.0):
        if warmup_steps == 0:
            raise ValueError("WarmupInverseSqrt: 'warmup_steps' must be >= 1, got 0")
        if d_model is not None and (isinstance(d_model, bool) or not isinstance(d_model, int) or d_model <= 0):
            raise ValueError(f"WarmupInverseSqrt: 'd_model' must be a positive int or None, got {d_model!r}")
        self.d_model = d_model
        self.factor = _check_positive(factor, "factor", "WarmupInverseSqrt")
        super().__init__(optimizer, warmup_steps)

    def get_lr(self, step=None):
        n = (self.last_step if step is None else step) + 1
        w = self.warmup_steps
        if self.d_model is None:
            return self.base_lr * min(n / w, math.sqrt(w / n))
        return self.factor * self.d_model ** -0.5 * min(n ** -0.5, n * w ** -1.5)
