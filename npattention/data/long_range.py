"""The look-back task: the answer at the end of a sequence is the token ``d`` steps back.

Class notes 001/002 say self-attention handles long-range dependencies where a CNN (a local
n-gram reader) and an RNN (whose gradient must cross ``d`` steps) struggle.  This task makes
the distance ``d`` a knob::

    x = (x_0, ..., x_{T-1}),  x_t uniform in {0, ..., vocab - 1}
    y = x_{T-1-d}                      the token d positions before the last one

A model reads the whole sequence and answers at the last position; chance is ``1 / vocab``.
Everything else in the sequence is a distractor, so nothing but the token at distance ``d``
helps.
"""
from ..backend import Generator, xp

__all__ = ["make_lookback"]


def make_lookback(n, T=16, d=4, vocab=4, seed=0):
    """``(X (n, T) int64, y (n,) int64)`` with ``y = X[:, T - 1 - d]``; ``0 <= d < T``."""
    for name, v in (("n", n), ("T", T), ("vocab", vocab)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"make_lookback: '{name}' must be a positive int, got {v!r}")
    if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < T:
        raise ValueError(f"make_lookback: 'd' must be an int in [0, T) = [0, {T}), got {d!r}")
    X = xp.asarray(Generator(seed).host.integers(0, vocab, size=(n, T)), dtype=xp.int64)
    return X, X[:, T - 1 - d].copy()
