"""Cases for the recurrent cells and layers (npattention/rnn.py): tiny sizes, with padding."""
from ..backend import xp
from ..gradcheck import Case, register
from ..rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell


@register("RNNCell")
def rnn_cell_cases(rng):
    yield Case(RNNCell(3, 4), (rng.normal((2, 3)), rng.normal((2, 4))), label="tanh, h given")
    yield Case(RNNCell(2, 3, nonlinearity="relu"), (rng.normal((4, 2)),), label="relu, h = 0")


@register("GRUCell")
def gru_cell_cases(rng):
    yield Case(GRUCell(3, 4), (rng.normal((2, 3)), rng.normal((2, 4))), label="(2, 3) -> 4, h given")
    yield Case(GRUCell(2, 3, bias=False), (rng.normal((3, 2)),), label="(3, 2) -> 3, no bias, h = 0")


@register("LSTMCell")
def lstm_cell_cases(rng):
    yield Case(LSTMCell(3, 4), (rng.normal((2, 3)), rng.normal((2, 4)), rng.normal((2, 4))),
               label="(2, 3) -> 4, h and c given")
    yield Case(LSTMCell(2, 3), (rng.normal((3, 2)),), label="(3, 2) -> 3, zero state")


def _sequence_cases(cls, rng, n_state):
    lengths = xp.asarray([5, 2, 3])
    h0 = tuple(rng.normal((1, 3, 4)) for _ in range(n_state))
    yield Case(cls(3, 4), (rng.normal((3, 5, 3)),) + h0, kwargs={"lengths": lengths},
               label="(3, 5, 3) -> 4, lengths [5, 2, 3], initial state given")
    mask = xp.asarray([[False, False, False, True], [False, False, False, False]])
    yield Case(cls(2, 3, bidirectional=True), (rng.normal((2, 4, 2)),), kwargs={"mask": mask},
               label="bidirectional (2, 4, 2) -> 2x3, padding mask")
    h0 = tuple(rng.normal((4, 2, 2)) for _ in range(n_state))
    yield Case(cls(2, 2, bidirectional=True, num_layers=2, dropout=0.3), (rng.normal((2, 3, 2)),) + h0,
               kwargs={"lengths": xp.asarray([3, 2])},
               label="2 layers, bidirectional, dropout 0.3, initial state given", options={"max_entries": 30})


@register("RNN")
def rnn_cases(rng):
    yield from _sequence_cases(RNN, rng, 1)


@register("GRU")
def gru_cases(rng):
    yield from _sequence_cases(GRU, rng, 1)


@register("LSTM")
def lstm_cases(rng):
    yield from _sequence_cases(LSTM, rng, 2)
