"""Toy data made in code, one home for every task (nothing is downloaded).

* :mod:`.sequences` -- character sequence tasks (copy, reverse, sort, dates), ``Vocab``, batching
* :mod:`.spiral`    -- the 2-D spiral classification problem
* :mod:`.glyphs`    -- glyph images on cluttered backgrounds (vision, spatial transformer)
* :mod:`.retrieval` -- find the key a disguised query points at (soft vs hard attention)
* :mod:`.periodic`  -- sequences repeating a random block (position codes, length generalisation)
* :mod:`.colour_pairs` -- boards where each coloured dot must find the pattern of its own colour
  (a query-dependent lookup for image self-attention)

New toy tasks get their own module here.
"""
from .glyphs import GLYPHS, make_glyphs
from .sequences import *  # noqa: F403  (the sequence tasks were ``npattention.data`` before it became a package)
from .sequences import __all__ as _sequences_all
from .spiral import make_spiral
from .retrieval import make_disguise, make_retrieval_batch
from .colour_pairs import make_colour_pairs

__all__ = list(_sequences_all) + ["make_spiral", "GLYPHS", "make_glyphs"] + ["make_disguise", "make_retrieval_batch"] \
    + ["make_colour_pairs"]
