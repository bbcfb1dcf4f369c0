"""Cases for the seq2seq encoder, decoders and the whole model (npattention/seq2seq.py).

Tiny sizes with source padding; the whole model checks a random subset of entries
(``max_entries``) to stay fast.  ``eps=1e-5``: the loss of a whole model is a sum of many
terms, so the round-off of a smaller step would swamp the smallest gradients.
"""
from ..attention.scores import GeneralScore
from ..backend import xp
from ..gradcheck import Case, register
from ..seq2seq import BahdanauDecoder, Encoder, LocationDecoder, LuongDecoder, PlainDecoder, Seq2Seq

V = 7  # vocabulary size of every case
OPTS = {"eps": 1e-5}
SRC = xp.asarray([[4, 5, 2, 0], [5, 6, 6, 2]])  # second row is longer: padding in the first
SRC_LEN = xp.asarray([3, 4])
TGT_IN = xp.asarray([[1, 3, 4, 0], [1, 5, 6, 2]])
MASK = xp.asarray([[False, False, False, True], [False, False, False, False]])  # True = padding


@register("Encoder")
def encoder_cases(rng):
    yield Case(Encoder(V, 3, 4, cell="gru", bidirectional=True), (SRC,), kwargs={"lengths": SRC_LEN},
               label="bidirectional GRU, lengths [3, 4]", options=OPTS)
    yield Case(Encoder(V, 2, 3, cell="lstm"), (SRC[:, :3],), label="LSTM, no padding", options=OPTS)


def _decoder_inputs(rng, enc_dim, hidden, lstm):
    inputs = (TGT_IN, rng.normal((2, 4, enc_dim)), rng.normal((2, hidden)))
    return inputs + ((rng.normal((2, hidden)),) if lstm else ())


@register("BahdanauDecoder")
def bahdanau_cases(rng):
    yield Case(BahdanauDecoder(V, 3, 4, 5, attn_dim=3), _decoder_inputs(rng, 5, 4, False),
               kwargs={"src_mask": MASK}, label="GRU, masked source", options=OPTS)
    yield Case(BahdanauDecoder(V, 2, 3, 4, cell="lstm"), _decoder_inputs(rng, 4, 3, True),
               label="LSTM, h0 and c0", options=OPTS)


@register("LuongDecoder")
def luong_cases(rng):
    yield Case(LuongDecoder(V, 3, 4, 4, score="dot"), _decoder_inputs(rng, 4, 4, False),
               kwargs={"src_mask": MASK}, label="dot score, GRU, masked source", options=OPTS)
    yield Case(LuongDecoder(V, 2, 3, 5, score="general", cell="lstm"), _decoder_inputs(rng, 5, 3, True),
               kwargs={"src_mask": MASK}, label="general score, LSTM", options=OPTS)
    yield Case(LuongDecoder(V, 2, 3, 4, score="additive"), _decoder_inputs(rng, 4, 3, False),
               label="additive score (Luong's concat), GRU", options=OPTS)
    yield Case(LuongDecoder(V, 2, 3, 4, score=GeneralScore(3, 4)), _decoder_inputs(rng, 4, 3, False),
               kwargs={"src_mask": MASK}, label="attention-core GeneralScore plugged in", options=OPTS)


@register("LocationDecoder")
def location_cases(rng):
    yield Case(LocationDecoder(V, 3, 4, 5, max_len=6), _decoder_inputs(rng, 5, 4, False),
               kwargs={"src_mask": MASK}, label="GRU, S=4 < max_len=6, masked", options=OPTS)
    yield Case(LocationDecoder(V, 2, 3, 4, max_len=4, cell="lstm"), _decoder_inputs(rng, 4, 3, True),
               label="LSTM, S = max_len", options=OPTS)


@register("PlainDecoder")
def plain_cases(rng):
    yield Case(PlainDecoder(V, 3, 4, 5), _decoder_inputs(rng, 5, 4, False), label="GRU", options=OPTS)
    yield Case(PlainDecoder(V, 2, 3, 3, cell="lstm"), _decoder_inputs(rng, 3, 3, True), label="LSTM",
               options=OPTS)


@register("Seq2Seq")
def seq2seq_cases(rng):
    opts = dict(OPTS, max_entries=12)
    kw = {"src_lengths": SRC_LEN}
    yield Case(Seq2Seq(V, V, 3, 3, attention="bahdanau", bidirectional=True), (SRC, TGT_IN), kw,
               label="Bahdanau, bidirectional GRU encoder", options=opts)
    yield Case(Seq2Seq(V, V, 2, 3, attention="luong", score="general", cell="lstm", bidirectional=False),
               (SRC, TGT_IN), kw, label="Luong general, LSTM", options=opts)
    yield Case(Seq2Seq(V, V, 2, 2, attention="none", cell="lstm", bidirectional=True), (SRC, TGT_IN), kw,
               label="no attention, bidirectional LSTM", options=opts)
    yield Case(Seq2Seq(V, V, 2, 2, attention="luong", score="additive"), (SRC, TGT_IN), kw,
               label="Luong additive, bidirectional GRU", options=opts)
    yield Case(Seq2Seq(V, V, 2, 2, attention="location", max_src_len=5), (SRC, TGT_IN), kw,
               label="location-based attention, bidirectional GRU", options=opts)
