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
  the forward output, raises a clear error.  This check is added to every subclass
  automatically (see ``__init_subclass__``), so layers need not repeat it.
"""
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
        # Wrap each subclass's forward/backward once with the contract checks, so that
        # every layer gets them without writing them.
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            cls.forward = _checked_forward(cls.__dict__["forward"])
        if "backward" in cls.__dict__:
            cls.backward = _checked_backward(cls.__dict__["backward"])

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

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
        """Cast every floating parameter and buffer to ``dtype`` (grads are reset)."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = xp.zeros_like(p.data)
        for _, m, name in self.named_buffers():
            b = getattr(m, name)
            if is_array(b) and b.dtype.kind == "f":
                setattr(m, name, b.astype(dtype))
        return self

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

        Missing or unexpected keys (with ``strict``) and wrong shapes raise a
        ``KeyError``/``ValueError`` that lists every offending name.
        """
        params = dict(self.named_parameters())
        buffers = {full: (m, name) for full, m, name in self.named_buffers()}
        expected = set(params) | set(buffers)
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        wrong = []
        for key in sorted(expected & set(state)):
            target = params[key].data if key in params else getattr(*buffers[key])
            if tuple(state[key].shape) != tuple(target.shape):
                wrong.append(f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(target.shape)}")
        if wrong:
            raise ValueError("load_state_dict: wrong shapes: " + "; ".join(wrong))
        for key in expected & set(state):
            value = xp.asarray(to_numpy(state[key]) if not is_array(state[key]) else state[key])
            if key in params:
                params[key].data = value.astype(params[key].data.dtype).copy()
                params[key].grad = xp.zeros_like(params[key].data)
            else:
                m, name = buffers[key]
                old = getattr(m, name)
                setattr(m, name, value.astype(old.dtype).copy())

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


def _checked_forward(forward):
    def wrapped(self, *inputs, **kwargs):
        out = forward(self, *inputs, **kwargs)
        self._output_shape = _output_shape(out)
        return out

    wrapped.__wrapped__ = forward
    wrapped.__doc__ = forward.__doc__
    wrapped.__name__ = forward.__name__
    return wrapped


def _checked_backward(backward):
    def wrapped(self, grad_output=None, *args, **kwargs):
        name = type(self).__name__
        if "_output_shape" not in vars(self):
            raise RuntimeError(f"{name}.backward() called before forward(): run the forward pass first")
        expected = self._output_shape
        if grad_output is not None and expected is not None:
            got = tuple(getattr(grad_output, "shape", ()))
            if got != expected:
                raise ValueError(
                    f"{name}.backward: 'grad_output' must have the forward output's shape {expected}, got {got}"
                )
        return backward(self, grad_output, *args, **kwargs)

    wrapped.__wrapped__ = backward
    wrapped.__doc__ = backward.__doc__
    wrapped.__name__ = backward.__name__
    return wrapped


class Sequential(Module):
    """Modules applied one after another; backward runs them in reverse."""

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
