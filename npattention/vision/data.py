"""Deprecated import path, kept for one release: use :mod:`npattention.data.glyphs`."""
from ..data.glyphs import GLYPHS, make_glyphs

__all__ = ["GLYPHS", "make_glyphs"]
