"""Parameter and Module: the contract every layer in npattention follows.

A layer is a small class with a hand-written forward and backward::

    class Linear(Module):
        def forward(self, x):          # cache what backward needs
            self.cache = x
            return x @ self.weight.data.T + self.bias.data
        def backward(self, grad_output):
            x = self.cache
            self.weight.grad += ...    # accumulate (+=) into every parameter's .grad
            return grad_output @ self.weight.data   # gradient for the input

The rules (docs/contract.md has the long form):

* ``module(*inputs)`` calls ``forward``; forward keeps in ``self.cache`` only what
  backward needs.  When forward returns a tuple (e.g. ``(output, weights)``),
  backward takes the gradient of the **first** element.
* ``backward(grad_output)`` returns the gradient of every *differentiable* input of
  forward, in order: one array, or a tuple when there are several.  Integer ids and
  boolean masks are not differentiable and get no entry.  Parameter gradients are
  **added** to ``param.grad`` (so gradients accumulate until ``zero_grad()``).
* ``backward`` before any ``forward``, or a ``grad_output`` whose shape differs from
  the forward output, raises a clear error.  ``Module.__call__`` records the output
  shape (forward itself is never wrapped, so a debugger stepping into ``forward`` lands
  in the layer's code); each subclass's ``backward`` gets one thin checking wrapper,
  hidden from tracebacks (``__tracebackhide__``) and skipped by
  ``pdb.Pdb(skip=["npattention.module"])`` (docs/contract.md).
* **Anomaly mode** (:func:`detect_anomaly`, or ``NPATTENTION_DETECT_ANOMALY=1``): every
  module's forward outputs and backward gradients are checked for NaN/inf and the first
  non-finite value raises :class:`AnomalyError` naming the module's path in the model.
"""
import contextlib
import functools
import inspect
import os
from collections.abc import Mapping

from .backend import DEFAULT_DTYPE, is_array, to_numpy, xp


class Parameter:
    """A trainable array ``data`` and the gradient ``grad`` accumulated into it."""

    def __init__(self, data):
        if not is_array(data) or data.dtype.kind != "f":
            raise TypeError(f"Parameter data must be a floating-point {xp.__name__} array, got {type(data).__name__}")
        self.data = data
        self.grad = xp.zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    def zero_grad(self):
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


def _output_shape(out):
    first = out[0] if isinstance(out, tuple) else out
    return tuple(first.shape) if hasattr(first, "shape") else None


class Module:
    """Base class: parameters, sub-modules, train/eval mode and state dicts.

    Sub-modules and parameters are found by looking at the attributes (also inside
    lists and tuples), in the order they were assigned, as in PyTorch.  Non-trainable
    arrays that belong in a checkpoint (e.g. BatchNorm's running mean) are registered
    with :meth:`register_buffer`.
    """

    training = True
    cache = None

    def __init_subclass__(cls, **kwargs):
        # forward is left as written (its checks live in __call__); backward gets one thin
        # wrapper with the contract checks, so every layer has them without writing them.
        super().__init_subclass__(**kwargs)
        if "backward" in cls.__dict__:
            cls.backward = _checked_backward(cls.__dict__["backward"])

    def __call__(self, *inputs, **kwargs):
        """Run ``forward`` and record its output shape (checked by ``backward``); in
        anomaly mode also check the outputs for NaN/inf."""
        if not _ANOMALY["enabled"]:
            out = self.forward(*inputs, **kwargs)
        else:
            _STACK.append(self)
            try:
                out = self.forward(*inputs, **kwargs)
                _check_forward(self, out, inputs, kwargs)
            finally:
                _STACK.pop()
        self._output_shape = _output_shape(out)
        return out

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")

    # ------------------------------------------------------------ traversal
    def _children(self):
        """(name, Parameter|Module) pairs directly owned by this module."""
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, (Parameter, Module)):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix=""):
        """Yield ``("layer.0.weight", Parameter)`` pairs, recursively, without repeats."""
        seen = set()
        for name, p in self._named_parameters(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters(self, prefix):
        for name, child in self._children():
            full = prefix + name
            if isinstance(child, Parameter):
                yield full, child
            else:
                yield from child._named_parameters(full + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix=""):
        yield prefix.rstrip("."), self
        for name, child in self._children():
            if isinstance(child, Module):
                yield from child.named_modules(prefix + name + ".")

    def modules(self):
        return [m for _, m in self.named_modules()]

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------ buffers, dtype
    def register_buffer(self, name, array):
        """Keep ``array`` as attribute ``name`` and in the state dict, but do not train it."""
        if "_buffer_names" not in vars(self):
            self._buffer_names = []
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        setattr(self, name, array)

    def named_buffers(self, prefix=""):
        for mod_name, m in self.named_modules():
            for name in vars(m).get("_buffer_names", []):
                yield (mod_name + "." if mod_name else "") + name, m, name

    def to(self, dtype):
        """Cast every floating parameter and buffer to ``dtype`` (grads are reset).

        ``dtype`` must be a floating dtype (``float32``, ``float64``): parameters are
        never integers."""
        try:
            kind = xp.dtype(dtype).kind
        except TypeError:
            kind = None
        if kind != "f":
            raise TypeError(f"{type(self).__name__}.to: 'dtype' must be a floating dtype "
                            f"(e.g. float32 or float64), got {dtype!r}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = xp.zeros_like(p.data)
        for m in self.modules():
            m._cast_buffers(dtype)
        return self

    def _cast_buffers(self, dtype):
        """Cast this module's own floating buffers to ``dtype`` (called by :meth:`to`).  A
        module whose buffer is a formula (a sinusoidal table) rebuilds it in ``dtype`` instead."""
        for name in vars(self).get("_buffer_names", []):
            b = getattr(self, name)
            if is_array(b) and b.dtype.kind == "f":
                setattr(self, name, b.astype(dtype))

    def double(self):
        return self.to(xp.float64)

    def float(self):
        return self.to(DEFAULT_DTYPE)

    # ------------------------------------------------------------ state dicts
    def state_dict(self):
        """``{dotted name: copy of the array}`` for parameters and buffers."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        for full, m, name in self.named_buffers():
            state[full] = xp.array(getattr(m, name), copy=True)
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` into this module (NumPy or CuPy arrays accepted).

        Missing or unexpected keys (with ``strict``), values that are not numeric arrays
        and wrong shapes raise a ``KeyError``/``TypeError``/``ValueError`` that lists every
        offending name.  Everything is checked before anything is written: a failed load
        leaves the module untouched.
        """
        self._plan_load_state_dict(state, strict)()

    def _plan_load_state_dict(self, state, strict=True):
        """Check ``state`` against this module; return a function that writes it.

        Used by :func:`npattention.checkpoint.load_checkpoint` to validate the model,
        the optimiser and the schedule before writing any of them."""
        where = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(f"{where}: 'state' must be a dict {{name: array}} (from state_dict()), "
                            f"got {type(state).__name__}")
        params = dict(self.named_parameters())
        buffers = {full: (m, name) for full, m, name in self.named_buffers()}
        expected = set(params) | set(buffers)
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        keys = sorted(expected & set(state))
        bad_type = [f"{k}: {type(state[k]).__name__}" for k in keys
                    if not hasattr(state[k], "shape") or getattr(state[k].dtype, "kind", "") not in "fiub"]
        if bad_type:
            raise TypeError("load_state_dict: values must be numeric NumPy/CuPy arrays, got " + "; ".join(bad_type))
        wrong = []
        for key in keys:
            target = params[key].data if key in params else getattr(*buffers[key])
            if tuple(state[key].shape) != tuple(target.shape):
                wrong.append(f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(target.shape)}")
        if wrong:
            raise ValueError("load_state_dict: wrong shapes: " + "; ".join(wrong))

        def write():
            for key in keys:
                value = xp.asarray(to_numpy(state[key]) if not is_array(state[key]) else state[key])
                if key in params:
                    params[key].data = value.astype(params[key].data.dtype).copy()
                    params[key].grad = xp.zeros_like(params[key].data)
                else:
                    m, name = buffers[key]
                    old = getattr(m, name)
                    setattr(m, name, value.astype(old.dtype).copy())

        return write

    def num_parameters(self):
        return sum(int(p.data.size) for p in self.parameters())

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        kids = [(n, c) for n, c in self._children() if isinstance(c, Module)]
        for name, child in kids:
            lines.append("  (" + name + "): " + repr(child).replace("\n", "\n  "))
        return lines[0] + (")" if not kids else "\n" + "\n".join(lines[1:]) + "\n)")


def _checked_backward(backward):
    """``backward`` behind the two contract checks (and anomaly mode's check)."""
    if getattr(backward, "_contract_checked", False):   # e.g. ``backward = Other.backward``
        return backward

    @functools.wraps(backward)
    def checked_backward(self, grad_output=None, *args, **kwargs):
        __tracebackhide__ = True   # pytest and IPython leave this frame out of tracebacks
        name = type(self).__name__
        expected = vars(self).get("_output_shape")
        if expected is None and "_output_shape" not in vars(self) and self.cache is None:
            raise RuntimeError(f"{name}.backward() called before forward(): run the forward pass first")
        if grad_output is not None and expected is not None:
            got = tuple(getattr(grad_output, "shape", ()))
            if got != expected:
                raise ValueError(
                    f"{name}.backward: 'grad_output' must have the forward output's shape {expected}, got {got}"
                )
        if not _ANOMALY["enabled"]:
            return backward(self, grad_output, *args, **kwargs)   # step in here: the layer's own backward
        _STACK.append(self)
        try:
            grads = backward(self, grad_output, *args, **kwargs)
            _check_backward(self, grads, grad_output)
        finally:
            _STACK.pop()
        return grads

    checked_backward._contract_checked = True
    return checked_backward


# ---------------------------------------------------------------- anomaly mode
class AnomalyError(FloatingPointError):
    """A NaN or inf found by anomaly mode.  ``module_path``: the module's dotted path
    in the model (``"encoder.layers.1.self_attn"``); ``phase``: ``"forward"`` or
    ``"backward"``; ``inputs_finite``: whether everything the module received was finite
    (True means this module's own computation created the non-finite values).

    Which module is named: the innermost one whose output (forward) or gradients
    (backward) hold a NaN/inf although what it received was finite; a child that merely
    received non-finite values from its parent's own code stays silent, so the parent is
    named.  A module with a non-finite parameter is named as such, and the outermost
    module names a non-finite input or ``grad_output`` given by the caller."""

    def __init__(self, message, module_path, phase, inputs_finite):
        super().__init__(message)
        self.module_path, self.phase, self.inputs_finite = module_path, phase, inputs_finite


def _env_flag(name):
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"environment variable {name}={os.environ[name]!r}: expected 1/0 (or true/false)")


try:
    _ANOMALY = {"enabled": _env_flag("NPATTENTION_DETECT_ANOMALY")}
except ValueError as _err:
    from .backend import _is_cli

    if not _is_cli():
        raise
    import sys

    sys.stderr.write(f"python -m npattention: error: {_err}\n")   # one line, status 2, as argument errors
    raise SystemExit(2) from None
_STACK = []   # modules inside __call__ / backward while anomaly mode is on, outermost first


def is_anomaly_enabled():
    """Whether anomaly mode is on."""
    return _ANOMALY["enabled"]


def set_detect_anomaly(mode):
    """Turn anomaly mode on or off for the rest of the program (see :func:`detect_anomaly`)."""
    if not isinstance(mode, bool):
        raise TypeError(f"set_detect_anomaly: 'mode' must be True or False, got {mode!r}")
    _ANOMALY["enabled"] = mode


@contextlib.contextmanager
def detect_anomaly(enabled=True):
    """Check every module's forward outputs and backward gradients for NaN/inf.

    ``with detect_anomaly(): loss = ...; model.backward(...)`` (also usable as a
    decorator; ``NPATTENTION_DETECT_ANOMALY=1`` turns it on for a whole run).  The first
    non-finite value raises :class:`AnomalyError` naming the innermost module whose output
    (forward) or input gradient / parameter gradient (backward) holds it, its path in the
    model, and which of its inputs were already non-finite.  Off by default: each check
    reads the array once more (docs/contract.md gives the measured overhead).
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"detect_anomaly: 'enabled' must be True or False, got {enabled!r}")
    previous = _ANOMALY["enabled"]
    _ANOMALY["enabled"] = enabled
    try:
        yield
    finally:
        _ANOMALY["enabled"] = previous


def _nonfinite(a):
    """``None`` if ``a`` is not a floating array or is all finite; else a description."""
    if not is_array(a) or a.dtype.kind not in "fc" or bool(xp.isfinite(a).all()):
        return None
    n_nan, n_inf = int(xp.isnan(a).sum()), int(xp.isinf(a).sum())
    return f"{n_nan} NaN and {n_inf} inf among {a.size} entries"


def _leaves(value, label):
    """``(label, array)`` for every array in a nested tuple/list/dict of outputs."""
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{label}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{label}[{k!r}]")
    elif is_array(value):
        yield label, value


def _module_path(module):
    """Dotted path of ``module`` inside the outermost module being run."""
    root = _STACK[0] if _STACK else module
    for name, m in root.named_modules():
        if m is module:
            return name or "(the model itself)"
    return " > ".join(type(m).__name__ for m in _STACK)   # not an attribute: show the call chain


def _first_bad(pairs):
    for label, a in pairs:
        bad = _nonfinite(a)
        if bad:
            return label, bad
    return None


def _raise_anomaly(module, phase, what, bad, received):
    path = _module_path(module)
    if received is None:
        cause = "; everything it received was finite, so this module produced them"
    elif received[0].startswith("its parameter"):
        cause = (f"; {received[0]} is non-finite ({received[1]}): the weights themselves are bad "
                 "(did an earlier update write NaN into them?)")
    else:   # only the outermost module blames what it was given
        given = "the data passed to the model" if phase == "forward" else "the gradient passed to backward"
        cause = f"; {received[0]} was already non-finite ({received[1]}): {given} holds NaN or inf"
    raise AnomalyError(f"anomaly mode: {phase} of {path!r} ({type(module).__name__}): {what} has {bad}{cause}",
                       path, phase, received is None)


def _check_forward(module, out, inputs, kwargs):
    found = _first_bad(_leaves(out, "output"))
    if found is None:
        return
    bad_param = _first_bad((f"its parameter {n!r}", c.data) for n, c in module._children() if isinstance(c, Parameter))
    if bad_param is None:
        try:   # name the inputs as forward's signature does ('query', 'x', ...)
            bound = inspect.signature(module.forward).bind(*inputs, **kwargs).arguments
            named = [(f"input {k!r}", v) for k, v in bound.items()]
        except (TypeError, ValueError):
            named = [(f"input {i}", v) for i, v in enumerate(inputs)] + [(f"input {k!r}", v) for k, v in kwargs.items()]
        received = _first_bad(pair for label, v in named for pair in _leaves(v, label))
        if received is not None and len(_STACK) > 1:
            return   # made by the enclosing module's own code (or a sibling that deferred): the parent is blamed
    _raise_anomaly(module, "forward", found[0], found[1], bad_param or received)


def _check_backward(module, grads, grad_output):
    own = [(f"the gradient of parameter {n!r}", c.grad) for n, c in module._children() if isinstance(c, Parameter)]
    found = _first_bad(list(_leaves(grads, "the returned input gradient")) + own)
    if found is None:
        return
    received = _first_bad(_leaves(grad_output, "its 'grad_output'"))
    if received is not None and len(_STACK) > 1:
        return   # the enclosing module's backward handed it over: the parent is blamed
    _raise_anomaly(module, "backward", found[0], found[1], received)


class Sequential(Module):
    """Modules applied one after another; backward runs them in reverse.

    cache: none of its own; each layer keeps its own.
    """

    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_output):
        for layer in reversed(self.layers):
            grad_output = layer.backward(grad_output)
        return grad_output

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)
