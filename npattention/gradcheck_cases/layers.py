"""Cases for the core layers (npattention/layers.py)."""
from ..backend import xp
from ..gradcheck import Case, register
from ..layers import GELU, Dropout, Embedding, LayerNorm, Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from ..module import Sequential


@register("Linear")
def linear_cases(rng):
    yield Case(Linear(3, 4), (rng.normal((5, 3)),), label="(5, 3) -> 4")
    yield Case(Linear(6, 2, bias=False), (rng.normal((2, 3, 6)),), label="(2, 3, 6) -> 2, no bias")


@register("Sequential")
def sequential_cases(rng):
    yield Case(Sequential(Linear(3, 4), Linear(4, 2)), (rng.normal((5, 3)),), label="Linear-Linear")
    yield Case(Sequential(Linear(2, 2)), (rng.normal((1, 4, 2)),), label="one layer")


@register("Embedding")
def embedding_cases(rng):
    # repeated ids check the scatter-add; no input gradient (ids are integers)
    yield Case(Embedding(5, 3), (xp.asarray([[0, 2, 2], [4, 1, 2]]),), label="(2, 3) ids, repeats")
    # id 0 is padding: its row must get (and, numerically, have) zero gradient
    yield Case(Embedding(6, 4, padding_idx=0), (xp.asarray([[1, 0, 3, 3], [0, 5, 2, 1]]),),
               label="(2, 4) ids, padding_idx=0")
    yield Case(Embedding(4, 2, padding_idx=-1), (xp.asarray([3, 1, 1, 0, 3]),), label="(5,) ids, padding_idx=-1")


@register("LayerNorm")
def layernorm_cases(rng):
    ln = LayerNorm(5)
    ln.weight.data = rng.normal((5,))  # non-trivial gamma/beta so every term is exercised
    ln.bias.data = rng.normal((5,))
    yield Case(ln, (rng.normal((4, 5)),), label="(4, 5)")
    yield Case(LayerNorm((6,)), (rng.normal((2, 3, 6), scale=3.0),), label="(2, 3, 6)")
    yield Case(LayerNorm(4, elementwise_affine=False), (rng.normal((3, 4)),), label="(3, 4), no affine")


@register("Dropout")
def dropout_cases(rng):
    # train mode: gradcheck restores the global RNG state before each forward (same mask)
    yield Case(Dropout(0.5), (rng.normal((4, 5)),), label="(4, 5) p=0.5 train")
    yield Case(Dropout(0.2), (rng.normal((2, 3, 6)),), label="(2, 3, 6) p=0.2 train")
    yield Case(Dropout(0.5).eval(), (rng.normal((3, 4)),), label="(3, 4) eval (identity)")


def _activation_cases(make, rng, scale=1.0):
    yield Case(make(), (rng.normal((4, 5), scale=scale),), label="(4, 5)")
    yield Case(make(), (rng.normal((2, 3, 6), scale=scale),), label="(2, 3, 6)")


@register("ReLU")
def relu_cases(rng):
    yield from _activation_cases(ReLU, rng)


@register("GELU")
def gelu_cases(rng):
    yield from _activation_cases(GELU, rng, scale=2.0)
    yield Case(GELU(approximate="none"), (rng.normal((4, 5), scale=2.0),), label="(4, 5) exact (erf)")
    yield Case(GELU(approximate="none"), (rng.normal((2, 3, 6), scale=3.0),), label="(2, 3, 6) exact (erf)")


@register("Tanh")
def tanh_cases(rng):
    yield from _activation_cases(Tanh, rng, scale=1.5)


@register("Sigmoid")
def sigmoid_cases(rng):
    yield from _activation_cases(Sigmoid, rng, scale=2.0)


@register("Softmax")
def softmax_cases(rng):
    yield Case(Softmax(), (rng.normal((4, 5)),), label="(4, 5) dim=-1")
    yield Case(Softmax(dim=1), (rng.normal((2, 3, 6)),), label="(2, 3, 6) dim=1")


@register("LogSoftmax")
def log_softmax_cases(rng):
    yield Case(LogSoftmax(), (rng.normal((4, 5)),), label="(4, 5) dim=-1")
    yield Case(LogSoftmax(dim=0), (rng.normal((2, 3, 6)),), label="(2, 3, 6) dim=0")


@register("SiLU")
def silu_cases(rng):
    from ..layers import SiLU

    yield from _activation_cases(SiLU, rng, scale=3.0)
