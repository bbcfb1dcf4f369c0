"""Cases for truncated (band) attention (npattention/attention/band.py)."""
from ..attention.band import band_attention, band_attention_backward
from ..gradcheck import Case, FunctionModule, register


@register("band_attention")
def band_cases(rng):
    pair = FunctionModule(band_attention, band_attention_backward)
    yield Case(pair, (rng.normal((2, 2, 7, 4)), rng.normal((2, 2, 7, 4)), rng.normal((2, 2, 7, 3)), 2),
               kwargs={"key_padding_mask": rng.random((2, 1, 7)) > 0.7, "attn_mask": rng.random((7, 7)) > 0.8},
               label="(B, H, T, E), w=2, padding + attn_mask", options={"max_entries": 60})
    yield Case(FunctionModule(band_attention, band_attention_backward),
               (rng.normal((3, 6, 4)), rng.normal((3, 6, 4)), rng.normal((3, 6, 5)), 1),
               kwargs={"is_causal": True, "dropout_p": 0.3}, label="(B, T, E) w=1 causal, dropout")
    yield Case(FunctionModule(band_attention, band_attention_backward),
               (rng.normal((1, 4, 2)), rng.normal((1, 4, 2)), rng.normal((1, 4, 2)), 5),
               kwargs={"scale": 0.7}, label="band wider than the sequence, scale 0.7")
