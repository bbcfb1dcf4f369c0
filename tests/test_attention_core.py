"""Tests for the three attention steps (score, align, context), Attention, Attn, hard
attention and its training routes, and npattention.viz."""
import numpy as np
import pytest

from npattention.attention.align import HardAlign, Reinforce, SoftmaxAlign
from npattention.attention.attention import Attention, Attn
from npattention.attention.context import Context
from npattention.attention.hard_demo import train_retrieval
from npattention.attention.scores import AdditiveScore, ConcatScore, CosineScore, DotScore, GeneralScore, ScaledDotScore
from npattention.backend import asarray, to_numpy, xp
from npattention.masks import causal_mask, padding_mask

F64 = xp.float64


def _n(a):
    return to_numpy(a)


# ----------------------------------------------------------------------------- align
def test_softmax_weights_sum_to_one_over_unmasked_keys_and_masked_are_exactly_zero(rng):
    scores = rng.normal((3, 4, 6))
    mask = padding_mask(xp.asarray([6, 4, 1]), 6)[:, None, :]  # (3, 1, 6) key padding
    w = _n(SoftmaxAlign()(scores, mask=mask))
    m = np.broadcast_to(_n(mask), w.shape)
    assert np.all(w[m] == 0.0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert np.all(w[~m] > 0)
    # the last batch row may only look at key 0
    np.testing.assert_array_equal(w[2], np.tile([1, 0, 0, 0, 0, 0], (4, 1)))


def test_causal_mask_gives_lower_triangular_weights(rng):
    w = _n(SoftmaxAlign()(rng.normal((2, 5, 5)), mask=causal_mask(5)))
    assert np.all(np.triu(w, k=1) == 0)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(w[:, 0, 0], [1.0, 1.0])


def test_all_masked_row_gives_zero_weights_and_zero_grads_no_nan(rng):
    align = SoftmaxAlign()
    scores = rng.normal((2, 3, 4), dtype=F64)
    mask = xp.zeros((2, 3, 4), dtype=bool)
    mask[1, 2, :] = True
    w = align(scores, mask=mask)
    assert np.all(_n(w)[1, 2] == 0.0) and np.isfinite(_n(w)).all()
    ds = _n(align.backward(rng.normal((2, 3, 4), dtype=F64)))
    assert np.isfinite(ds).all() and np.all(ds[1, 2] == 0.0)
    # through the whole Attention (key-value mode): the masked query gets zero context and zero grads
    att = Attention(GeneralScore(5, 5)).double()
    q, k, v = rng.normal((2, 3, 5), dtype=F64), rng.normal((2, 4, 5), dtype=F64), rng.normal((2, 4, 2), dtype=F64)
    ctx, w = att(q, k, v, mask=mask)
    assert np.all(_n(ctx)[1, 2] == 0.0) and np.all(_n(w)[1, 2] == 0.0)
    dq, dk, dv = (_n(g) for g in att.backward(rng.normal((2, 3, 2), dtype=F64)))
    assert np.all(dq[1, 2] == 0.0)
    assert all(np.isfinite(g).all() for g in (dq, dk, dv))


@pytest.mark.parametrize("dtype", [xp.float32, xp.float64])
def test_softmax_is_stable_for_huge_logits(dtype):
    scores = xp.asarray([[[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]]], dtype=dtype)
    align = SoftmaxAlign()
    w = _n(align(scores))
    np.testing.assert_array_equal(w[0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(w[0, 1], [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(w[0, 2], [0.5, 0.5, 0.0], rtol=1e-6)
    ds = _n(align.backward(xp.ones_like(scores)))
    assert np.isfinite(ds).all()
    np.testing.assert_allclose(ds, 0.0, atol=1e-6)  # a constant upstream grad cannot move a softmax


def test_temperature_divides_the_scores(rng):
    s = rng.normal((2, 3, 4), dtype=F64)
    np.testing.assert_allclose(_n(SoftmaxAlign(temperature=0.5)(s)), _n(SoftmaxAlign()(2 * s)), rtol=1e-12)


# ----------------------------------------------------------------------------- scores
def test_scaled_dot_equals_dot_over_sqrt_d(rng):
    q, k = rng.normal((2, 3, 16), dtype=F64), rng.normal((2, 5, 16), dtype=F64)
    np.testing.assert_allclose(_n(ScaledDotScore()(q, k)), _n(DotScore()(q, k)) / 4.0, rtol=1e-12)
    np.testing.assert_allclose(_n(DotScore()(q, k)), np.einsum("bqd,bkd->bqk", _n(q), _n(k)), rtol=1e-12)


def test_cosine_is_invariant_to_rescaling_q_or_k(rng):
    q, k = rng.normal((2, 3, 4), dtype=F64), rng.normal((2, 5, 4), dtype=F64)
    cos = CosineScore()
    base = _n(cos(q, k))
    np.testing.assert_allclose(_n(cos(q * 7.5, k)), base, rtol=1e-12)
    np.testing.assert_allclose(_n(cos(q, k * 0.01)), base, rtol=1e-12)
    np.testing.assert_allclose(_n(cos(-q, k)), -base, rtol=1e-12)
    assert np.all(np.abs(base) <= 1.0 + 1e-12)
    qn = _n(q) / np.linalg.norm(_n(q), axis=-1, keepdims=True)
    kn = _n(k) / np.linalg.norm(_n(k), axis=-1, keepdims=True)
    np.testing.assert_allclose(base, qn @ kn.transpose(0, 2, 1), rtol=1e-12)
    np.testing.assert_allclose(_n(CosineScore(scale=10.0)(q, k)), 10 * base, rtol=1e-12)
    # the gradient is orthogonal to q (moving along q does not change the cosine)
    cos(q, k)
    dq, _ = cos.backward(rng.normal((2, 3, 5), dtype=F64))
    np.testing.assert_allclose(np.sum(_n(dq) * _n(q), axis=-1), 0.0, atol=1e-12)


def test_cosine_zero_vector_gives_zero_score_not_nan(rng):
    q = xp.zeros((1, 1, 3), dtype=F64)
    s = CosineScore()(q, rng.normal((1, 2, 3), dtype=F64))
    np.testing.assert_array_equal(_n(s), 0.0)


def test_general_score_with_identity_is_dot(rng):
    g = GeneralScore(4, 4).double()
    g.weight.data = xp.eye(4, dtype=F64)
    q, k = rng.normal((3, 2, 4), dtype=F64), rng.normal((3, 6, 4), dtype=F64)
    np.testing.assert_allclose(_n(g(q, k)), _n(DotScore()(q, k)), rtol=1e-12)


def test_concat_score_equals_linear_on_every_concatenated_pair(rng):
    c = ConcatScore(3, 2).double()
    q, k = rng.normal((2, 4, 3), dtype=F64), rng.normal((2, 5, 2), dtype=F64)
    qn, kn = _n(q), _n(k)
    pairs = np.concatenate([np.broadcast_to(qn[:, :, None, :], (2, 4, 5, 3)),
                            np.broadcast_to(kn[:, None, :, :], (2, 4, 5, 2))], axis=-1)  # (B,Tq,Tk,5)
    direct = pairs @ _n(c.weight.data)[0] + _n(c.bias.data)[0]
    np.testing.assert_allclose(_n(c(q, k)), direct, rtol=1e-12)
    # after softmax over keys the query term cancels: the weights do not depend on q
    w1 = _n(SoftmaxAlign()(c(q, k)))
    w2 = _n(SoftmaxAlign()(c(rng.normal((2, 4, 3), dtype=F64), k)))
    np.testing.assert_allclose(w1, w2, rtol=1e-10)


def test_additive_score_matches_a_direct_loop(rng):
    a = AdditiveScore(3, 2, 4).double()
    q, k = rng.normal((2, 3, 3), dtype=F64), rng.normal((2, 4, 2), dtype=F64)
    Wq, Wk, v = _n(a.W_q.data), _n(a.W_k.data), _n(a.v.data)
    direct = np.zeros((2, 3, 4))
    for b in range(2):
        for i in range(3):
            for j in range(4):
                direct[b, i, j] = v @ np.tanh(Wq @ _n(q)[b, i] + Wk @ _n(k)[b, j])
    np.testing.assert_allclose(_n(a(q, k)), direct, rtol=1e-12)


@pytest.mark.parametrize("make", [DotScore, ScaledDotScore, CosineScore, lambda: GeneralScore(6, 4),
                                  lambda: ConcatScore(6, 4), lambda: AdditiveScore(6, 4, 5)])
@pytest.mark.parametrize("batch", [1, 7])
def test_scores_work_as_decoder_scores_with_one_query(make, batch, rng):
    score = make()
    same = isinstance(score, (DotScore, ScaledDotScore, CosineScore))
    q = rng.normal((batch, 1, 6))
    k = rng.normal((batch, 9, 6 if same else 4))
    s = score(q, k)
    assert s.shape == (batch, 1, 9)
    dq, dk = score.backward(xp.ones_like(s))
    assert dq.shape == q.shape and dk.shape == k.shape


# ----------------------------------------------------------------------------- context / Attention
def test_context_is_weighted_sum_of_values_on_tiny_numbers():
    w = xp.asarray([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    v = xp.asarray([[[1.0, 10.0], [3.0, 30.0], [5.0, 50.0]]])
    np.testing.assert_allclose(_n(Context()(w, v)), [[[2.0, 20.0], [5.0, 50.0]]])


def test_attention_normal_mode_uses_keys_as_values_and_sums_both_gradients(rng):
    q, x = rng.normal((2, 3, 4), dtype=F64), rng.normal((2, 5, 4), dtype=F64)
    normal = Attention(ScaledDotScore())
    kv = Attention(ScaledDotScore())
    c1, w1 = normal(q, x)
    c2, _w2 = kv(q, x, x)
    np.testing.assert_allclose(_n(c1), _n(c2), rtol=1e-12)
    assert normal.scores.shape == (2, 3, 5) and normal.weights is w1 and normal.context is c1
    g = rng.normal((2, 3, 4), dtype=F64)
    grads_normal = normal.backward(g)
    dq, dk, dv = kv.backward(g)
    assert len(grads_normal) == 2
    np.testing.assert_allclose(_n(grads_normal[0]), _n(dq), rtol=1e-12)
    np.testing.assert_allclose(_n(grads_normal[1]), _n(dk + dv), rtol=1e-12)


def test_attention_with_hard_align_uses_one_hot_weights(rng):
    q, k, v = rng.normal((2, 3, 4), dtype=F64), rng.normal((2, 5, 4), dtype=F64), rng.normal((2, 5, 2), dtype=F64)
    att = Attention(DotScore(), HardAlign("argmax"))
    ctx, _w = att(q, k, v)
    idx = np.argmax(_n(att.scores), axis=-1)
    np.testing.assert_array_equal(_n(ctx), np.take_along_axis(_n(v), idx[..., None], axis=1))
    with pytest.raises(RuntimeError, match="not differentiable"):
        att.backward(xp.ones_like(ctx))


# ----------------------------------------------------------------------------- note 004 Attn
def test_attn_matches_direct_numpy_computation(rng):
    attn = Attn(4, 3, 6, 5, 2).double()
    B = 3
    Q, K, V = rng.normal((B, 1, 4), dtype=F64), rng.normal((B, 1, 3), dtype=F64), rng.normal((B, 6, 5), dtype=F64)
    out, w = attn(Q, K, V)
    assert out.shape == (B, 1, 2) and w.shape == (B, 1, 6)
    Qn, Kn, Vn = _n(Q)[:, 0], _n(K)[:, 0], _n(V)
    W1, b1 = _n(attn.attn.weight.data), _n(attn.attn.bias.data)
    W2, b2 = _n(attn.attn_combine.weight.data), _n(attn.attn_combine.bias.data)
    logits = np.concatenate([Qn, Kn], 1) @ W1.T + b1
    ew = np.exp(logits - logits.max(1, keepdims=True))
    ew /= ew.sum(1, keepdims=True)
    applied = np.einsum("bn,bnd->bd", ew, Vn)
    expected = np.concatenate([Qn, applied], 1) @ W2.T + b2
    np.testing.assert_allclose(_n(w)[:, 0], ew, rtol=1e-12)
    np.testing.assert_allclose(_n(out)[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(_n(w).sum(-1), 1.0, rtol=1e-12)


def test_attn_note_sizes_and_backward_shapes(rng):
    attn = Attn(32, 32, 32, 64, 64)  # the call in note 004
    Q, K, V = rng.normal((1, 1, 32)), rng.normal((1, 1, 32)), rng.normal((1, 32, 64))
    out, w = attn(Q, K, V)
    assert out.shape == (1, 1, 64) and w.shape == (1, 1, 32)
    dQ, dK, dV = attn.backward(xp.ones_like(out))
    assert dQ.shape == Q.shape and dK.shape == K.shape and dV.shape == V.shape


def test_attn_mask_zeroes_padded_source_positions(rng):
    attn = Attn(2, 2, 5, 3, 4)
    mask = padding_mask(xp.asarray([5, 2]), 5)[:, None, :]
    _, w = attn(rng.normal((2, 1, 2)), rng.normal((2, 1, 2)), rng.normal((2, 5, 3)), mask=mask)
    assert np.all(_n(w)[1, 0, 2:] == 0) and abs(float(_n(w)[1].sum()) - 1) < 1e-6


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("module, args, kind, words", [
    (DotScore(), ((2, 3, 4), (3, 5, 4)), ValueError, ["'query'", "'key'", "leading"]),
    (DotScore(), ((2, 3, 4), (2, 5, 6)), ValueError, ["'key'", "feature size 4"]),
    (ScaledDotScore(), ((2, 3, 4), (2, 5, 6)), ValueError, ["'key'"]),
    (CosineScore(), ((2, 3, 4), (2, 5, 3)), ValueError, ["'key'"]),
    (GeneralScore(4, 3), ((2, 3, 5), (2, 5, 3)), ValueError, ["'query'", "(..., *, 4)", "(2, 3, 5)"]),
    (ConcatScore(4, 3), ((2, 3, 4), (2, 5, 4)), ValueError, ["'key'", "(..., *, 3)"]),
    (AdditiveScore(4, 3, 2), ((2, 3, 4), (2, 5, 2)), ValueError, ["'key'"]),
    (Context(), ((2, 3, 4), (2, 5, 6)), ValueError, ["'values'", "(2, 4, 'Dv')"]),
    (DotScore(), ((4,), (2, 4)), ValueError, ["'query'"]),
])
def test_bad_shapes_raise_clear_errors(module, args, kind, words, rng):
    arrays = [rng.normal(s) for s in args]
    with pytest.raises(kind) as err:
        module(*arrays)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_integer_and_non_array_inputs_raise_type_errors(rng):
    q = rng.normal((2, 3, 4))
    with pytest.raises(TypeError, match="'key' must be a float array, got dtype int64"):
        DotScore()(q, xp.ones((2, 5, 4), dtype=xp.int64))
    with pytest.raises(TypeError, match="'query' must be an array"):
        DotScore()([[1.0]], q)
    with pytest.raises(TypeError, match="'scores' must be a float array"):
        SoftmaxAlign()(xp.ones((2, 3), dtype=xp.int32))
    with pytest.raises(TypeError, match="'weights' must be a float array"):
        Context()(xp.ones((2, 3, 4), dtype=xp.int64), q)


def test_bad_masks_raise_clear_errors(rng):
    s = rng.normal((2, 3, 4))
    with pytest.raises(TypeError, match="'mask' must be a bool array"):
        SoftmaxAlign()(s, mask=xp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"'mask' of shape \(2, 3, 5\) does not broadcast"):
        SoftmaxAlign()(s, mask=xp.zeros((2, 3, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"'mask' of shape \(3, 2, 3, 4\)"):
        SoftmaxAlign()(s, mask=xp.zeros((3, 2, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match="'mask'"):
        Attention(DotScore())(rng.normal((2, 3, 4)), rng.normal((2, 5, 4)), mask=xp.zeros((2, 5), dtype=bool))


def test_attention_and_attn_name_bad_value_and_inputs(rng):
    with pytest.raises(ValueError, match="'value' must have one row per key"):
        Attention(DotScore())(rng.normal((2, 3, 4)), rng.normal((2, 5, 4)), rng.normal((2, 4, 4)))
    attn = Attn(4, 3, 6, 5, 2)
    with pytest.raises(ValueError, match=r"'V' must have shape \(B, 6, 5\) with B=2"):
        attn(rng.normal((2, 1, 4)), rng.normal((2, 1, 3)), rng.normal((2, 7, 5)))
    with pytest.raises(ValueError, match=r"'K' must have shape \(B, Tq, 3\)"):
        attn(rng.normal((2, 1, 4)), rng.normal((3, 1, 3)), rng.normal((2, 6, 5)))
    with pytest.raises(TypeError, match="'Q' must be a float array"):
        attn(xp.ones((2, 1, 4), dtype=xp.int64), rng.normal((2, 1, 3)), rng.normal((2, 6, 5)))
    with pytest.raises(ValueError, match="'hidden_dim' must be a positive int"):
        AdditiveScore(3, 3, 0)
    with pytest.raises(ValueError, match="'temperature'"):
        SoftmaxAlign(temperature=0)
    with pytest.raises(ValueError, match="'mode'"):
        HardAlign("soft")


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="before forward"):
        Attention(DotScore()).backward(xp.ones((1, 1, 1)))


# ----------------------------------------------------------------------------- hard attention
def test_hard_argmax_is_one_hot_and_never_picks_masked_keys(rng):
    s = rng.normal((3, 4, 6))
    mask = xp.zeros((3, 4, 6), dtype=bool)
    mask[..., 0] = True
    s[..., 0] = 100.0  # the best key is masked
    mask[2, 3] = True  # an all-masked row
    w, idx, logp = HardAlign("argmax")(s, mask=mask)
    w, idx, logp = _n(w), _n(idx), _n(logp)
    assert set(np.unique(w)) <= {0.0, 1.0}
    np.testing.assert_array_equal(w.sum(-1), np.where(np.arange(4) == 3, [[1], [1], [0]], 1))
    assert np.all(w[..., 0] == 0)
    expected = np.argmax(np.where(_n(mask), -np.inf, _n(s)), -1)
    np.testing.assert_array_equal(idx[:2], expected[:2])
    assert logp[2, 3] == 0.0 and np.all(logp <= 0) and np.isfinite(logp).all()


def test_hard_sample_frequencies_follow_the_softmax():
    s = xp.asarray([[0.0, 1.0, 2.0, -1.0]])
    mask = xp.asarray([False, False, False, True])
    hard = HardAlign("sample")
    n = 20000
    _w, idx, logp = hard(xp.broadcast_to(s, (n, 4)).copy(), mask=mask)
    freq = np.bincount(_n(idx), minlength=4) / n
    p = _n(hard.probs)[0]
    assert p[3] == 0.0 and freq[3] == 0.0
    np.testing.assert_allclose(freq, p, atol=0.015)
    np.testing.assert_allclose(_n(logp), np.log(p[_n(idx)]), rtol=1e-5)


def test_straight_through_backward_is_the_softmax_backward(rng):
    s = rng.normal((2, 3, 5), dtype=F64)
    g = rng.normal((2, 3, 5), dtype=F64)
    st = HardAlign("argmax", temperature=2.0, straight_through=True)
    soft = SoftmaxAlign(temperature=2.0)
    st(s)
    soft(s)
    np.testing.assert_allclose(_n(st.backward(g)), _n(soft.backward(g)), rtol=1e-12)
    with pytest.raises(RuntimeError, match="REINFORCE"):
        plain = HardAlign()
        plain(s)
        plain.backward(g)


def test_reinforce_estimate_is_unbiased():
    """The mean REINFORCE gradient over many samples equals the exact gradient of -E[R]."""
    s = xp.asarray([[0.5, -0.2, 1.0, 0.0]], dtype=F64)
    r = np.array([1.0, 0.0, 0.3, 0.8])
    n = 40000
    hard = HardAlign("sample")
    w, idx, _ = hard(xp.broadcast_to(s, (n, 4)).copy())
    reward = asarray(r[_n(idx)])[:, None]  # (n, 1): Tq = 1
    est = _n(Reinforce().grad_scores(reward, w[:, None, :], hard.probs[:, None, :])).sum(axis=(0, 1))
    p = _n(hard.probs)[0]
    exact = -p * (r - p @ r)  # d(-sum p r)/ds
    np.testing.assert_allclose(est, exact, atol=0.01)
    assert np.abs(exact).max() > 0.05  # the test is not trivially satisfied


def test_reinforce_baseline_is_a_moving_average():
    rf = Reinforce(momentum=0.5)
    w = xp.asarray([[[1.0, 0.0]]])
    p = xp.asarray([[[0.5, 0.5]]])
    g0 = rf.grad_scores(xp.asarray([[1.0]]), w, p)
    assert rf.baseline == 1.0 and np.all(_n(g0) == 0)  # first batch: baseline = its own mean
    g1 = rf.grad_scores(xp.asarray([[0.0]]), w, p)
    np.testing.assert_allclose(_n(g1), [[[0.5, -0.5]]])  # -(0 - 1)(onehot - p)
    assert rf.baseline == 0.5


@pytest.mark.parametrize("mode, bar", [("soft", 0.85), ("reinforce", 0.8), ("straight_through", 0.8)])
def test_retrieval_task_is_learned(mode, bar):
    history = train_retrieval(mode, steps=150, seed=3, eval_every=50)
    chance = 1 / 8
    assert history[0][0] == 0 and history[-1][0] == 150
    assert history[0][1] < 2 * chance  # untrained: about chance
    assert history[-1][1] >= bar, history  # trained: far above chance
    short = train_retrieval(mode, steps=20, seed=3, eval_every=10)
    assert short == train_retrieval(mode, steps=20, seed=3, eval_every=10)  # reproducible for a seed
    assert short[0] == history[0]


# ----------------------------------------------------------------------------- viz
def test_viz_functions_draw_labelled_maps_with_colorbars(rng):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from npattention import viz

    w = SoftmaxAlign()(rng.normal((2, 3, 4, 5)))
    ax = viz.plot_attention(w[0, 0], x_labels=list("abcde"), y_labels=["q1", "q2", "q3", "q4"], title="t")
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcde")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["q1", "q2", "q3", "q4"]
    assert len(ax.figure.axes) == 2  # the map and its colorbar
    np.testing.assert_allclose(ax.images[0].get_array(), _n(w[0, 0]))
    fig = viz.show_heatmaps(w, titles=["h1", "h2", "h3"])
    assert len(fig.axes) == 2 * 3 + 1
    ax = viz.plot_mask(causal_mask(4))
    np.testing.assert_array_equal(ax.images[0].get_array(), np.triu(np.ones((4, 4)), 1))
    with pytest.raises(ValueError, match="'x_labels' has 2 labels"):
        viz.plot_attention(w[0, 0], x_labels=["a", "b"])
    with pytest.raises(TypeError, match="'mask' must be a boolean"):
        viz.plot_mask(xp.zeros((3, 3)))
    plt.close("all")


def test_show_heatmaps_keeps_every_token_label_on_shared_axes():
    from npattention import viz

    maps = np.random.default_rng(0).random((2, 3, 11, 12))
    fig = viz.show_heatmaps(maps, x_labels=list("abcdefghijkl"), y_labels=list("ABCDEFGHIJK"))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list("ABCDEFGHIJK")
    assert [t.get_text() for t in fig.axes[3].get_xticklabels()] == list("abcdefghijkl")


def test_additive_score_with_keys_projected_once_matches_the_plain_call(rng):
    """A decoder projects its keys once (project_keys) and scores each step with projected=True:
    same scores, and the two backward halves give the plain call's gradients."""
    for bias in (False, True):
        a = AdditiveScore(4, 3, 5, bias=bias).double()
        q, k = rng.normal((2, 1, 4), dtype=F64), rng.normal((2, 6, 3), dtype=F64)
        g = rng.normal((2, 1, 6), dtype=F64)
        s = a(q, k)
        dq, dk = a.backward(g)
        grads = [_n(p.grad).copy() for p in a.parameters()]
        a.zero_grad()
        kh = a.project_keys(k)
        s2 = a(q, kh, projected=True)
        dq2, dkh = a.backward(g)
        dk2 = a.project_keys_backward(dkh, k)
        np.testing.assert_allclose(_n(s2), _n(s), rtol=1e-13)
        np.testing.assert_allclose(_n(dq2), _n(dq), rtol=1e-13)
        np.testing.assert_allclose(_n(dk2), _n(dk), rtol=1e-13)
        for g1, p in zip(grads, a.parameters()):
            np.testing.assert_allclose(_n(p.grad), g1, rtol=1e-13)
