"""Cases for the decoder-only GPT (npattention/gpt.py): the whole model, every parameter
(a random subset of entries each), tied and untied output layer, left padding and dropout."""
from ..backend import xp
from ..gpt import GPT
from ..gradcheck import Case, register


@register("GPT")
def _gpt(rng):
    idx = xp.asarray([[4, 5, 6, 4, 7], [5, 7, 7, 6, 4]], dtype=xp.int64)
    yield Case(GPT(8, 6, n_layer=2, n_head=2, d_model=8), (idx,), label="2 blocks, tied weights",
               options={"max_entries": 12, "eps": 1e-5})
    left_padded = xp.asarray([[0, 0, 5, 6], [4, 6, 5, 7], [0, 7, 4, 4]], dtype=xp.int64)
    yield Case(GPT(8, 4, n_layer=1, n_head=3, d_model=6, dropout=0.1, tie_weights=False, pad_idx=0),
               (left_padded,), label="untied, left-padded batch, dropout",
               options={"max_entries": 12, "eps": 1e-5})
