"""Notebooks run under pytest (nbmake) in fast mode: small sizes, few training steps."""
import os

os.environ.setdefault("NPATTENTION_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS thread per pytest worker (two workers on two cores; see tests/conftest.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
