"""Deprecated import path, kept for one release: use :mod:`npattention.data` (``make_spiral``)."""
from .data.spiral import make_spiral

__all__ = ["make_spiral"]
