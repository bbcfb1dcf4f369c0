"""npattention: attention mechanisms in NumPy, with hand-written backward passes.

Start with ``docs/contract.md`` and ``notebooks/README.md``.
"""
from .backend import BACKEND, get_rng, manual_seed, to_numpy, xp
from .gradcheck import check_function, gradcheck
from .layers import Linear
from .module import Module, Parameter, Sequential

__version__ = "0.1.0"
