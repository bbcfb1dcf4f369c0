import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NPATTENTION_FAST", "1")

import pytest  # noqa: E402

from npattention import backend  # noqa: E402


@pytest.fixture
def rng():
    """A fresh seeded generator (same numbers on NumPy and CuPy)."""
    return backend.Generator(0)


@pytest.fixture(autouse=True)
def _seed_global():
    backend.manual_seed(0)
