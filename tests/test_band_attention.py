"""Band (truncated) attention: same numbers as the masked full version, O(T w) memory, LocalSelfAttention."""
import tracemalloc

import numpy as np
import pytest

from npattention.attention.band import (band_attention, band_attention_backward, band_key_mask, band_to_dense,
                                        dense_to_band)
from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from npattention.attention.self_attention import LocalSelfAttention, band_mask
from npattention.backend import Generator, to_numpy, xp
from npattention.masks import padding_mask


def H(a):
    return to_numpy(a)


@pytest.mark.parametrize("T, w", [(1, 0), (5, 0), (9, 1), (16, 3), (6, 2), (4, 7), (33, 5)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masks", ["none", "padding", "padding+attn"])
def test_band_equals_masked_full_forward_and_backward(T, w, causal, masks):
    rng = Generator(100 * T + w)
    B, Hh, E, Ev = 2, 2, 4, 3
    q, k, v = (rng.normal(s, dtype=xp.float64) for s in ((B, Hh, T, E), (B, Hh, T, E), (B, Hh, T, Ev)))
    kpm = am = None
    full_mask = band_mask(T, w)
    if masks != "none":
        kpm = padding_mask(xp.asarray([T, max(1, T - 3)]), T)[:, None, :]       # (B, 1, T)
        full_mask = full_mask | kpm[..., None, :]
    if masks == "padding+attn":
        am = rng.random((T, T)) > 0.7
        full_mask = full_mask | am
    (c, wb), cache = band_attention(q, k, v, w, key_padding_mask=kpm, attn_mask=am, is_causal=causal,
                                    need_weights=True)
    (c_full, w_full), cache_full = scaled_dot_product_attention(q, k, v, attn_mask=full_mask, is_causal=causal,
                                                                need_weights=True)
    assert c.dtype == np.float64 and wb.shape == (B, Hh, T, 2 * w + 1)
    np.testing.assert_allclose(H(c), H(c_full), rtol=0, atol=1e-12)
    np.testing.assert_allclose(H(band_to_dense(wb, w)), H(w_full), rtol=0, atol=1e-12)
    dout = rng.normal(c.shape, dtype=xp.float64)
    for g, g_full, name in zip(band_attention_backward(dout, cache),
                               scaled_dot_product_attention_backward(dout, cache_full), "qkv"):
        np.testing.assert_allclose(H(g), H(g_full), rtol=0, atol=1e-12, err_msg=f"d{name}")


def test_band_layout_helpers():
    m = H(band_key_mask(4, 1))
    np.testing.assert_array_equal(m, [[True, False, False], [False] * 3, [False] * 3, [False, False, True]])
    np.testing.assert_array_equal(H(band_key_mask(3, 1, is_causal=True))[:, 2], [True] * 3)
    dense = xp.asarray(np.arange(16.0).reshape(4, 4))
    band = H(dense_to_band(dense, 1))
    np.testing.assert_array_equal(band, [[0, 0, 1], [4, 5, 6], [9, 10, 11], [14, 15, 0]])
    inside = np.abs(np.subtract.outer(np.arange(4), np.arange(4))) <= 1
    np.testing.assert_array_equal(H(band_to_dense(xp.asarray(band), 1)), np.where(inside, H(dense), 0))


def test_band_memory_grows_as_T_w_not_T_squared():
    rng = Generator(0)
    w, E = 4, 8

    def peak(fn):
        tracemalloc.start()
        out, cache = fn()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    peaks = {}
    for T in (512, 1024):
        q, k, v = (rng.normal((1, T, E), dtype=xp.float64) for _ in range(3))
        mask = band_mask(T, w)
        peaks[T] = (peak(lambda: scaled_dot_product_attention(q, k, v, attn_mask=mask)),
                    peak(lambda: band_attention(q, k, v, w)))
    (full1, band1), (full2, band2) = peaks[512], peaks[1024]
    assert full2 > 8 * 1024 * 1024           # the full version holds T x T float64 scores
    assert full2 / full1 > 3.5                # doubling T: ~4x for the full version (T^2) ...
    assert band2 / band1 < 2.3                # ... ~2x for the band (T (2w + 1) scores, T E rows)
    assert band2 < full2 / 10, (band2, full2)


def test_local_self_attention_band_equals_masked(rng):
    band = LocalSelfAttention(8, 2, window=2, impl="band").double()
    masked = LocalSelfAttention(8, 2, window=2, impl="masked").double()
    for _, p in band.named_parameters():
        p.data[...] = rng.normal(p.shape, scale=0.5)
    masked.load_state_dict(band.state_dict())
    x = rng.normal((2, 11, 8), dtype=xp.float64)
    kpm = padding_mask(xp.asarray([11, 7]), 11)
    for causal in (False, True):
        out_b, w_b = band(x, key_padding_mask=kpm, is_causal=causal, average_attn_weights=False)
        out_m, w_m = masked(x, key_padding_mask=kpm, is_causal=causal, average_attn_weights=False)
        np.testing.assert_allclose(H(out_b), H(out_m), atol=1e-12)
        np.testing.assert_allclose(H(w_b), H(w_m), atol=1e-12)
        dout = rng.normal(out_b.shape, dtype=xp.float64)
        band.zero_grad()
        masked.zero_grad()
        np.testing.assert_allclose(H(band.backward(dout)), H(masked.backward(dout)), atol=1e-12)
        for (name, p), (_, p2) in zip(band.named_parameters(), masked.named_parameters()):
            np.testing.assert_allclose(H(p.grad), H(p2.grad), atol=1e-12, err_msg=name)
    am = rng.random((2 * 2, 11, 11)) > 0.8                        # PyTorch's (B*H, T, T) layout
    np.testing.assert_allclose(H(band(x, attn_mask=am)[0]), H(masked(x, attn_mask=am)[0]), atol=1e-12)
    with pytest.raises(ValueError, match="'attn_mask' must have shape"):
        band(x, attn_mask=xp.zeros((3, 11, 11), dtype=bool))
    _, wb = band(x, band_weights=True)
    assert wb.shape == (2, 11, 5)
    assert band(x, need_weights=False)[1] is None


def test_local_self_attention_auto_picks_band_only_when_narrower():
    m = LocalSelfAttention(4, 1, window=2)
    m(Generator(0).normal((1, 6, 4)))
    assert m._band
    m(Generator(0).normal((1, 5, 4)))
    assert not m._band


def test_band_errors(rng):
    q = rng.normal((2, 5, 4))
    with pytest.raises(ValueError, match="'window' must be an int >= 0, got -1"):
        band_attention(q, q, q, -1)
    with pytest.raises(ValueError, match="key"):
        band_attention(q, rng.normal((2, 6, 4)), q, 1)
    with pytest.raises(ValueError, match="'attn_mask' must end in \\(T, T\\)"):
        band_attention(q, q, q, 1, attn_mask=xp.zeros((5, 3), dtype=bool))
    with pytest.raises(ValueError, match="impl"):
        LocalSelfAttention(4, 1, window=1, impl="fast")
