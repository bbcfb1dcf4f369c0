"""Cases for Nadaraya-Watson attention pooling (npattention/attention/kernel_regression.py)."""
from ..attention.kernel_regression import NadarayaWatson
from ..backend import xp
from ..gradcheck import Case, register


@register("NadarayaWatson")
def nadaraya_watson_cases(rng):
    yield Case(NadarayaWatson(0.7), (rng.normal((6,)), rng.normal((5,)), rng.normal((5,))),
               label="scalar values, learned bandwidth")
    mask = xp.eye(4, dtype=bool)[None]
    yield Case(NadarayaWatson(1.3), (rng.normal((2, 4)), rng.normal((2, 4)), rng.normal((2, 4, 3))),
               kwargs={"mask": mask}, label="batched, vector values, leave-one-out mask")
