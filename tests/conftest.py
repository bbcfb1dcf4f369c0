import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NPATTENTION_FAST", "1")
# pytest runs two workers (-n 2) on CI's two cores: one BLAS thread each.  OpenBLAS's default (a
# thread per core in every worker) oversubscribes the cores, and its spinning threads make the many
# small matrix products of the tests and notebooks many times slower.  Set before numpy is imported;
# the workers and the notebook kernels inherit it.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

from npattention import backend  # noqa: E402


@pytest.fixture
def rng():
    """A fresh seeded generator (same numbers on NumPy and CuPy)."""
    return backend.Generator(0)


@pytest.fixture(autouse=True)
def _seed_global():
    backend.manual_seed(0)
