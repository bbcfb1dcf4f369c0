"""Core layers: each a forward that caches what it needs and a hand-written backward.

Shapes use ``...`` for any leading axes, e.g. ``(B, T, D)``.
"""
from .backend import get_rng, xp
from .module import Module, Parameter
from .validate import check_array, check_positive_int


class Linear(Module):
    """``y = x W^T + b``.  ``x``: ``(..., in_features)`` -> ``y``: ``(..., out_features)``.

    ``W``: ``(out_features, in_features)``, ``b``: ``(out_features,)``, both initialised
    from ``U(-1/sqrt(in), 1/sqrt(in))`` as in PyTorch.
    """

    def __init__(self, in_features, out_features, bias=True):
        self.in_features = check_positive_int(in_features, "in_features", "Linear")
        self.out_features = check_positive_int(out_features, "out_features", "Linear")
        bound = 1.0 / in_features ** 0.5
        rng = get_rng()
        self.weight = Parameter(rng.uniform((out_features, in_features), -bound, bound))
        self.bias = Parameter(rng.uniform((out_features,), -bound, bound)) if bias else None

    def forward(self, x):
        check_array(x, "x", "Linear", shape=(..., self.in_features))
        self.cache = x
        y = x @ self.weight.data.T
        return y + self.bias.data if self.bias is not None else y

    def backward(self, grad_output):
        x = self.cache
        # Flatten the leading axes so each parameter gradient is one matrix product.
        g2 = grad_output.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        self.weight.grad += g2.T @ x2  # dL/dW = sum over rows of g x^T
        if self.bias is not None:
            self.bias.grad += g2.sum(axis=0)
        return grad_output @ self.weight.data  # dL/dx = g W

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
