"""Synthetic data for the three task types of class note 002 (input: a sequence of vectors).

* :func:`make_tagging` -- **one label per vector** (the notes' part-of-speech example): a toy
  language whose ambiguous words ("saw", "book") take their tag from the word before them.
* :func:`make_keyword` -- **one label per sequence**: filler words with one keyword somewhere;
  the label is the keyword's class (a sentiment-like task, where attention pooling should find
  the keyword).
* The third type, **sequence to sequence**, uses the existing tasks of
  :func:`npattention.data.load_task` (e.g. ``"reverse"``).

Both return integer arrays on the active backend and the vocabulary / tag names for plots.
"""
from ..backend import Generator, np, xp

__all__ = ["TAGGING_WORDS", "TAGS", "make_tagging", "KEYWORD_WORDS", "make_keyword"]

#: the toy language: determiners, pronouns, nouns, verbs, and two ambiguous words
TAGGING_WORDS = ("the", "a", "I", "you", "dog", "cat", "runs", "sleeps", "saw", "book")
#: tags: D (determiner), P (pronoun), N (noun), V (verb)
TAGS = ("D", "P", "N", "V")
_FIXED = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2, 6: 3, 7: 3}      # word -> tag for unambiguous words


def _check_sizes(where, **values):
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{where}: '{name}' must be a positive int, got {v!r}")


def make_tagging(n, T=12, seed=0):
    """``(X (n, T), tags (n, T))``: words of :data:`TAGGING_WORDS`, tags of :data:`TAGS`.

    Unambiguous words have a fixed tag.  "saw" and "book" are a noun after a determiner
    ("the saw") and a verb otherwise ("I saw"), so a tagger must look one word back: a window
    of one neighbour is enough, a model reading a word alone cannot get them right.
    """
    _check_sizes("make_tagging", n=n, T=T)
    X = Generator(seed).host.integers(0, len(TAGGING_WORDS), size=(n, T))
    tags = X.copy()
    for w, t in _FIXED.items():
        tags[X == w] = t
    ambiguous = X >= 8
    prev = X.copy()
    prev[:, 1:] = X[:, :-1]
    prev[:, 0] = 2                                   # the first word has no determiner before it
    after_det = (prev == 0) | (prev == 1)
    tags[ambiguous & after_det] = 2                  # N
    tags[ambiguous & ~after_det] = 3                 # V
    return xp.asarray(X, dtype=xp.int64), xp.asarray(tags, dtype=xp.int64)


#: filler words (ids 0..5) and keywords (ids 6..11): class k has the keywords 6 + 2k and 7 + 2k
KEYWORD_WORDS = ("uh", "so", "then", "and", "it", "was", "good", "great", "bad", "awful", "odd", "weird")


def make_keyword(n, T=12, seed=0):
    """``(X (n, T), y (n,), where (n,))``: filler words with one keyword at a random position.

    ``y`` in ``{0, 1, 2}`` (positive / negative / strange) is the keyword's class; ``where`` is
    its position (for checking what attention pooling looks at).
    """
    _check_sizes("make_keyword", n=n, T=T)
    g = Generator(seed).host
    X = g.integers(0, 6, size=(n, T))
    y = g.integers(0, 3, size=n)
    where = g.integers(0, T, size=n)
    X[np.arange(n), where] = 6 + 2 * y + g.integers(0, 2, size=n)     # (host arrays until the end)
    return (xp.asarray(X, dtype=xp.int64), xp.asarray(y, dtype=xp.int64), xp.asarray(where, dtype=xp.int64))
