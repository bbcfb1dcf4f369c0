"""A periodic-sequence task for position codes: each sequence repeats a random block.

``make_periodic(n, length, period=5, vocab_size=8)`` -> ids ``(n, length)``: a block of
``period`` random tokens from ``1 .. vocab_size - 1`` (0 is left free for padding), repeated
to the length.  Trained as a language model (predict token ``t + 1`` from tokens
``0..t``), every token from position ``period`` on is exactly predictable -- it equals the
token ``period`` places back -- while the first ``period`` tokens are pure chance.  Tokens
may repeat inside a block, so "find the previous occurrence of this token" does not solve
it: the model has to look a fixed *distance* back, which is what position codes are for.
The length-generalisation experiment (npattention/demos/length_generalisation.py) trains
on short sequences and tests on long ones.
"""
from ..backend import get_rng, xp
from ..validate import check_positive_int

__all__ = ["make_periodic"]


def make_periodic(n, length, period=5, vocab_size=8, rng=None):
    """``(n, length)`` int64 ids: a random block of ``period`` tokens in ``[1, vocab_size)``, repeated."""
    for name, value in (("n", n), ("length", length), ("period", period), ("vocab_size", vocab_size)):
        check_positive_int(value, name, "make_periodic")
    if vocab_size < 2:
        raise ValueError(f"make_periodic: 'vocab_size' must be at least 2 (0 is padding), got {vocab_size}")
    rng = get_rng() if rng is None else rng
    block = rng.integers(1, vocab_size, size=(n, period)).astype(xp.int64)
    return xp.tile(block, (1, -(-length // period)))[:, :length]
