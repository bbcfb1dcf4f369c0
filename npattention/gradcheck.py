"""Finite-difference gradient checking for any Module (or forward/backward pair).

The check, in four steps (docs/gradcheck.md explains the choices):

1. Work in float64: the module's parameters and the floating inputs are cast, because
   central differences in float32 lose about half of the digits.
2. Pick a random upstream gradient ``G`` (not ones: ones hide transposed or summed-up
   mistakes) and define the scalar ``f = sum(G * forward(inputs))``.  Then
   ``df/dinput = backward(G)`` is what the hand-written code claims.
3. Estimate every (or a random subset of) entry numerically with central differences
   ``(f(x + eps) - f(x - eps)) / (2 eps)``, whose error is O(eps^2).
4. Compare entry by entry: an entry passes when ``|a - n| <= atol + rtol * |n|``; the
   report also gives the max relative error ``|a - n| / max(|a|, |n|)``.

Random layers (dropout) are handled by restoring the global random state before every
forward, so each evaluation sees the same dropout mask.
"""
from dataclasses import dataclass, field

from . import backend
from .backend import to_numpy, xp
from .module import Module


@dataclass
class TensorReport:
    """One checked tensor.  ``worst_index``, ``worst_analytic``, ``worst_numerical``: the entry
    farthest beyond the pass test ``|a - n| <= atol + rtol * |n|`` (for a FAIL row: where it failed)."""

    name: str
    shape: tuple
    checked: int
    max_abs_error: float
    max_rel_error: float
    passed: bool
    worst_index: tuple = ()
    worst_analytic: float = 0.0
    worst_numerical: float = 0.0

    def worst_entry(self):
        """``"(i, j): analytic 0.1234 vs numerical 0.1250"``."""
        index = "(" + ", ".join(str(i) for i in self.worst_index) + ("," if len(self.worst_index) == 1 else "") + ")"
        return f"{index}: analytic {self.worst_analytic:.6g} vs numerical {self.worst_numerical:.6g}"


@dataclass
class GradcheckReport:
    """Result of :func:`gradcheck`: one row per checked tensor and an overall verdict."""

    title: str
    rows: list = field(default_factory=list)

    @property
    def passed(self):
        return all(r.passed for r in self.rows)

    @property
    def worst_rel_error(self):
        return max((r.max_rel_error for r in self.rows), default=0.0)

    def __bool__(self):
        return self.passed

    def __str__(self):
        head = (f"{'tensor':<28} {'shape':<18} {'checked':>7} {'max abs err':>12} {'max rel err':>12}  verdict"
                f"  worst entry")
        lines = [f"gradcheck: {self.title}", head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.name:<28} {str(r.shape):<18} {r.checked:>7} {r.max_abs_error:>12.2e} "
                f"{r.max_rel_error:>12.2e}  {'ok  ' if r.passed else 'FAIL'}     {r.worst_entry()}"
            )
        lines.append(f"overall: {'PASS' if self.passed else 'FAIL'} (worst relative error {self.worst_rel_error:.2e})")
        return "\n".join(lines)

    __repr__ = __str__


class FunctionModule(Module):
    """Wrap a CS231n-style pair ``out, cache = forward_fn(*x)``; ``grads = backward_fn(dout, cache)``."""

    def __init__(self, forward_fn, backward_fn):
        self.forward_fn, self.backward_fn = forward_fn, backward_fn

    def forward(self, *inputs, **kwargs):
        out, self.cache = self.forward_fn(*inputs, **kwargs)
        return out

    def backward(self, grad_output):
        return self.backward_fn(grad_output, self.cache)


def _as_tuple(grads):
    if grads is None:
        return ()
    return tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def gradcheck(module, inputs, kwargs=None, *, eps=1e-6, rtol=1e-5, atol=1e-8,
              max_entries=None, nondiff=(), check_params=True, seed=0, title=None):
    """Check ``module.backward`` against central differences; return a :class:`GradcheckReport`.

    ``inputs``: tuple of positional inputs.  Floating arrays are differentiable unless
    their position is in ``nondiff``; integer ids, boolean masks and non-arrays are
    passed through unchecked.  ``kwargs`` are passed to forward unchanged.
    ``max_entries``: check at most this many randomly chosen entries per tensor.
    The module is cast to float64 in place (call ``.float()`` afterwards to go back).
    """
    if not isinstance(module, Module):
        raise TypeError(f"gradcheck: 'module' must be a npattention Module, got {type(module).__name__}")
    kwargs = dict(kwargs or {})
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    module.double()
    inputs = tuple(x.astype(xp.float64) if backend.is_float_array(x) else x for x in inputs)
    diff = [i for i, x in enumerate(inputs) if backend.is_float_array(x) and i not in nondiff]

    rng_state = backend.get_rng().get_state()

    def run():
        backend.get_rng().set_state(rng_state)  # same dropout mask every time
        return _first(module(*inputs, **kwargs))

    out = run()
    pick = backend.Generator(seed)
    upstream = pick.normal(out.shape, dtype=xp.float64)

    def f():
        return float(xp.sum(run() * upstream))

    module.zero_grad()
    run()
    analytic = _as_tuple(module.backward(upstream))
    if len(analytic) != len(diff):
        raise ValueError(
            f"gradcheck: backward returned {len(analytic)} gradient(s) but forward has "
            f"{len(diff)} differentiable input(s) at positions {diff}; mark others with nondiff="
        )
    targets = [(f"input[{i}]", inputs[i], g) for i, g in zip(diff, analytic)]
    if check_params:
        targets += [(name, p.data, p.grad.copy()) for name, p in module.named_parameters()]

    report = GradcheckReport(title or type(module).__name__)
    for name, array, grad in targets:
        if grad is None or tuple(grad.shape) != tuple(array.shape):
            raise ValueError(f"gradcheck: gradient for {name} has shape "
                             f"{None if grad is None else tuple(grad.shape)}, expected {tuple(array.shape)}")
        report.rows.append(_check_tensor(name, array, grad, f, eps, rtol, atol, max_entries, pick))
    return report


def _check_tensor(name, array, grad, f, eps, rtol, atol, max_entries, pick):
    size = int(array.size)
    if max_entries is not None and size > max_entries:
        entries = to_numpy(pick.permutation(size)[:max_entries])
    else:
        entries = range(size)
    analytic = to_numpy(grad).reshape(-1)
    abs_err = rel_err = 0.0
    passed = True
    checked = 0
    worst = (-1.0, (), 0.0, 0.0)  # (err / allowed err, index, analytic, numerical)
    for j in entries:
        idx = _unravel(int(j), array.shape)  # works on any view
        old = float(array[idx])
        array[idx] = old + eps
        f_plus = f()
        array[idx] = old - eps
        f_minus = f()
        array[idx] = old
        numeric = (f_plus - f_minus) / (2 * eps)
        a = float(analytic[j])
        err = abs(a - numeric)
        scale = max(abs(a), abs(numeric))
        abs_err = max(abs_err, err)
        if scale > atol:
            rel_err = max(rel_err, err / scale)
        allowed = atol + rtol * abs(numeric)
        passed &= err <= allowed
        if err / allowed > worst[0]:
            worst = (err / allowed, idx, a, numeric)
        checked += 1
    _, index, a, numeric = worst
    return TensorReport(name, tuple(array.shape), checked, abs_err, rel_err, bool(passed),
                        tuple(int(i) for i in index), a, numeric)


def _unravel(j, shape):
    """Flat index -> index tuple (row-major), without a host-array round trip."""
    idx = []
    for n in reversed(shape):
        idx.append(j % n)
        j //= n
    return tuple(reversed(idx))


def check_function(forward_fn, backward_fn, inputs, kwargs=None, **options):
    """:func:`gradcheck` for a plain pair ``out, cache = forward_fn(*inputs)`` /
    ``grads = backward_fn(grad_output, cache)``."""
    options.setdefault("title", getattr(forward_fn, "__name__", "function"))
    return gradcheck(FunctionModule(forward_fn, backward_fn), inputs, kwargs, **options)


# ------------------------------------------------------------------ the registry
@dataclass
class Case:
    """One registered gradient check: a module and the inputs to check it at."""

    module: Module
    inputs: tuple
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    options: dict = field(default_factory=dict)


_REGISTRY = {}


def register(name):
    """Decorator: register a function ``make(rng) -> iterable of Case`` under ``name``.

    ``python -m npattention gradcheck`` and the test suite run every registered case.
    Register at least two shapes per module.  Cases live in ``npattention/gradcheck_cases/``.
    """

    def deco(make):
        if name in _REGISTRY:
            raise ValueError(f"gradcheck case {name!r} registered twice")
        _REGISTRY[name] = make
        return make

    return deco


def registered():
    """``{name: make}`` for every registered module (imports all case files first)."""
    import importlib
    import pkgutil

    from . import gradcheck_cases

    for info in pkgutil.iter_modules(gradcheck_cases.__path__):
        importlib.import_module(f"{gradcheck_cases.__name__}.{info.name}")
    return dict(sorted(_REGISTRY.items()))


def run_registered(name, seed=0):
    """Run every case registered under ``name``; return a list of reports."""
    make = registered()[name]
    backend.manual_seed(seed)  # same initial weights every run, on either backend
    reports = []
    for case in make(backend.Generator(seed)):
        opts = dict(case.options)
        title = f"{name} {case.label}".strip()
        reports.append(gradcheck(case.module, case.inputs, case.kwargs, title=title, **opts))
    return reports
