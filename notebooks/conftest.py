"""Notebooks run under pytest (nbmake) in fast mode: small sizes, few training steps."""
import os

os.environ.setdefault("NPATTENTION_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
