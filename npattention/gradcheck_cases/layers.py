"""Cases for the core layers (npattention/layers.py)."""
from ..gradcheck import Case, register
from ..layers import Linear
from ..module import Sequential


@register("Linear")
def linear_cases(rng):
    yield Case(Linear(3, 4), (rng.normal((5, 3)),), label="(5, 3) -> 4")
    yield Case(Linear(6, 2, bias=False), (rng.normal((2, 3, 6)),), label="(2, 3, 6) -> 2, no bias")


@register("Sequential")
def sequential_cases(rng):
    yield Case(Sequential(Linear(3, 4), Linear(4, 2)), (rng.normal((5, 3)),), label="Linear-Linear")
    yield Case(Sequential(Linear(2, 2)), (rng.normal((1, 4, 2)),), label="one layer")
