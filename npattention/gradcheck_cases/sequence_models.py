"""Cases for the small sequence models (npattention/sequence_models.py)."""
from ..backend import xp
from ..gradcheck import Case, register
from ..masks import padding_mask
from ..sequence_models import AttentionPooling, ConvStack, SequenceClassifier, WindowFC


@register("WindowFC")
def window_fc_cases(rng):
    yield Case(WindowFC(3, 4, context=2), (rng.normal((2, 6, 3)),), label="context 2")
    yield Case(WindowFC(2, 3, context=0), (rng.normal((1, 4, 2)),), label="context 0 (a Linear per position)")


@register("ConvStack")
def conv_stack_cases(rng):
    yield Case(ConvStack(3, 4, kernel=3, layers=2), (rng.normal((2, 7, 3)),), label="k=3, 2 layers")
    yield Case(ConvStack(2, 2, kernel=5, layers=1), (rng.normal((1, 4, 2)),), label="k=5 longer than the sequence")


@register("AttentionPooling")
def attention_pooling_cases(rng):
    pool = AttentionPooling(4)
    pool.query.data[...] = rng.normal((4,))
    yield Case(pool, (rng.normal((2, 5, 4)),), kwargs={"mask": padding_mask(xp.asarray([5, 3]), 5)},
               label="padded")
    pool2 = AttentionPooling(3)
    pool2.query.data[...] = rng.normal((3,))
    yield Case(pool2, (rng.normal((3, 1, 3)),), label="T = 1")


@register("SequenceClassifier")
def sequence_classifier_cases(rng):
    ids = xp.asarray(rng.host.integers(0, 5, size=(2, 6)))
    yield Case(SequenceClassifier(5, 3, "self_attention", "pool", d_model=4, max_len=6, dim_feedforward=6),
               (ids,), label="self-attention + attention pooling", options={"max_entries": 30})
    yield Case(SequenceClassifier(5, 3, "lstm", "last", d_model=3, hidden=4), (ids,), label="LSTM, last",
               options={"max_entries": 30})
    yield Case(SequenceClassifier(5, 4, "window_fc", "all", d_model=3, hidden=4, context=1), (ids,),
               label="window FC tagger", options={"max_entries": 30})
