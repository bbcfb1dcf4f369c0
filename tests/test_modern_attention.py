"""Beyond the 2017 Transformer (issue 15): additive score bias, RoPE, ALiBi, T5 relative
position bias, grouped-query attention and linear attention."""
import math

import numpy as np
import pytest

from npattention.attention.alibi import ALiBi, alibi_bias, alibi_slopes
from npattention.attention.grouped_query import GroupedQueryAttention
from npattention.attention.linear_attention import LinearAttention, linear_attention, linear_attention_quadratic
from npattention.attention.multihead import MultiheadAttention
from npattention.attention.relative_bias import RelativePositionBias, relative_position_bucket
from npattention.attention.rotary import apply_rotary, rotary_tables
from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from npattention.backend import to_numpy, xp
from npattention.masks import causal_mask, padding_mask
from npattention.data.periodic import make_periodic
from npattention.decoding import GPTState
from npattention.demos import length_generalisation
from npattention.gpt import GPT
from npattention.transformer import Transformer


def H(a):
    return to_numpy(a)


def _randomise(module, rng):
    for _, p in module.named_parameters():
        p.data[...] = rng.normal(p.shape, scale=0.5)
    return module


# ------------------------------------------------------------------ additive bias / float masks
def test_float_mask_is_added_to_the_scores(rng):
    q, k, v = (rng.normal((2, 3, 4, 5), dtype=xp.float64) for _ in range(3))
    bias = rng.normal((3, 4, 4), dtype=xp.float64)
    (ctx, w), _ = scaled_dot_product_attention(q, k, v, attn_mask=bias, need_weights=True)
    s = H(q) @ H(k).swapaxes(-1, -2) / math.sqrt(5) + H(bias)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    np.testing.assert_allclose(H(w), a, atol=1e-12)
    np.testing.assert_allclose(H(ctx), a @ H(v), atol=1e-12)
    # the same bias under its own name, combined with a boolean mask
    mask = causal_mask(4)
    out1, c1 = scaled_dot_product_attention(q, k, v, attn_mask=mask, attn_bias=bias)
    big = xp.where(mask, -1e30, 0.0) + bias                 # a float mask can mask too (large negative)
    out2, c2 = scaled_dot_product_attention(q, k, v, attn_mask=big)
    np.testing.assert_allclose(H(out1), H(out2), atol=1e-12)
    g = rng.normal(out1.shape, dtype=xp.float64)
    grads = scaled_dot_product_attention_backward(g, c1)
    assert len(grads) == 4 and grads[3].shape == (3, 4, 4)
    iu = np.triu_indices(4, 1)
    assert np.all(H(grads[3])[:, iu[0], iu[1]] == 0)  # masked entries: no gradient
    assert len(scaled_dot_product_attention_backward(g, scaled_dot_product_attention(q, k, v)[1])) == 3


def test_bias_errors(rng):
    q = rng.normal((2, 3, 4))
    with pytest.raises(ValueError, match="pass one"):
        scaled_dot_product_attention(q, q, q, attn_mask=xp.zeros((3, 3)), attn_bias=xp.zeros((3, 3)))
    with pytest.raises(ValueError, match="'attn_bias' .* of shape \\(4, 3\\) does not broadcast"):
        scaled_dot_product_attention(q, q, q, attn_bias=xp.zeros((4, 3)))
    with pytest.raises(ValueError, match="'positional' must be None, one of"):
        MultiheadAttention(8, 2, positional="sinusoid")
    with pytest.raises(ValueError, match="even head_dim"):
        MultiheadAttention(6, 2, positional="rope")
    with pytest.raises(ValueError, match="num_heads 4, the layer has 2"):
        MultiheadAttention(8, 2, positional=ALiBi(4))


def test_mha_float_mask_matches_pytorch_semantics(rng):
    m = _randomise(MultiheadAttention(8, 2), rng).double()
    x = rng.normal((2, 4, 8), dtype=xp.float64)
    mask = causal_mask(4)
    a, wa = m(x, x, x, attn_mask=mask)
    b, wb = m(x, x, x, attn_mask=xp.where(mask, -1e30, 0.0))   # float: added to the scores
    np.testing.assert_allclose(H(a), H(b), atol=1e-12)
    np.testing.assert_allclose(H(wa), H(wb), atol=1e-12)


# ------------------------------------------------------------------ RoPE
def test_rope_score_depends_only_on_the_offset(rng):
    D = 8
    q, k = rng.normal((D,), dtype=xp.float64), rng.normal((D,), dtype=xp.float64)
    cos, sin = rotary_tables(xp.arange(40), D)
    rq = H(apply_rotary(xp.broadcast_to(q, (40, D)).copy(), cos, sin))   # q at every position 0..39
    rk = H(apply_rotary(xp.broadcast_to(k, (40, D)).copy(), cos, sin))
    scores = rq @ rk.T                                                   # (t, u): q at t, k at u
    for offset in (-7, 0, 3, 11):
        diag = np.diagonal(scores, offset=-offset)                       # all (t, u) with t - u = offset
        np.testing.assert_allclose(diag, diag[0], atol=1e-12)
    assert abs(np.diagonal(scores, 0)[0] - np.diagonal(scores, -3)[0]) > 1e-3   # offsets differ
    np.testing.assert_allclose(np.diagonal(scores), H(q) @ H(k), atol=1e-12)  # offset 0: plain q.k
    np.testing.assert_allclose(np.linalg.norm(rq, axis=1), np.linalg.norm(H(q)), atol=1e-12)  # a rotation


def test_rope_rotates_a_2d_pair_by_the_position():
    cos, sin = rotary_tables(xp.arange(5), 2)       # D = 2: one pair, frequency 1 rad per position
    y = H(apply_rotary(xp.tile(xp.asarray([1.0, 0.0]), (5, 1)), cos, sin))
    t = np.arange(5)
    np.testing.assert_allclose(y, np.stack([np.cos(t), np.sin(t)], 1), atol=1e-15)


@pytest.mark.parametrize("positional", ["rope", "alibi", "relative"])
def test_positions_with_a_key_value_prefix(rng, positional):
    """Queries = the last L tokens, keys = all S (a KV cache): rows equal the full causal pass."""
    m = _randomise(MultiheadAttention(8, 2, positional=positional), rng).double()
    x = rng.normal((2, 7, 8), dtype=xp.float64)
    full, _ = m(x, x, x, is_causal=True)
    last, _ = m(x[:, 4:], x, x, attn_mask=causal_mask(7)[4:])
    np.testing.assert_allclose(H(last), H(full)[:, 4:], atol=1e-12)


def test_rope_attention_is_shift_invariant(rng):
    """With RoPE and no other position code, scores see only offsets: keys/queries at
    positions shifted together give the same output."""
    m = _randomise(MultiheadAttention(8, 2, positional="rope"), rng).double()
    x = rng.normal((1, 5, 8), dtype=xp.float64)
    pad = rng.normal((1, 3, 8), dtype=xp.float64)
    a, _ = m(x, x, x)
    xs = xp.concatenate([pad, x], axis=1)                      # the same 5 tokens at positions 3..7
    b, _ = m(x, xs, xs, key_padding_mask=xp.asarray([[True] * 3 + [False] * 5]))
    np.testing.assert_allclose(H(a), H(b), atol=1e-12)


# ------------------------------------------------------------------ ALiBi
def test_alibi_slopes_as_in_the_paper():
    np.testing.assert_allclose(H(alibi_slopes(8)), [2.0 ** -k for k in range(1, 9)], rtol=0, atol=0)
    twelve = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -0.5, 2.0 ** -1.5, 2.0 ** -2.5, 2.0 ** -3.5]
    np.testing.assert_allclose(H(alibi_slopes(12)), twelve, rtol=1e-15)
    np.testing.assert_allclose(H(alibi_slopes(4)), [0.25, 1 / 16, 1 / 64, 1 / 256], rtol=1e-15)


def test_alibi_bias_causal_and_bidirectional():
    bi, ca = H(alibi_bias(2, 4)), H(alibi_bias(2, 4, causal=True))
    assert bi.shape == (2, 4, 4)
    np.testing.assert_allclose(bi[0], -0.0625 * np.abs(np.subtract.outer(range(4), range(4))))
    low = np.tril_indices(4)
    np.testing.assert_allclose(ca[:, low[0], low[1]], bi[:, low[0], low[1]])   # same where it is used
    assert np.all(ca[:, np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]] == 0)
    np.testing.assert_allclose(H(alibi_bias(2, 2, 5, offset=3))[1, 1], -(2.0 ** -8) * np.array([4, 3, 2, 1, 0]))


# ------------------------------------------------------------------ relative position bias
def test_t5_buckets():
    rel = xp.asarray([0, -1, 1, -7, -8, -16, -127, -128, -1000, 20, 1000])
    got = H(relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128))
    # exact up to 7 apart, then log-spaced: 8 + floor(log(n/8) / log(16) * 8); the future in 16..31
    expect = [0, 1, 17, 7, 8, 10, 15, 15, 15, 16 + 8 + 2, 31]
    np.testing.assert_array_equal(got, expect)
    causal = H(relative_position_bucket(xp.asarray([3, 0, -1, -15, -16, -64, -200]), bidirectional=False,
                                        num_buckets=32, max_distance=128))
    np.testing.assert_array_equal(causal, [0, 0, 1, 15, 16, 16 + int(math.log(4) / math.log(8) * 16), 31])


def test_relative_bias_lookup_and_backward(rng):
    m = RelativePositionBias(3, num_buckets=8, max_distance=20).double()
    m.weight.data[...] = rng.normal(m.weight.shape, dtype=xp.float64)
    bias = m(4, 6, offset=2)
    b = H(m.buckets(4, 6, offset=2))
    np.testing.assert_allclose(H(bias), H(m.weight.data)[b].transpose(2, 0, 1))
    g = rng.normal(bias.shape, dtype=xp.float64)
    m.zero_grad()
    m.backward(g)
    onehot = (b[..., None] == np.arange(8)).astype(float)          # (L, S, buckets)
    np.testing.assert_allclose(H(m.weight.grad), np.einsum("lsb,hls->bh", onehot, H(g)), atol=1e-12)


# ------------------------------------------------------------------ Transformer option
@pytest.mark.parametrize("positional", ["rope", "alibi", "relative"])
def test_transformer_positional_option(rng, positional):
    model = Transformer(7, 7, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                        dim_feedforward=16, dropout=0.0, positional=positional)
    src = rng.integers(3, 7, size=(2, 5))
    tgt = rng.integers(3, 7, size=(2, 4))
    logits = model(src, tgt)
    model.zero_grad()
    model.backward(xp.ones_like(logits))
    names = [n for n, _ in model.named_parameters()]
    assert any("self_attn.positional" in n for n in names) == (positional == "relative")
    assert not any("multihead_attn.positional" in n for n in names)       # not in cross-attention
    assert model.encoder.layers[0].self_attn.positional is not None
    assert model.decoder.layers[0].multihead_attn.positional is None
    assert all(np.isfinite(H(p.grad)).all() for p in model.parameters())


# ------------------------------------------------------------------ grouped-query attention
def _double_random(m, rng):
    for _, p in m.named_parameters():
        p.data[...] = rng.normal(p.shape, scale=0.5)
    return m.double()


@pytest.mark.parametrize("positional", [None, "rope", "relative"])
def test_gqa_with_one_head_per_group_is_multihead(rng, positional):
    mha = _double_random(MultiheadAttention(8, 4, positional=positional), rng)
    gqa = GroupedQueryAttention.from_multihead(mha, num_kv_heads=4)
    x = rng.normal((2, 5, 8), dtype=xp.float64)
    kpm = padding_mask(xp.asarray([5, 3]), 5)
    a, wa = mha(x, x, x, key_padding_mask=kpm, is_causal=True, average_attn_weights=False)
    b, wb = gqa(x, x, x, key_padding_mask=kpm, is_causal=True, average_attn_weights=False)
    np.testing.assert_allclose(H(a), H(b), atol=1e-12, rtol=0)
    np.testing.assert_allclose(H(wa), H(wb), atol=1e-12, rtol=0)
    g = rng.normal(a.shape, dtype=xp.float64)
    mha.zero_grad(), gqa.zero_grad()
    for da, db in zip(mha.backward(g), gqa.backward(g)):
        np.testing.assert_allclose(H(da), H(db), atol=1e-12, rtol=0)
    E = 8
    gW = H(mha.in_proj_weight.grad)
    np.testing.assert_allclose(H(gqa.q_proj_weight.grad), gW[:E], atol=1e-12, rtol=0)
    np.testing.assert_allclose(H(gqa.k_proj_weight.grad), gW[E:2 * E], atol=1e-12, rtol=0)
    np.testing.assert_allclose(H(gqa.v_proj_weight.grad), gW[2 * E:], atol=1e-12, rtol=0)
    np.testing.assert_allclose(H(gqa.in_proj_bias.grad), H(mha.in_proj_bias.grad), atol=1e-12, rtol=0)


@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_gqa_key_value_gradients_are_summed_over_each_group(rng, num_kv_heads):
    """GQA = MHA whose key/value heads are copies within each group; the GQA key/value weight
    gradient is the sum of those copies' gradients."""
    Hh, D, E = 4, 2, 8
    G = Hh // num_kv_heads
    gqa = _double_random(GroupedQueryAttention(E, Hh, num_kv_heads), rng)
    mha = MultiheadAttention(E, Hh).double()
    Wk, Wv = H(gqa.k_proj_weight.data), H(gqa.v_proj_weight.data)
    b = H(gqa.in_proj_bias.data)
    rep = lambda a: np.repeat(a.reshape(num_kv_heads, 1, D, *a.shape[1:]), G, axis=1).reshape(E, *a.shape[1:])  # noqa: E731
    mha.in_proj_weight.data[...] = xp.asarray(np.concatenate([H(gqa.q_proj_weight.data), rep(Wk), rep(Wv)]))
    mha.in_proj_bias.data[...] = xp.asarray(np.concatenate([b[:E], rep(b[E:E + num_kv_heads * D]),
                                                            rep(b[E + num_kv_heads * D:])]))
    mha.out_proj.load_state_dict(gqa.out_proj.state_dict())
    q, kv = rng.normal((2, 3, E), dtype=xp.float64), rng.normal((2, 6, E), dtype=xp.float64)
    a, _ = mha(q, kv, kv)
    c, _ = gqa(q, kv, kv)
    np.testing.assert_allclose(H(a), H(c), atol=1e-12)
    g = rng.normal(a.shape, dtype=xp.float64)
    for da, dc in zip(mha.backward(g), gqa.backward(g)):
        np.testing.assert_allclose(H(da), H(dc), atol=1e-12)
    summed = H(mha.in_proj_weight.grad)[E:2 * E].reshape(num_kv_heads, G, D, E).sum(axis=1).reshape(-1, E)
    np.testing.assert_allclose(H(gqa.k_proj_weight.grad), summed, atol=1e-12)


def test_kv_cache_sizes_shrink_with_the_groups(capsys):
    sizes = {hkv: GroupedQueryAttention(64, 8, hkv).kv_cache_nbytes(seq_len=1024, batch_size=1)
             for hkv in (8, 4, 2, 1)}
    for hkv, n in sizes.items():
        print(f"H=8, num_kv_heads={hkv}: KV cache {n / 1024:.0f} KiB per layer for 1024 float32 tokens")
    assert sizes == {8: 2 * 1024 * 64 * 4, 4: 2 * 1024 * 32 * 4, 2: 2 * 1024 * 16 * 4, 1: 2 * 1024 * 8 * 4}
    assert "num_kv_heads=1: KV cache 64 KiB" in capsys.readouterr().out
    with pytest.raises(ValueError, match="'num_kv_heads' \\(3\\) must divide 'num_heads' \\(8\\)"):
        GroupedQueryAttention(64, 8, 3)


# ------------------------------------------------------------------ linear attention
@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_equals_its_quadratic_form(rng, causal):
    q, k = rng.normal((2, 3, 9, 4), dtype=xp.float64), rng.normal((2, 3, 9, 4), dtype=xp.float64)
    v = rng.normal((2, 3, 9, 5), dtype=xp.float64)
    kpm = padding_mask(xp.asarray([9, 6]), 9)[:, None]            # (B, 1, S)
    fast, _ = linear_attention(q, k, v, causal=causal, key_padding_mask=kpm)
    slow, w = linear_attention_quadratic(q, k, v, causal=causal, key_padding_mask=kpm)
    np.testing.assert_allclose(H(fast), H(slow), atol=1e-12, rtol=0)
    np.testing.assert_allclose(H(w).sum(-1), 1.0, atol=1e-6)      # rows of the weights sum to 1 (eps aside)
    if causal:
        iu = np.triu_indices(9, 1)
        assert np.all(H(w)[..., iu[0], iu[1]] == 0)               # the future gets weight 0
        # the causal output of position t depends only on tokens <= t
        q2 = q.copy()
        q2[..., 6:, :] += 1.0
        k2 = k.copy()
        k2[..., 6:, :] += 1.0
        again, _ = linear_attention(q2, k2, v, causal=True, key_padding_mask=kpm)
        np.testing.assert_allclose(H(again)[..., :6, :], H(fast)[..., :6, :], atol=1e-12)
    # explicitly: c_i = sum_j a_ij v_j with a_ij = phi(q_i).phi(k_j) / sum_j' phi(q_i).phi(k_j')
    phi = lambda x: np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))   # noqa: E731
    s = phi(H(q))[0, 1] @ phi(H(k))[0, 1].T
    if causal:
        s = np.tril(s)
    np.testing.assert_allclose(H(fast)[0, 1], (s / s.sum(1, keepdims=True)) @ H(v)[0, 1], atol=1e-6)


def test_causal_linear_attention_memory_is_linear_in_T(rng):
    """Nothing of size T x T is kept: every cached array is O(T (D + Dv)) or O(D Dv)."""
    T, D = 64, 4
    q, k, v = (rng.normal((1, 1, T, D), dtype=xp.float64) for _ in range(3))
    for causal in (False, True):
        _, cache = linear_attention(q, k, v, causal=causal)
        sizes = [a.size for a in cache if hasattr(a, "size")]
        assert max(sizes) == T * D < T * T


def test_linear_attention_module(rng):
    m = _double_random(LinearAttention(8, 2, causal=True), rng)
    x = rng.normal((2, 6, 8), dtype=xp.float64)
    out, w = m(x, x, x)
    assert w is None and out.shape == (2, 6, 8)
    # the same numbers as MultiheadAttention's projections around the quadratic form
    (Wq, bq, _, _), (Wk, bk, _, _), (Wv, bv, _, _) = m._projections()
    heads = lambda y: m._split_heads(y)                                     # noqa: E731
    ctx, _ = linear_attention_quadratic(heads(x @ Wq.T + bq), heads(x @ Wk.T + bk), heads(x @ Wv.T + bv),
                                        causal=True)
    np.testing.assert_allclose(H(out), H(m._merge_heads(ctx) @ m.out_proj.weight.data.T + m.out_proj.bias.data),
                               atol=1e-6)
    with pytest.raises(ValueError, match="'attn_mask' is not supported"):
        m(x, x, x, attn_mask=causal_mask(6))
    with pytest.raises(ValueError, match="causal=True needs as many queries as keys"):
        linear_attention(x[:, :2], x, x, causal=True)


# ------------------------------------------------------------------ GPT option (with the KV cache)
def _gpt(positional, rng):
    model = GPT(10, 12, n_layer=2, n_head=2, d_model=8, pad_idx=0, positional=positional).double()
    for p in model.parameters():   # larger than the 0.02 init, so the comparisons have teeth
        p.data[...] = rng.normal(p.data.shape, scale=0.5, dtype=xp.float64)
    return model


@pytest.mark.parametrize("positional", ["rope", "alibi", "relative", "sinusoidal", "none"])
def test_gpt_positional_cached_logits_equal_full(rng, positional):
    model = _gpt(positional, rng)
    ids = xp.asarray([[0, 0, 0, 4, 5, 6, 7, 8, 9],
                      [4, 9, 8, 7, 6, 5, 4, 3, 3]], dtype=xp.int64)
    full = model(ids)
    state = GPTState(model, 2, max_len=9)
    got = xp.concatenate([state.step(c) for c in [ids[:, :5]] + [ids[:, t] for t in range(5, 9)]], axis=1)
    np.testing.assert_allclose(H(got), H(full), atol=1e-11, rtol=0)
    assert (model.wpe is not None) == (positional == "learned")


@pytest.mark.parametrize("positional", ["rope", "alibi", "relative"])
def test_gpt_left_padding_does_not_change_offsets(rng, positional):
    model = _gpt(positional, rng)
    row = xp.asarray([[4, 5, 6, 7, 8]], dtype=xp.int64)
    padded = xp.asarray([[0, 0, 0, 4, 5, 6, 7, 8]], dtype=xp.int64)
    alone = H(model(row))
    np.testing.assert_allclose(H(model(padded))[:, 3:], alone, atol=1e-11, rtol=0)
    model.zero_grad()
    model.backward(xp.ones((1, 8, 10)))
    grads = {n: float(xp.abs(p.grad).sum()) for n, p in model.named_parameters()}
    assert all(np.isfinite(list(grads.values())))
    assert any("positional" in n for n in grads) == (positional == "relative")


# ------------------------------------------------------------------ the length-generalisation task and demo
def test_periodic_task(rng):
    ids = H(make_periodic(4, 23, period=5, vocab_size=8, rng=rng))
    assert ids.shape == (4, 23) and ids.dtype == np.int64
    assert ids.min() >= 1 and ids.max() <= 7
    np.testing.assert_array_equal(ids[:, 5:], ids[:, :-5])          # token t = token t - 5
    with pytest.raises(ValueError, match="'period' must be a positive int"):
        make_periodic(2, 10, period=0)


def test_length_demo_fast_run():
    """The smoke preset (what notebook 17 runs in fast mode): even 50 steps of a tiny GPT show
    that a position code is needed -- RoPE learns the task inside the training lengths, no
    position code stays near chance (1/7)."""
    results = length_generalisation.run(fast=True, positionals=("rope", "none"))
    rope_inside, _, _ = length_generalisation.ranges(results["rope"]["accuracy"])
    none_inside, _, _ = length_generalisation.ranges(results["none"]["accuracy"])
    assert results["rope"]["accuracy"].shape == (128,)
    assert rope_inside > 0.7 and none_inside < 0.35, (rope_inside, none_inside)


def test_benchmark_script_runs_quick(capsys):
    """benchmarks/bench_modern.py's smoke mode runs and prints its table (no timing is asserted)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_modern.py"
    spec = importlib.util.spec_from_file_location("bench_modern", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick"])
    out = capsys.readouterr().out
    assert "softmax/linear time" in out and "num_kv_heads=1:  2.00 MiB" in out
