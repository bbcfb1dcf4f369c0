"""Tiled (FlashAttention-2 style) attention: same numbers as the default path, no (L, S) array."""
import tracemalloc

import numpy as np
import pytest

import npattention.attention.tiled as tiled_module
from npattention import backend
from npattention.attention.multihead import MultiheadAttention
from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from npattention.attention.tiled import (TiledAttentionCache, tiled_attention, tiled_attention_backward,
                                         tiled_dropout_mask)
from npattention.backend import to_numpy, xp
from npattention.gradcheck import check_function
from npattention.masks import causal_mask, padding_mask
from npattention.transformer import Transformer


def _normal(rng, *shape):
    return xp.asarray(rng.normal(size=shape))


def _both_paths(q, k, v, block_size, **kwargs):
    """Outputs and (dq, dk, dv) of the default and the tiled path for one upstream gradient."""
    ref, ref_cache = scaled_dot_product_attention(q, k, v, **kwargs)
    out, cache = tiled_attention(q, k, v, block_size=block_size, **kwargs)
    g = xp.asarray(np.random.default_rng(7).normal(size=ref.shape))
    return (ref, scaled_dot_product_attention_backward(g, ref_cache)), (out, tiled_attention_backward(g, cache))


def _max_diff(a, b):
    return float(np.max(np.abs(to_numpy(a) - to_numpy(b))))


BLOCKS = [1, 3, (4, 7), (5, 2), 16, 64]   # 3, (4, 7), (5, 2), 16 do not divide L = 13 or S = 19


def _case(name, rng):
    """(q, k, v, kwargs) for one mask/broadcast situation; L = 13, S = 19."""
    B, H, L, S, E, Ev = 2, 3, 13, 19, 8, 5
    q, k, v = _normal(rng, B, H, L, E), _normal(rng, B, H, S, E), _normal(rng, B, H, S, Ev)
    if name == "plain":
        return q, k, v, {}
    if name == "causal":
        return q, k, v, {"is_causal": True}
    if name == "padding":
        kpm = padding_mask(xp.asarray([19, 6]), S)[:, None, None, :]          # (B, 1, 1, S)
        return q, k, v, {"attn_mask": kpm}
    if name == "padding+causal":
        kpm = padding_mask(xp.asarray([11, 4]), S)[:, None, None, :]
        return q, k, v, {"attn_mask": kpm, "is_causal": True}
    if name == "per-head mask":
        mask = xp.asarray(rng.random((B, H, L, S)) > 0.6)
        mask[0, 1, 3] = True                                                  # a fully masked row
        return q, k, v, {"attn_mask": mask}
    if name == "broadcast heads":                                             # one k, v for every head
        return q, k[:, :1], v[:, :1], {"attn_mask": xp.asarray(rng.random((L, S)) > 0.5), "scale": 0.3}
    if name == "shared k, v":
        return q, k[0, 0], v[0, 0], {"is_causal": True}
    raise KeyError(name)


CASES = ["plain", "causal", "padding", "padding+causal", "per-head mask", "broadcast heads", "shared k, v"]


@pytest.mark.parametrize("block_size", BLOCKS)
@pytest.mark.parametrize("case", CASES)
def test_matches_default_path_float64(case, block_size):
    q, k, v, kwargs = _case(case, np.random.default_rng(0))
    (ref, ref_grads), (out, grads) = _both_paths(q, k, v, block_size, **kwargs)
    assert out.shape == ref.shape and out.dtype == xp.float64
    assert _max_diff(out, ref) <= 1e-12
    for name, g, r, x in zip("qkv", grads, ref_grads, (q, k, v)):
        assert g.shape == x.shape, name
        assert _max_diff(g, r) <= 1e-12, name


def test_results_do_not_depend_on_the_tile_size():
    q, k, v, kwargs = _case("padding+causal", np.random.default_rng(1))
    runs = []
    for block_size in BLOCKS + [(13, 19), (100, 1)]:
        out, cache = tiled_attention(q, k, v, block_size=block_size, **kwargs)
        runs.append((out, cache.lse) + tiled_attention_backward(xp.ones_like(out), cache))
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert _max_diff(a, b) <= 1e-13


def _logsumexp_of_full_scores(q, k, mask, scale):
    s = to_numpy(q) @ np.swapaxes(to_numpy(k), -1, -2) * scale
    s = np.where(to_numpy(mask), -np.inf, s)
    m = s.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):                    # log 0, -inf - -inf: masked rows
        lse = (m + np.log(np.exp(s - np.where(np.isfinite(m), m, 0)).sum(axis=-1, keepdims=True)))[..., 0]
    return lse


@pytest.mark.parametrize("block_size", [4, (3, 5)])
def test_lse_is_the_logsumexp_of_the_full_scores(block_size):
    rng = np.random.default_rng(2)
    q, k, v = _normal(rng, 2, 9, 6), _normal(rng, 2, 11, 6), _normal(rng, 2, 11, 3)
    q = q * 4.0                                       # large scores: the running max matters
    mask = xp.asarray(rng.random((2, 9, 11)) > 0.5)
    mask[1, 4] = True                                 # fully masked row: logsumexp of nothing = -inf
    _, cache = tiled_attention(q, k, v, attn_mask=mask, is_causal=True, block_size=block_size)
    full = mask | causal_mask(9, 11)
    expected = _logsumexp_of_full_scores(q, k, full, 1 / np.sqrt(6))
    got = to_numpy(cache.lse)
    assert got.shape == (2, 9)
    assert np.isneginf(got[1, 4]) and np.isneginf(expected[1, 4])
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    assert np.max(np.abs(got[finite] - expected[finite])) <= 1e-12
    # and exp(s - lse) gives the default path's weights exactly
    _, ref_cache = scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True)
    s = to_numpy(ref_cache.query) @ np.swapaxes(to_numpy(k), -1, -2)
    with np.errstate(invalid="ignore"):
        a = np.where(to_numpy(full), 0.0, np.exp(s - got[..., None]))
    a[1, 4] = 0.0
    assert np.max(np.abs(a - to_numpy(ref_cache.weights))) <= 1e-13


def test_fully_masked_rows_give_zeros_not_nan():
    rng = np.random.default_rng(3)
    q, k, v = _normal(rng, 1, 2, 6, 4), _normal(rng, 1, 2, 8, 4), _normal(rng, 1, 2, 8, 3)
    mask = xp.zeros((1, 2, 6, 8), dtype=bool)
    mask[0, 0, 2] = True                              # one row of head 0
    mask[0, 1] = True                                 # every row of head 1
    out, cache = tiled_attention(q, k, v, attn_mask=mask, block_size=3)
    dq, dk, dv = tiled_attention_backward(xp.ones_like(out), cache)
    for a in (out, dq, dk, dv):
        assert np.all(np.isfinite(to_numpy(a)))
    assert np.all(to_numpy(out[0, 0, 2]) == 0) and np.all(to_numpy(out[0, 1]) == 0)
    assert np.all(to_numpy(dq[0, 0, 2]) == 0) and np.all(to_numpy(dq[0, 1]) == 0)
    assert np.all(to_numpy(dk[0, 1]) == 0) and np.all(to_numpy(dv[0, 1]) == 0)
    assert np.any(to_numpy(out[0, 0, 3]) != 0)


def test_causal_skips_the_tiles_above_the_diagonal(monkeypatch):
    calls = []
    real = tiled_module._tile_scores
    monkeypatch.setattr(tiled_module, "_tile_scores", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(4)
    x = _normal(rng, 1, 8, 4)
    out, cache = tiled_attention(x, x, x, is_causal=True, block_size=2)    # 4 x 4 tiles
    assert len(calls) == 10                           # 4 + 3 + 2 + 1: the 6 tiles above the diagonal are skipped
    tiled_attention_backward(xp.ones_like(out), cache)
    assert len(calls) == 20
    calls.clear()
    tiled_attention(x, x, x, block_size=2)
    assert len(calls) == 16


@pytest.mark.parametrize("block_size", [(2, 3), 4])
def test_finite_difference_gradcheck(block_size):
    rng = backend.Generator(5)
    mask = rng.random((2, 1, 5, 6)) > 0.7
    report = check_function(tiled_attention, tiled_attention_backward,
                            (rng.normal((2, 2, 5, 3)), rng.normal((2, 2, 6, 3)), rng.normal((1, 2, 6, 4))),
                            kwargs={"attn_mask": mask, "is_causal": True, "block_size": block_size})
    assert report.passed, str(report)
    assert report.worst_rel_error < 1e-6, str(report)


def test_dropout_matches_a_dense_reference_and_is_tile_independent():
    rng = np.random.default_rng(6)
    q, k, v = _normal(rng, 2, 3, 10, 4), _normal(rng, 2, 3, 12, 4), _normal(rng, 2, 3, 12, 5)
    p = 0.25
    outs = []
    for block_size in (3, (4, 5), 64):
        backend.manual_seed(11)
        out, cache = tiled_attention(q, k, v, dropout_p=p, is_causal=True, block_size=block_size)
        outs.append(out)
    keep = tiled_dropout_mask(cache)
    assert keep.shape == (2, 3, 10, 12) and keep.dtype == bool
    assert abs(float(keep.mean()) - (1 - p)) < 0.05            # 720 draws
    for out in outs[1:]:
        assert _max_diff(out, outs[0]) <= 1e-13
    _, ref_cache = scaled_dot_product_attention(q, k, v, is_causal=True)          # weights before dropout
    dense = (to_numpy(ref_cache.weights) * to_numpy(keep) / (1 - p)) @ to_numpy(v)
    assert _max_diff(outs[0], dense) <= 1e-13
    # reproducible from the global seed; a new seed gives a new mask; eval mode: no dropout
    backend.manual_seed(11)
    again, _ = tiled_attention(q, k, v, dropout_p=p, is_causal=True, block_size=3)
    assert _max_diff(again, outs[0]) == 0
    backend.manual_seed(12)
    other, _ = tiled_attention(q, k, v, dropout_p=p, is_causal=True, block_size=3)
    assert _max_diff(other, outs[0]) > 1e-3
    ev, ev_cache = tiled_attention(q, k, v, dropout_p=p, is_causal=True, training=False)
    assert ev_cache.seed is None and tiled_dropout_mask(ev_cache) is None
    assert _max_diff(ev, ref_cache.context) <= 1e-12


def test_float32_stays_float32_and_close():
    rng = np.random.default_rng(8)
    q, k, v = (x.astype(xp.float32) for x in (_normal(rng, 2, 33, 16), _normal(rng, 2, 40, 16),
                                               _normal(rng, 2, 40, 16)))
    (ref, ref_grads), (out, grads) = _both_paths(q, k, v, (8, 16), is_causal=True)
    assert out.dtype == xp.float32 and all(g.dtype == xp.float32 for g in grads)
    assert _max_diff(out, ref) < 1e-5
    assert max(_max_diff(g, r) for g, r in zip(grads, ref_grads)) < 1e-4


@pytest.mark.parametrize("bias_shape", [(2, 3, 13, 19), (3, 13, 19), (13, 1), (19,)])
def test_additive_bias_and_its_gradient_match_default(bias_shape):
    rng = np.random.default_rng(13)
    q, k, v, kwargs = _case("padding+causal", rng)
    bias = _normal(rng, *bias_shape)
    ref, ref_cache = scaled_dot_product_attention(q, k, v, attn_bias=bias, **kwargs)
    out, cache = tiled_attention(q, k, v, attn_bias=bias, block_size=(4, 7), **kwargs)
    g = _normal(rng, *ref.shape)
    ref_grads = scaled_dot_product_attention_backward(g, ref_cache)
    grads = tiled_attention_backward(g, cache)
    assert len(grads) == 4 and grads[3].shape == bias.shape
    assert _max_diff(out, ref) <= 1e-12
    for a, b in zip(grads, ref_grads):
        assert _max_diff(a, b) <= 1e-12
    # a float attn_mask is the same additive bias (PyTorch's semantics), as in the default path
    out2, _ = tiled_attention(q, k, v, attn_mask=bias, is_causal=True, block_size=5)
    ref2, _ = scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=True)
    assert _max_diff(out2, ref2) <= 1e-12


# ------------------------------------------------------------------ memory: no (L, S) array
def _peak_bytes(step):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_no_array_of_the_score_matrix_size_is_allocated():
    """Forward + backward at L = S = 2048 with one head: an (L, S) float64 array would be 32 MiB and
    even a boolean one 4 MiB; the tiled path must stay under 2 MiB in all (the default path does not)."""
    L = S = 2048
    rng = np.random.default_rng(9)
    q, k, v = _normal(rng, 1, L, 8), _normal(rng, 1, S, 8), _normal(rng, 1, S, 8)
    g = xp.ones((1, L, 8))
    bound = L * S // 2                                  # half of a *boolean* (L, S) array, in bytes

    def tiled():
        out, cache = tiled_attention(q, k, v, is_causal=True, block_size=128)
        tiled_attention_backward(g, cache)

    def default():
        out, cache = scaled_dot_product_attention(q, k, v, is_causal=True)
        scaled_dot_product_attention_backward(g, cache)

    assert _peak_bytes(tiled) < bound
    assert _peak_bytes(default) > 8 * bound          # the check can fail: the default path trips it


# ------------------------------------------------------------------ the switch in MultiheadAttention
def _mha_run(mha, inputs, grad, **kwargs):
    mha.zero_grad()
    out, w = mha(*inputs, **kwargs)
    grads = mha.backward(grad)
    return out, w, grads, {n: p.grad.copy() for n, p in mha.named_parameters()}


@pytest.mark.parametrize("block_size", [3, (2, 5)])
def test_multihead_switch_matches_default(block_size):
    rng = np.random.default_rng(10)
    backend.manual_seed(0)
    mha = MultiheadAttention(12, 3, kdim=7, vdim=5).double()
    for n, p in mha.named_parameters():
        if n.endswith("bias"):
            p.data[...] = xp.asarray(rng.normal(size=p.shape))
    B, L, S = 2, 9, 11
    inputs = (_normal(rng, B, L, 12), _normal(rng, B, S, 7), _normal(rng, B, S, 5))
    grad = _normal(rng, B, L, 12)
    kwargs = {"key_padding_mask": padding_mask(xp.asarray([11, 4]), S), "is_causal": True,
              "attn_mask": xp.asarray(rng.random((B, 3, L, S)) > 0.8)}
    ref = _mha_run(mha, inputs, grad, **kwargs)
    mha.block_size = block_size
    got = _mha_run(mha, inputs, grad, **kwargs)
    assert isinstance(mha.cache[3], TiledAttentionCache)
    assert got[1] is None                                   # the tiled path never forms the weights
    assert _max_diff(got[0], ref[0]) <= 1e-12
    for a, b in zip(got[2], ref[2]):
        assert _max_diff(a, b) <= 1e-12
    assert ref[3].keys() == got[3].keys()
    for n in ref[3]:
        assert _max_diff(got[3][n], ref[3][n]) <= 1e-12, n
    assert f"block_size={block_size}" in repr(mha)


@pytest.mark.parametrize("positional", ["rope", "alibi", "relative"])
def test_multihead_switch_with_positions_matches_default(positional):
    rng = np.random.default_rng(14)
    backend.manual_seed(0)
    mha = MultiheadAttention(8, 2, positional=positional).double()
    x, grad = _normal(rng, 2, 10, 8), _normal(rng, 2, 10, 8)
    ref = _mha_run(mha, (x, x, x), grad, is_causal=True)
    mha.block_size = (3, 4)
    got = _mha_run(mha, (x, x, x), grad, is_causal=True)
    assert _max_diff(got[0], ref[0]) <= 1e-12
    for a, b in zip(got[2], ref[2]):
        assert _max_diff(a, b) <= 1e-12
    for n in ref[3]:
        assert _max_diff(got[3][n], ref[3][n]) <= 1e-12, n


def test_transformer_pass_through_matches_default():
    rng = np.random.default_rng(11)
    src = xp.asarray(rng.integers(3, 12, size=(2, 7)))
    tgt = xp.asarray(rng.integers(3, 12, size=(2, 6)))
    src[1, 5:] = 0                                          # padding (pad_idx = 0)
    models = []
    for attn_block_size in (None, 4):
        backend.manual_seed(3)
        m = Transformer(12, 12, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                        dim_feedforward=32, dropout=0.0, attn_block_size=attn_block_size).double()
        models.append(m)
    assert models[1].encoder.layers[0].self_attn.block_size == 4
    assert models[1].decoder.layers[0].multihead_attn.block_size == 4
    assert models[1].config["attn_block_size"] == 4
    grad = _normal(rng, 2, 6, 12)
    results = []
    for m in models:
        logits = m(src, tgt)
        m.backward(grad)
        results.append((logits, {n: p.grad for n, p in m.named_parameters()}))
    assert _max_diff(results[1][0], results[0][0]) <= 1e-12
    for n, g in results[0][1].items():
        assert _max_diff(results[1][1][n], g) <= 1e-12, n


def test_gpt_blocks_switched_to_tiled_match_default():
    from npattention.gpt import GPT

    rng = np.random.default_rng(15)
    ids = xp.asarray(rng.integers(0, 10, size=(2, 9)))
    grad = _normal(rng, 2, 9, 10)
    results = []
    for block_size in (None, 4):
        backend.manual_seed(0)
        model = GPT(10, 16, n_layer=2, n_head=2, d_model=8).double()
        for block in model.blocks:
            block.self_attn.block_size = block_size
        logits = model(ids)
        model.backward(grad)
        results.append((logits, {n: p.grad.copy() for n, p in model.named_parameters()}))
    assert _max_diff(results[1][0], results[0][0]) <= 1e-12
    for n, g in results[0][1].items():
        assert _max_diff(results[1][1][n], g) <= 1e-12, n


# ------------------------------------------------------------------ errors
def test_bad_arguments_get_clear_errors():
    rng = np.random.default_rng(12)
    q, k, v = _normal(rng, 2, 4, 3), _normal(rng, 2, 5, 3), _normal(rng, 2, 5, 2)
    with pytest.raises(ValueError, match="need_weights"):
        tiled_attention(q, k, v, need_weights=True)
    for bad in (0, -2, 2.5, (2, 3, 4), (2, 0), "8"):
        with pytest.raises(ValueError, match="block_size"):
            tiled_attention(q, k, v, block_size=bad)
    with pytest.raises(ValueError, match="attn_mask.*does not broadcast"):
        tiled_attention(q, k, v, attn_mask=xp.zeros((4, 6), dtype=bool))
    with pytest.raises(ValueError, match="dropout_p"):
        tiled_attention(q, k, v, dropout_p=1.0)
    with pytest.raises(ValueError, match="key"):
        tiled_attention(q, _normal(rng, 2, 5, 4), v)
    with pytest.raises(ValueError, match="MultiheadAttention.*block_size"):
        MultiheadAttention(4, 2, block_size=0)
    out, cache = tiled_attention(q, k, v)
    with pytest.raises(ValueError, match="attn_bias"):
        tiled_attention(q, k, v, attn_bias=xp.zeros((4, 6)))
    with pytest.raises(ValueError, match="pass one"):
        tiled_attention(q, k, v, attn_mask=xp.zeros((4, 5)), attn_bias=xp.zeros((4, 5)))
    with pytest.raises(ValueError, match="grad_output"):
        tiled_attention_backward(xp.ones((2, 4, 3)), cache)
