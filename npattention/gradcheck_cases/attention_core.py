"""Cases for the three attention steps and their compositions (npattention/attention/
scores.py, align.py, context.py, attention.py).  Each module: two or more shapes,
including a leading head axis and, where a mask applies, a masked case with an
all-masked row."""
from ..attention.align import SoftmaxAlign
from ..attention.attention import Attention, LocationAttention
from ..attention.context import Context
from ..attention.scores import AdditiveScore, ConcatScore, CosineScore, DotScore, GeneralScore, ScaledDotScore
from ..backend import xp
from ..gradcheck import Case, register


def _qk(rng, lead, tq, tk, dq, dk):
    return rng.normal(lead + (tq, dq)), rng.normal(lead + (tk, dk))


@register("DotScore")
def _dot(rng):
    yield Case(DotScore(), _qk(rng, (2,), 3, 4, 5, 5), label="(2,3,5) x (2,4,5)")
    yield Case(DotScore(), _qk(rng, (2, 2), 1, 3, 4, 4), label="heads (2,2,1,4) x (2,2,3,4)")


@register("ScaledDotScore")
def _scaled(rng):
    yield Case(ScaledDotScore(), _qk(rng, (2,), 3, 4, 6, 6), label="(2,3,6) x (2,4,6)")
    yield Case(ScaledDotScore(scale=0.3), _qk(rng, (1, 3), 2, 5, 4, 4), label="heads, scale=0.3")


@register("GeneralScore")
def _general(rng):
    yield Case(GeneralScore(4, 3), _qk(rng, (2,), 3, 5, 4, 3), label="(2,3,4) x (2,5,3)")
    yield Case(GeneralScore(3, 3), _qk(rng, (2, 2), 1, 4, 3, 3), label="heads, Tq=1")


@register("ConcatScore")
def _concat(rng):
    yield Case(ConcatScore(4, 3), _qk(rng, (2,), 3, 5, 4, 3), label="(2,3,4) x (2,5,3)")
    yield Case(ConcatScore(2, 5), _qk(rng, (2, 3), 1, 4, 2, 5), label="heads, Tq=1")


@register("AdditiveScore")
def _additive(rng):
    yield Case(AdditiveScore(4, 3, 5), _qk(rng, (2,), 3, 4, 4, 3), label="(2,3,4) x (2,4,3), H=5")
    yield Case(AdditiveScore(3, 3, 2), _qk(rng, (2, 2), 1, 3, 3, 3), label="heads, Tq=1, H=2")
    yield Case(AdditiveScore(4, 3, 5, bias=True), _qk(rng, (2,), 3, 4, 4, 3), label="bias=True (decoder layout)")
    yield Case(AdditiveScore(4, 3, 5, bias=True), _qk(rng, (2,), 1, 6, 4, 5), kwargs={"projected": True},
               label="keys already projected (a decoder step): gradient of W_k k + b")


@register("CosineScore")
def _cosine(rng):
    yield Case(CosineScore(), _qk(rng, (2,), 3, 4, 5, 5), label="(2,3,5) x (2,4,5)")
    yield Case(CosineScore(scale=5.0), _qk(rng, (2, 2), 2, 3, 3, 3), label="heads, scale=5")


def _mask_with_empty_row(b, tq, tk):
    """(b, tq, tk) mask: padding on the last key of batch 0, and query row 0 of batch 1 fully masked."""
    m = xp.zeros((b, tq, tk), dtype=bool)
    m[0, :, -1] = True
    m[1, 0, :] = True
    return m


@register("SoftmaxAlign")
def _softmax(rng):
    yield Case(SoftmaxAlign(), (rng.normal((2, 3, 4)),), label="(2,3,4)")
    yield Case(SoftmaxAlign(temperature=0.5), (rng.normal((2, 3, 4)),),
               kwargs={"mask": _mask_with_empty_row(2, 3, 4)}, label="masked + all-masked row, T=0.5")
    yield Case(SoftmaxAlign(), (rng.normal((2, 2, 3, 5)),),
               kwargs={"mask": xp.asarray([False, False, False, True, True])[None, None, None, :]},
               label="heads (2,2,3,5), key padding")


@register("Context")
def _context(rng):
    yield Case(Context(), (rng.normal((2, 3, 4)), rng.normal((2, 4, 5))), label="(2,3,4) @ (2,4,5)")
    yield Case(Context(), (rng.normal((2, 2, 1, 3)), rng.normal((2, 2, 3, 2))), label="heads, Tq=1")


@register("Attention")
def _attention(rng):
    q, k = _qk(rng, (2,), 3, 4, 5, 5)
    yield Case(Attention(ScaledDotScore()), (q, k), label="normal mode K=V")
    q, k = _qk(rng, (2,), 3, 4, 4, 3)
    yield Case(Attention(AdditiveScore(4, 3, 5)), (q, k, rng.normal((2, 4, 2))),
               kwargs={"mask": _mask_with_empty_row(2, 3, 4)}, label="key-value, additive, masked")
    q, k = _qk(rng, (2, 2), 2, 3, 3, 3)
    yield Case(Attention(GeneralScore(3, 3), SoftmaxAlign(temperature=2.0)), (q, k, rng.normal((2, 2, 3, 4))),
               label="heads, general, T=2")


@register("LocationAttention")
def _location_attention(rng):
    yield Case(LocationAttention(4, 3, 5, 2, 3), (rng.normal((2, 1, 4)), rng.normal((2, 1, 3)), rng.normal((2, 5, 2))),
               label="B=2, Tq=1 (one decoder step, as in the notes)", options={"max_entries": 30})
    mask = xp.zeros((3, 1, 4), dtype=bool)
    mask[0, 0, 2:] = True
    yield Case(LocationAttention(2, 2, 4, 3, 2), (rng.normal((3, 2, 2)), rng.normal((3, 2, 2)), rng.normal((3, 4, 3))),
               kwargs={"mask": mask}, label="B=3, Tq=2, padded source", options={"max_entries": 30})
