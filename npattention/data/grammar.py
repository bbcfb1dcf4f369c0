"""Toy text for language models: sentences from a small probabilistic grammar, made in code.

The grammar (:data:`GRAMMAR`) writes lower-case English-like sentences such as
``"the small dogs chase a bird near the red tree ."`` or ``"anna sleeps ."``.  Nothing is
downloaded and no text is copied from elsewhere.  What a model must learn, from easy to hard:

* the spelling of about 40 words (a character bigram model already gets part of it);
* word order: determiner, optional adjective, noun, verb, object, optional phrase, ``.``;
* **number agreement** across words: a singular subject takes ``sees``/``sleeps``, a plural
  one ``see``/``sleep`` (``"the dogs sees"`` is rejected), and ``a``/``every`` only go with
  singular nouns, ``some``/``two`` only with plural ones.

:func:`accepts` is a recogniser for the same grammar (a small top-down parser over the
words), so the fraction of *generated* lines it accepts measures how much of the structure a
model has learnt.  :func:`make_grammar_text` makes the train/test text (one sentence per
line) and :func:`char_vocab` its character vocabulary.
"""
from ..backend import Generator
from .sequences import Vocab

__all__ = ["GRAMMAR", "sample_sentence", "make_grammar_text", "accepts", "char_vocab", "split_lines"]

#: nonterminal -> list of (weight, expansion); expansions are tuples of nonterminals
#: (upper case) and words.  Finite: the nesting is bounded (a PP's noun phrase has no PP).
GRAMMAR = {
    "S": [(1, ("NP_SG", "VP_SG", ".")), (1, ("NP_PL", "VP_PL", "."))],
    "NP_SG": [(3, ("DET_SG", "N_SG")), (2, ("DET_SG", "ADJ", "N_SG")), (1, ("NAME",))],
    "NP_PL": [(3, ("DET_PL", "N_PL")), (2, ("DET_PL", "ADJ", "N_PL"))],
    "NP": [(1, ("NP_SG",)), (1, ("NP_PL",))],
    "VP_SG": [(3, ("TV_SG", "NP")), (1, ("TV_SG", "NP", "PP")), (2, ("IV_SG",)), (1, ("IV_SG", "PP"))],
    "VP_PL": [(3, ("TV_PL", "NP")), (1, ("TV_PL", "NP", "PP")), (2, ("IV_PL",)), (1, ("IV_PL", "PP"))],
    "PP": [(1, ("P", "NP"))],
    "DET_SG": [(3, ("the",)), (2, ("a",)), (1, ("every",))],
    "DET_PL": [(3, ("the",)), (2, ("some",)), (1, ("two",))],
    "ADJ": [(1, ("small",)), (1, ("big",)), (1, ("red",)), (1, ("old",))],
    "N_SG": [(1, ("cat",)), (1, ("dog",)), (1, ("bird",)), (1, ("child",)), (1, ("tree",))],
    "N_PL": [(1, ("cats",)), (1, ("dogs",)), (1, ("birds",)), (1, ("children",)), (1, ("trees",))],
    "NAME": [(1, ("anna",)), (1, ("tom",))],
    "TV_SG": [(1, ("sees",)), (1, ("chases",)), (1, ("likes",))],
    "TV_PL": [(1, ("see",)), (1, ("chase",)), (1, ("like",))],
    "IV_SG": [(1, ("sleeps",)), (1, ("runs",))],
    "IV_PL": [(1, ("sleep",)), (1, ("run",))],
    "P": [(1, ("near",)), (1, ("with",)), (1, ("under",))],
}


def _expand(symbol, rng, out):
    if symbol not in GRAMMAR:
        out.append(symbol)
        return
    rules = GRAMMAR[symbol]
    weights = [w for w, _ in rules]
    total = float(sum(weights))
    choice = rng.choice(len(rules), p=[w / total for w in weights])
    for s in rules[choice][1]:
        _expand(s, rng, out)


def sample_sentence(rng):
    """One sentence (words joined by spaces, ending in ``" ."``) drawn with host generator ``rng``
    (a ``numpy.random.Generator``)."""
    words = []
    _expand("S", rng, words)
    return " ".join(words)


def make_grammar_text(n_lines, seed=0):
    """``n_lines`` sentences from the grammar, a list of strings (seeded, deterministic)."""
    rng = Generator(seed).host
    return [sample_sentence(rng) for _ in range(n_lines)]


def _parse(symbol, words, i):
    """Set of positions where ``symbol`` can end when it starts at word ``i`` (top-down)."""
    if symbol not in GRAMMAR:
        return {i + 1} if i < len(words) and words[i] == symbol else set()
    ends = set()
    for _, expansion in GRAMMAR[symbol]:
        positions = {i}
        for s in expansion:
            positions = {e for p in positions for e in _parse(s, words, p)}
            if not positions:
                break
        ends |= positions
    return ends


def accepts(line):
    """True if ``line`` (words separated by single spaces) is a sentence of :data:`GRAMMAR`."""
    words = line.split(" ")
    return len(words) in _parse("S", words, 0) and line == " ".join(words) and "" not in words


def char_vocab():
    """The character :class:`Vocab` of the grammar's text plus ``"\\n"`` (ends a line)."""
    chars = sorted({c for rules in GRAMMAR.values() for _, exp in rules for s in exp if s not in GRAMMAR
                    for c in s} | {" "})
    return Vocab("".join(chars) + "\n")


def split_lines(text):
    """Lines of generated text (split at ``"\\n"``), the last, unfinished one dropped."""
    return text.split("\n")[:-1]
