"""Cases for the multi-order attention blocks (npattention/vision/multi_order.py)."""
from ..gradcheck import Case, register
from ..vision.multi_order import HighOrderAttention, MultiOrderDWConv, MultiOrderGatedAggregation


@register("HighOrderAttention")
def high_order_cases(rng):
    yield Case(HighOrderAttention(8, order=3), (rng.normal((2, 8, 3, 4)),), label="C=8, order 3",
               options={"max_entries": 60})
    yield Case(HighOrderAttention(4, order=2, reduction=2), (rng.normal((1, 4, 5, 3)),), label="C=4, order 2, r=2",
               options={"max_entries": 60})


@register("MultiOrderDWConv")
def multi_order_dwconv_cases(rng):
    yield Case(MultiOrderDWConv(8), (rng.normal((2, 8, 6, 5)),), label="C=8, dilations 1/2/3",
               options={"max_entries": 60})
    yield Case(MultiOrderDWConv(4, dilations=(1, 1, 2), channel_split=(1, 1, 2)), (rng.normal((1, 4, 4, 4)),),
               label="C=4, split 1/1/2", options={"max_entries": 60})


@register("MultiOrderGatedAggregation")
def moga_cases(rng):
    m = MultiOrderGatedAggregation(8)
    m.sigma.data[...] = rng.normal((8,))          # a sigma far from its 1e-5 start, so its path is tested
    # eps=1e-5: with eps=1e-6 the central differences of this deep block are round-off bound (~1e-8 abs)
    yield Case(m, (rng.normal((2, 8, 6, 6)),), label="C=8, random sigma",
               options={"max_entries": 60, "eps": 1e-5})
    yield Case(MultiOrderGatedAggregation(8), (rng.normal((1, 8, 7, 5)),), label="C=8, 7x5 map, sigma 1e-5",
               options={"max_entries": 60, "eps": 1e-5})
