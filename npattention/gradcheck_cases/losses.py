"""Cases for the loss functions (npattention/losses.py)."""
from ..backend import xp
from ..gradcheck import Case, register
from ..losses import CrossEntropyLoss, MSELoss


@register("CrossEntropyLoss")
def cross_entropy_cases(rng):
    yield Case(CrossEntropyLoss(), (rng.normal((4, 5)), xp.asarray([0, 4, 2, 2])), label="(4, 5) mean")
    yield Case(CrossEntropyLoss(ignore_index=0, label_smoothing=0.1),
               (rng.normal((2, 3, 6)), xp.asarray([[1, 0, 5], [3, 3, 0]])),
               label="(2, 3, 6) ignore_index=0, smoothing 0.1")
    yield Case(CrossEntropyLoss(reduction="sum", label_smoothing=0.3),
               (rng.normal((3, 4), scale=3.0), xp.asarray([3, -100, 1])), label="(3, 4) sum, one ignored")
    yield Case(CrossEntropyLoss(reduction="none"), (rng.normal((2, 2, 3)), xp.asarray([[0, 1], [2, -100]])),
               label="(2, 2, 3) none")
    w = rng.uniform((6,), 0.2, 3.0)
    yield Case(CrossEntropyLoss(weight=w, ignore_index=0, label_smoothing=0.2),
               (rng.normal((2, 3, 6)), xp.asarray([[1, 0, 5], [3, 3, 0]])), label="(2, 3, 6) weight, ignore, smoothing")
    yield Case(CrossEntropyLoss(weight=w[:4], reduction="none"), (rng.normal((3, 4)), xp.asarray([3, 0, 1])),
               label="(3, 4) weight, none")


@register("MSELoss")
def mse_cases(rng):
    # the target (position 1) is data, not differentiated
    yield Case(MSELoss(), (rng.normal((4, 5)), rng.normal((4, 5))), label="(4, 5) mean",
               options={"nondiff": (1,)})
    yield Case(MSELoss(reduction="sum"), (rng.normal((2, 3, 6)), rng.normal((2, 3, 6))), label="(2, 3, 6) sum",
               options={"nondiff": (1,)})
    yield Case(MSELoss(reduction="none"), (rng.normal((3, 2)), rng.normal((3, 2))), label="(3, 2) none",
               options={"nondiff": (1,)})
