"""Scaled dot-product attention, MultiheadAttention and the self/cross/causal/local wrappers."""
import math

import numpy as np
import pytest

from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from npattention.attention.multihead import MultiheadAttention
from npattention.attention.self_attention import (
    CausalSelfAttention,
    CrossAttention,
    LocalSelfAttention,
    SelfAttention,
    band_mask,
)
from npattention.backend import to_numpy, xp
from npattention.masks import causal_mask, padding_mask
from npattention.softmax import softmax
from npattention.gradcheck import check_function


def H(a):  # to host
    return to_numpy(a)


def _randomise(module, rng):
    for _, p in module.named_parameters():
        p.data[...] = rng.normal(p.shape, scale=0.5)
    return module


# ------------------------------------------------------------------ a direct reference
def reference_mha(m, query, key, value, mask=None):
    """Multi-head attention written the slow, obvious way: one head at a time, on the host."""
    E, Hh, D = m.embed_dim, m.num_heads, m.head_dim
    params = {n: H(p.data).astype(np.float64) for n, p in m.named_parameters()}
    if m._qkv_same_embed_dim:
        Wq, Wk, Wv = np.split(params["in_proj_weight"], 3)
    else:
        Wq, Wk, Wv = params["q_proj_weight"], params["k_proj_weight"], params["v_proj_weight"]
    bq, bk, bv = np.split(params.get("in_proj_bias", np.zeros(3 * E)), 3)
    q, k, v = H(query) @ Wq.T + bq, H(key) @ Wk.T + bk, H(value) @ Wv.T + bv
    B, L, S = q.shape[0], q.shape[1], k.shape[1]
    heads, maps = [], []
    for h in range(Hh):  # the per-head loop is fine in a test: it is the definition
        sl = slice(h * D, (h + 1) * D)
        scores = q[:, :, sl] @ k[:, :, sl].transpose(0, 2, 1) / math.sqrt(D)
        if mask is not None:
            scores = np.where(np.broadcast_to(H(mask), (B, Hh, L, S))[:, h], -np.inf, scores)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        heads.append(w @ v[:, :, sl])
        maps.append(w)
    out = np.concatenate(heads, -1) @ params["out_proj.weight"].T + params.get("out_proj.bias", 0.0)
    return out, np.stack(maps, 1)


@pytest.mark.parametrize("kdim,vdim,heads", [(None, None, 1), (None, None, 4), (3, 5, 2)])
def test_matches_reference_implementation(rng, kdim, vdim, heads):
    m = _randomise(MultiheadAttention(8, heads, kdim=kdim, vdim=vdim), rng)
    q, k, v = rng.normal((2, 4, 8)), rng.normal((2, 6, kdim or 8)), rng.normal((2, 6, vdim or 8))
    kpm = padding_mask(xp.asarray([6, 3]), 6)
    out, w = m(q, k, v, key_padding_mask=kpm, average_attn_weights=False)
    ref_out, ref_w = reference_mha(m, q, k, v, mask=kpm[:, None, None, :])
    np.testing.assert_allclose(H(out), ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(H(w), ref_w, rtol=1e-4, atol=1e-6)
    assert out.dtype == xp.float32 and w.dtype == xp.float32  # no float64 upcast


def test_fused_self_attention_path_equals_separate_inputs(rng):
    m = _randomise(MultiheadAttention(8, 2), rng)
    x = rng.normal((2, 5, 8)).astype(xp.float64)
    m.double()
    out_fused, _ = m(x, x, x)
    g = rng.normal(out_fused.shape, dtype=xp.float64)
    m.zero_grad()
    grads_fused = m.backward(g)
    pgrads_fused = [p.grad.copy() for p in m.parameters()]
    out_sep, _ = m(x, x.copy(), x.copy())
    m.zero_grad()
    grads_sep = m.backward(g)
    np.testing.assert_allclose(H(out_fused), H(out_sep), rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_fused + tuple(pgrads_fused), grads_sep + tuple(p.grad for p in m.parameters())):
        np.testing.assert_allclose(H(a), H(b), rtol=1e-10, atol=1e-12)


def test_self_attention_backward_is_sum_of_three_gradients(rng):
    sa = _randomise(SelfAttention(6, 3), rng).double()
    x = rng.normal((2, 4, 6), dtype=xp.float64)
    out, _ = sa(x)
    g = rng.normal(out.shape, dtype=xp.float64)
    dx = sa.backward(g)
    dq, dk, dv = sa.attn.backward(g)
    np.testing.assert_allclose(H(dx), H(dq + dk + dv))
    assert float(xp.abs(dk).max()) > 1e-3 and float(xp.abs(dv).max()) > 1e-3  # all three contribute


# ------------------------------------------------------------------ SDPA pair
def test_sdpa_pair_passes_check_function(rng):
    q, k, v = rng.normal((2, 3, 4, 5)), rng.normal((2, 3, 6, 5)), rng.normal((2, 3, 6, 7))
    mask = rng.random((2, 1, 4, 6)) > 0.6
    report = check_function(scaled_dot_product_attention, scaled_dot_product_attention_backward, (q, k, v),
                            {"attn_mask": mask, "is_causal": True, "dropout_p": 0.2}, max_entries=50)
    assert report.passed and report.worst_rel_error < 1e-5, str(report)


def test_inplace_softmax_equals_functional_softmax(rng):
    scores = rng.normal((2, 3, 4, 6), scale=30.0)  # large logits: stability matters
    mask = rng.random((2, 1, 4, 6)) > 0.6
    mask[0, 0, 1] = True                            # one fully masked row
    expected = H(softmax(scores, mask=mask))
    got = softmax(s1 := scores.copy(), mask=mask, out=s1)
    np.testing.assert_allclose(H(got), expected, rtol=1e-6, atol=1e-7)
    assert np.all(H(got)[0, :, 1] == 0) and np.all(H(got)[np.broadcast_to(H(mask), got.shape)] == 0)
    np.testing.assert_allclose(H(softmax(s2 := scores.copy(), out=s2)), H(softmax(scores)), rtol=1e-6, atol=1e-7)


def test_sdpa_three_steps_and_weights(rng):
    q, k, v = rng.normal((3, 4)), rng.normal((5, 4)), rng.normal((5, 2))
    (ctx, w), cache = scaled_dot_product_attention(q, k, v, need_weights=True)
    scores = H(q) @ H(k).T / 2.0  # sqrt(E) = 2
    ref_w = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    np.testing.assert_allclose(H(w), ref_w, rtol=1e-5)
    np.testing.assert_allclose(H(ctx), ref_w @ H(v), rtol=1e-5, atol=1e-6)
    assert cache.weights is w


def test_sdpa_fully_masked_row_gives_zeros_not_nan(rng):
    q, k, v = rng.normal((2, 3, 4)), rng.normal((2, 3, 4)), rng.normal((2, 3, 4))
    mask = xp.zeros((3, 3), dtype=bool)
    mask[1] = True  # query 1 may attend to nothing
    (ctx, w), cache = scaled_dot_product_attention(q, k, v, attn_mask=mask, need_weights=True)
    assert np.all(H(w)[:, 1] == 0) and np.all(H(ctx)[:, 1] == 0)
    dq, dk, _ = scaled_dot_product_attention_backward(xp.ones_like(ctx), cache)
    assert np.all(H(dq)[:, 1] == 0) and np.isfinite(H(dk)).all()


def test_sdpa_dropout_train_vs_eval(rng):
    q, k, v = rng.normal((2, 6, 4)), rng.normal((2, 6, 4)), rng.normal((2, 6, 4))
    plain, _ = scaled_dot_product_attention(q, k, v)
    evald, _ = scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=False)
    trained, cache = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    np.testing.assert_array_equal(H(plain), H(evald))
    assert not np.allclose(H(plain), H(trained))
    keep = H(cache.keep)
    assert 0.3 < keep.mean() < 0.7
    np.testing.assert_allclose(H(cache.attn), H(cache.weights) * keep * 2.0, rtol=1e-6)


def test_sdpa_errors(rng):
    q = rng.normal((2, 3, 4))
    with pytest.raises(ValueError, match="'key' must have shape"):
        scaled_dot_product_attention(q, rng.normal((2, 5, 3)), rng.normal((2, 5, 3)))
    with pytest.raises(ValueError, match="'value' must have shape"):
        scaled_dot_product_attention(q, q, rng.normal((2, 4, 4)))
    with pytest.raises(TypeError, match="'attn_mask' must be a bool array"):   # (a float mask is a bias)
        scaled_dot_product_attention(q, q, q, attn_mask=xp.zeros((3, 3), dtype=xp.int64))
    with pytest.raises(ValueError, match="does not broadcast"):
        scaled_dot_product_attention(q, q, q, attn_mask=xp.zeros((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="do not broadcast"):
        scaled_dot_product_attention(q, rng.normal((3, 3, 4)), rng.normal((3, 3, 4)))
    with pytest.raises(ValueError, match="dropout_p"):
        scaled_dot_product_attention(q, q, q, dropout_p=1.0)


# ------------------------------------------------------------------ properties
def test_causal_outputs_ignore_the_future(rng):
    m = _randomise(CausalSelfAttention(8, 2), rng)
    x = rng.normal((2, 6, 8))
    out, w = m(x)
    assert np.all(H(w)[:, np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]] == 0)
    for t in range(6):
        x2 = x.copy()
        x2[:, t + 1:] += rng.normal(x2[:, t + 1:].shape)
        out2, _ = m(x2)
        np.testing.assert_allclose(H(out2)[:, :t + 1], H(out)[:, :t + 1], rtol=0, atol=1e-6)
        if t < 5:
            assert not np.allclose(H(out2)[:, t + 1:], H(out)[:, t + 1:])
    # and backward: the gradient of past outputs never reaches future inputs
    m(x)
    g = xp.zeros_like(out)
    g[:, :3] = rng.normal((2, 3, 8))
    dx = m.backward(g)
    assert np.all(H(dx)[:, 3:] == 0) and np.abs(H(dx)[:, :3]).min() > 0


def test_is_causal_equals_explicit_causal_mask(rng):
    m = _randomise(MultiheadAttention(8, 2), rng)
    x = rng.normal((2, 5, 8))
    a, wa = m(x, x, x, is_causal=True)
    b, wb = m(x, x, x, attn_mask=causal_mask(5))
    np.testing.assert_array_equal(H(a), H(b))
    np.testing.assert_array_equal(H(wa), H(wb))


def test_self_attention_without_positions_is_permutation_equivariant(rng):
    m = _randomise(SelfAttention(8, 4), rng)
    x = rng.normal((2, 7, 8))
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    out, w = m(x)
    out_p, w_p = m(x[:, xp.asarray(perm)])
    np.testing.assert_allclose(H(out_p), H(out)[:, perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(H(w_p), H(w)[:, perm][:, :, perm], rtol=1e-5, atol=1e-7)


def test_padded_keys_get_zero_weight_and_do_not_matter(rng):
    m = _randomise(MultiheadAttention(8, 2), rng)
    lengths = xp.asarray([6, 4, 2])
    kpm = padding_mask(lengths, 6)
    q, kv = rng.normal((3, 5, 8)), rng.normal((3, 6, 8))
    out, w = m(q, kv, kv, key_padding_mask=kpm, average_attn_weights=False)
    w = H(w)
    for b, n in enumerate(H(lengths)):
        assert np.all(w[b, :, :, n:] == 0)                   # exactly zero, every head and query
        np.testing.assert_allclose(w[b, :, :, :n].sum(-1), 1.0, rtol=1e-5)
    kv2 = kv.copy()
    kv2[xp.asarray(H(kpm))] = 1e3                             # garbage in the padded slots
    out2, _ = m(q, kv2, kv2, key_padding_mask=kpm)
    np.testing.assert_array_equal(H(out2), H(out))
    # the padded keys' inputs get no gradient
    m(q, kv, kv.copy(), key_padding_mask=kpm)
    _, dk, dv = m.backward(rng.normal(out.shape))
    assert np.all(H(dk)[H(kpm)] == 0) and np.all(H(dv)[H(kpm)] == 0)


def test_padded_batch_self_attention_matches_unpadded_sequences(rng):
    m = _randomise(SelfAttention(8, 2), rng)
    x = rng.normal((2, 5, 8))
    out, _ = m(x, key_padding_mask=padding_mask(xp.asarray([5, 3]), 5))
    alone, _ = m(x[1:, :3].copy())
    np.testing.assert_allclose(H(out)[1, :3], H(alone)[0], rtol=1e-5, atol=1e-6)


def test_local_window_is_respected(rng):
    T, window = 7, 2
    m = _randomise(LocalSelfAttention(8, 2, window=window), rng)
    _, w = m(rng.normal((2, T, 8)), average_attn_weights=False)
    i, j = np.indices((T, T))
    inside = np.abs(i - j) <= window
    assert np.all(H(w)[..., ~inside] == 0) and np.all(H(w)[..., inside] > 0)
    np.testing.assert_array_equal(H(band_mask(T, window)), ~inside)
    # a window covering the whole sequence is plain self-attention
    full = LocalSelfAttention(8, 2, window=T - 1)
    plain = SelfAttention(8, 2)
    plain.load_state_dict(full.state_dict())
    x = rng.normal((1, T, 8))
    np.testing.assert_array_equal(H(full(x)[0]), H(plain(x)[0]))


def test_cross_attention_shapes_and_gradients(rng):
    m = _randomise(CrossAttention(8, 2, enc_dim=6), rng)
    dec, enc = rng.normal((2, 3, 8)), rng.normal((2, 5, 6))
    out, w = m(dec, enc)
    assert out.shape == (2, 3, 8) and w.shape == (2, 3, 5)
    d_dec, d_enc = m.backward(rng.normal(out.shape))
    assert d_dec.shape == dec.shape and d_enc.shape == enc.shape


def test_weights_shapes_and_head_average(rng):
    m = _randomise(MultiheadAttention(12, 3), rng)
    q, k = rng.normal((2, 4, 12)), rng.normal((2, 5, 12))
    _, per_head = m(q, k, k, average_attn_weights=False)
    _, avg = m(q, k, k)
    _, none = m(q, k, k, need_weights=False)
    assert per_head.shape == (2, 3, 4, 5) and avg.shape == (2, 4, 5) and none is None
    np.testing.assert_allclose(H(avg), H(per_head).mean(1), rtol=1e-6)
    np.testing.assert_allclose(H(per_head).sum(-1), 1.0, rtol=1e-5)
    assert not np.allclose(H(per_head)[:, 0], H(per_head)[:, 1])  # heads differ


def test_attn_mask_layouts_agree(rng):
    m = _randomise(MultiheadAttention(8, 2), rng)
    q, k = rng.normal((2, 3, 8)), rng.normal((2, 4, 8))
    mask4 = rng.random((2, 2, 3, 4)) > 0.5
    a, _ = m(q, k, k, attn_mask=mask4)
    b, _ = m(q, k, k, attn_mask=mask4.reshape(4, 3, 4))  # PyTorch's (B*H, L, S)
    np.testing.assert_array_equal(H(a), H(b))
    c, _ = m(q, k, k, attn_mask=mask4[:1, :1, :, :].reshape(3, 4))
    d, _ = m(q, k, k, attn_mask=mask4[:1, :1])
    np.testing.assert_array_equal(H(c), H(d))


def test_dropout_only_in_training(rng):
    m = _randomise(MultiheadAttention(8, 2, dropout=0.5), rng)
    x = rng.normal((2, 6, 8))
    train_out, train_w = m(x, x, x)
    m.eval()
    eval_out, eval_w = m(x, x, x)
    ref, _ = reference_mha(m, x, x, x)
    np.testing.assert_allclose(H(eval_out), ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(H(train_out), H(eval_out))
    np.testing.assert_allclose(H(train_w), H(eval_w), rtol=1e-6)  # weights are reported before dropout


def test_state_dict_names_follow_pytorch():
    assert set(MultiheadAttention(8, 2).state_dict()) == {
        "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}
    assert set(MultiheadAttention(8, 2, kdim=3, vdim=5, bias=False).state_dict()) == {
        "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"}


# ------------------------------------------------------------------ errors
def test_constructor_errors():
    with pytest.raises(ValueError, match="'embed_dim' \\(10\\) must be divisible by 'num_heads' \\(4\\)"):
        MultiheadAttention(10, 4)
    with pytest.raises(ValueError, match="'num_heads' must be a positive int"):
        MultiheadAttention(8, 0)
    with pytest.raises(ValueError, match="'dropout'"):
        MultiheadAttention(8, 2, dropout=1.5)
    with pytest.raises(ValueError, match="'window' must be an int >= 0"):
        LocalSelfAttention(8, 2, window=-1)


def test_forward_errors(rng):
    m = MultiheadAttention(8, 2, kdim=4)
    q, k, v = rng.normal((2, 3, 8)), rng.normal((2, 5, 4)), rng.normal((2, 5, 8))
    with pytest.raises(ValueError, match="'key' must have shape \\(B, S, 4\\)"):
        m(q, v, v)
    with pytest.raises(ValueError, match="'value' must have shape \\(B, S, 8\\) with B=2"):
        m(q, k, rng.normal((3, 5, 8)))
    with pytest.raises(ValueError, match="'value' must have shape"):
        m(q, k, rng.normal((2, 4, 8)))
    with pytest.raises(ValueError, match="'query' must have shape \\(B, L, 8\\)"):
        m(q[0], k, v)  # batch-first (B, T, E) always
    with pytest.raises(TypeError, match="'query' must be a float array, got dtype int"):
        m(xp.ones((2, 3, 8), dtype=xp.int64), k, v)
    with pytest.raises(TypeError, match="'key_padding_mask' must be a bool array"):
        m(q, k, v, key_padding_mask=xp.zeros((2, 5)))
    with pytest.raises(ValueError, match="'key_padding_mask' must have shape \\(2, 5\\)"):
        m(q, k, v, key_padding_mask=xp.zeros((2, 3), dtype=bool))
    with pytest.raises(ValueError, match="'attn_mask' must have shape \\(L, S\\) = \\(3, 5\\)"):
        m(q, k, v, attn_mask=xp.zeros((5, 3), dtype=bool))
    with pytest.raises(ValueError, match="'attn_mask'"):
        m(q, k, v, attn_mask=xp.zeros((3, 3, 5), dtype=bool))
    with pytest.raises(TypeError, match="'attn_mask' must be a bool array"):   # (a float mask is a bias)
        m(q, k, v, attn_mask=xp.zeros((3, 5), dtype=xp.int64))
    with pytest.raises(RuntimeError, match="before forward"):
        MultiheadAttention(8, 2).backward(xp.zeros((2, 3, 8)))


# ------------------------------------------------------------------ optional: PyTorch
@pytest.mark.parametrize("fused", [False, True])
def test_matches_torch_if_installed(rng, fused):
    torch = pytest.importorskip("torch")
    dims = {} if fused else {"kdim": 3, "vdim": 6}
    m = _randomise(MultiheadAttention(8, 2, **dims), rng).double()
    t = torch.nn.MultiheadAttention(8, 2, batch_first=True, **dims).double()
    t.load_state_dict({n: torch.tensor(H(p.data)) for n, p in m.named_parameters()})
    if fused:  # self-attention: one input, PyTorch sums its three gradients
        x = rng.normal((2, 5, 8), dtype=xp.float64)
        q = k = v = x
    else:
        q, k, v = (rng.normal(s, dtype=xp.float64) for s in ((2, 4, 8), (2, 5, 3), (2, 5, 6)))
    L, S = q.shape[1], k.shape[1]
    kpm = padding_mask(xp.asarray([5, 3]), S)
    am = causal_mask(L, S)
    out, w = m(q, k, v, key_padding_mask=kpm, attn_mask=am, average_attn_weights=False)
    if fused:
        tq = tk = tv = torch.tensor(H(x), requires_grad=True)
    else:
        tq, tk, tv = (torch.tensor(H(a), requires_grad=True) for a in (q, k, v))
    tout, tw = t(tq, tk, tv, key_padding_mask=torch.tensor(H(kpm)), attn_mask=torch.tensor(H(am)),
                 average_attn_weights=False)
    g = rng.normal(out.shape, dtype=xp.float64)
    tout.backward(torch.tensor(H(g)))
    grads = m.backward(g)
    np.testing.assert_allclose(H(out), tout.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(H(w), tw.detach().numpy(), atol=1e-12)
    if fused:
        np.testing.assert_allclose(H(sum(grads)), tq.grad.numpy(), atol=1e-12)
    else:
        for ours, theirs in zip(grads, (tq, tk, tv)):
            np.testing.assert_allclose(H(ours), theirs.grad.numpy(), atol=1e-12)
    tparams = dict(t.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(H(p.grad), tparams[name].grad.numpy(), atol=1e-12)


def test_benchmark_script_runs_quick():
    """The benchmark's smoke mode runs and prints its table (no timing is asserted)."""
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mha.py"
    done = subprocess.run([sys.executable, str(script), "--quick", "--no-torch"], check=False,
                          capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.strip().startswith(("2 ", "1 "))]
    assert len(rows) == 2 and all("|" in r for r in rows), done.stdout
