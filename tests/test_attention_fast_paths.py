"""The optimised attention paths against plain references, in float64, to about 1e-12.

The shipped scaled-dot-product attention, MultiheadAttention, SAGAN and softmax are written for
speed (docs/multihead.md, "Speed"): the softmax's division moved onto the context, buffers edited
in place, the softmax backward's row sums from ``rowsum(dC * C)``, flattened and fused
projections, SAGAN on the channels-first view.  The references below are the obvious versions --
the textbook formulas, forward *and* backward, in host NumPy, with no optimisation at all -- and
every output, weight map and gradient of the shipped code is compared with them, over masks
(boolean, float, key padding, causal, an all-masked row), biases, dropout (the shipped keep-mask
is fed to the reference), positions (RoPE, ALiBi, relative), ``kdim``/``vdim`` != ``embed_dim``,
the tiled path, ``B = 1``, ``L != S`` and broadcast keys.
"""
import copy
import math

import numpy as np
import pytest

import npattention.softmax as softmax_module
from npattention.attention.grouped_query import GroupedQueryAttention
from npattention.attention.linear_attention import LinearAttention
from npattention.attention.multihead import MultiheadAttention
from npattention.attention.positions import positions_backward, positions_forward
from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from npattention.backend import to_numpy, xp
from npattention.softmax import softmax, softmax_backward, softmax_numerator
from npattention.vision.sagan import SelfAttention2d

F64 = xp.float64


def H(a):
    return None if a is None else to_numpy(a)


def close(actual, expected):
    """Equal to about 1e-12, relative to the size of the expected numbers."""
    actual, expected = H(actual), np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12 * scale)


def normal(rng, *shape):
    return rng.normal(shape, dtype=F64)


# ================================================================== the references (host NumPy)
def sum_to(grad, shape):
    """Sum ``grad`` over the axes it was broadcast on, back to ``shape``."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(axis=i, keepdims=True)
    return grad


def ref_sdpa(q, k, v, mask=None, bias=None, scale=None, keep=None, p=0.0):
    """Textbook attention: scores scaled after the product, masked, softmax by its definition,
    dropout with the given keep-mask, context.  Returns ``(context, weights, attn)``."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = np.where(mask, -np.inf, s)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)                     # an all-masked row: exp(-inf) = 0
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    weights = e / np.where(total == 0, 1.0, total)
    attn = weights if keep is None else weights * keep / (1.0 - p)
    return attn @ v, weights, attn


def ref_sdpa_backward(dc, q, k, v, weights, attn, keep=None, p=0.0, scale=None, bias_shape=None):
    """Textbook backward: ``dS = P * (dP - rowsum(P * dP))`` computed from ``dP`` itself."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    dv = np.swapaxes(attn, -1, -2) @ dc
    dp = dc @ np.swapaxes(v, -1, -2)
    if keep is not None:
        dp = dp * keep / (1.0 - p)
    ds = weights * (dp - (weights * dp).sum(axis=-1, keepdims=True))
    dq = ds @ k * scale
    dk = np.swapaxes(ds, -1, -2) @ q * scale
    grads = [sum_to(dq, q.shape), sum_to(dk, k.shape), sum_to(dv, v.shape)]
    if bias_shape is not None:
        grads.append(sum_to(ds, bias_shape))
    return grads


# ================================================================== softmax
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("where", ["fresh", "in place", "other buffer"])
def test_softmax_backward_matches_the_formula(rng, axis, where):
    s, g = normal(rng, 3, 4, 5), normal(rng, 3, 4, 5)
    w = softmax(s, axis=axis)
    W, G = H(w), H(g)
    expected = W * (G - (W * G).sum(axis=axis, keepdims=True))
    out = {"fresh": None, "in place": g, "other buffer": xp.empty_like(g)}[where]
    got = softmax_backward(g, w, axis=axis, out=out)
    close(got, expected)
    if out is not None:
        assert got is out


def test_softmax_numerator_and_softmax(rng):
    s = normal(rng, 4, 6)
    s[1, 3] = math.inf                                        # +inf: that entry takes all the weight
    s[2, :] = -math.inf                                       # all -inf: like an all-masked row
    mask = xp.zeros((4, 6), dtype=bool)
    mask[0, 1:3] = True
    S = np.where(H(mask), -np.inf, H(s))
    e = H(softmax_numerator(s, mask=mask))
    for row in (0, 3):                                        # ordinary rows: exp(s - max), masked -> 0
        close(e[row], np.exp(S[row] - S[row].max()))
    np.testing.assert_array_equal(e[1], [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(e[2], 0.0)
    w = H(softmax(s, mask=mask))
    for row in (0, 3):
        close(w[row], e[row] / e[row].sum())
    np.testing.assert_array_equal(w[1], e[1])
    np.testing.assert_array_equal(w[2], 0.0)


# column loop: (4, 8, 6, 11), (64, 4, 26, 26), (800, 48); reduction: rows of 1, few rows (the seq2seq
# decoders' (64, 24)), rows of 49, a large array
@pytest.mark.parametrize("shape", [(3, 5, 1), (4, 8, 6, 11), (64, 4, 26, 26), (800, 48), (64, 24), (5, 49),
                                   (600, 500)])
def test_row_max_column_loop_and_reduction_agree_with_max(rng, shape):
    """``_row_max``: the column-wise fmax loop (short rows in a small array) and ``fmax.reduce``
    (the rest) are both exactly ``max`` over the last axis, with +inf, -inf and all -inf rows,
    and ``fmax.reduce`` on the other axes."""
    x = normal(rng, *shape)
    flat = x.reshape(-1, shape[-1])
    flat[0, -1] = math.inf
    flat[1 % flat.shape[0], :] = -math.inf
    flat[2 % flat.shape[0], 0] = -math.inf
    for axis in range(-len(shape), len(shape)):
        got = softmax_module._row_max(x, axis)
        np.testing.assert_array_equal(H(got), H(x).max(axis=axis, keepdims=True))


def test_softmax_gpu_branches_give_the_same_numbers(rng, monkeypatch):
    # the CuPy branches (no ufunc where=, no fmax.reduce), run with NumPy: same numbers
    s = normal(rng, 3, 5, 7)
    s[0, 2, 4] = math.inf
    s[1, 1, :] = -math.inf
    mask = H(normal(rng, 5, 7)) > 1.0
    mask = xp.asarray(mask)
    numpy_path = H(softmax(s, mask=mask))
    monkeypatch.setattr(softmax_module, "BACKEND", "cupy")
    np.testing.assert_array_equal(H(softmax(s, mask=mask)), numpy_path)


# ================================================================== scaled dot-product attention
def _sdpa_case(rng, name):
    """``(q, k, v, kwargs, mask_for_reference, bias_for_reference)`` for one named case."""
    B, Hh, L, S, E, Ev = 2, 3, 5, 7, 4, 6
    q, k, v = normal(rng, B, Hh, L, E), normal(rng, B, Hh, S, E), normal(rng, B, Hh, S, Ev)
    kw, mask, bias = {}, None, None
    if name == "bool mask, an all-masked row":
        mask = H(normal(rng, L, S)) > 0.5
        mask[2] = True
        kw["attn_mask"] = xp.asarray(mask)
    elif name == "key padding":
        mask = np.zeros((B, 1, 1, S), dtype=bool)
        mask[0, ..., 5:] = True
        mask[1, ..., 3:] = True
        kw["attn_mask"] = xp.asarray(mask)
    elif name == "causal, L < S":
        kw["is_causal"] = True
        mask = np.triu(np.ones((L, S), dtype=bool), k=1)
    elif name == "causal, L = S":
        k, v = k[:, :, :L], v[:, :, :L]
        kw["is_causal"] = True
        mask = np.triu(np.ones((L, L), dtype=bool), k=1)
    elif name == "float mask with -inf":
        bias = np.where(H(normal(rng, L, S)) > 0.8, -np.inf, H(normal(rng, L, S)))
        kw["attn_mask"] = xp.asarray(bias)
    elif name == "bias (H, L, S) and bool mask":
        bias = H(normal(rng, Hh, L, S))
        mask = H(normal(rng, B, 1, L, S)) > 0.7
        kw.update(attn_bias=xp.asarray(bias), attn_mask=xp.asarray(mask))
    elif name == "B=1, shared key/value, scale 0.7":
        q = q[:1, 0]                                           # (1, L, E)
        k, v = k[0, 0], v[0, 0]                                # (S, E), (S, Ev): broadcast
        kw["scale"] = 0.7
    return q, k, v, kw, mask, bias


SDPA_CASES = ["plain, L != S", "bool mask, an all-masked row", "key padding", "causal, L < S", "causal, L = S",
              "float mask with -inf", "bias (H, L, S) and bool mask", "B=1, shared key/value, scale 0.7"]


@pytest.mark.parametrize("name", SDPA_CASES)
@pytest.mark.parametrize("dropout", [0.0, 0.4])
def test_sdpa_matches_the_textbook_version(rng, name, dropout):
    q, k, v, kw, mask, bias = _sdpa_case(rng, name)
    (ctx, w), cache = scaled_dot_product_attention(q, k, v, dropout_p=dropout, need_weights=True, **kw)
    keep = H(cache.keep)
    assert (keep is None) == (dropout == 0.0)
    Q, K, V = H(q), H(k), H(v)
    ref_ctx, ref_w, ref_attn = ref_sdpa(Q, K, V, mask, bias, kw.get("scale"), keep, dropout)
    close(ctx, ref_ctx)
    close(w, ref_w)
    close(cache.weights, ref_w)
    close(cache.attn, ref_attn)
    dc = normal(rng, *ctx.shape)
    grads = scaled_dot_product_attention_backward(dc, cache)
    ref = ref_sdpa_backward(H(dc), Q, K, V, ref_w, ref_attn, keep, dropout, kw.get("scale"),
                            None if bias is None else bias.shape)
    assert len(grads) == len(ref)
    for got, expected in zip(grads, ref):
        assert got.shape == expected.shape
        close(got, expected)


def test_sdpa_all_masked_row_is_zero_not_nan(rng):
    q, k, v, kw, mask, _ = _sdpa_case(rng, "bool mask, an all-masked row")
    (ctx, w), cache = scaled_dot_product_attention(q, k, v, need_weights=True, **kw)
    np.testing.assert_array_equal(H(w)[:, :, 2], 0.0)
    np.testing.assert_array_equal(H(ctx)[:, :, 2], 0.0)
    dq, dk, dv = scaled_dot_product_attention_backward(xp.ones_like(ctx), cache)
    np.testing.assert_array_equal(H(dq)[:, :, 2], 0.0)
    assert np.isfinite(H(dk)).all() and np.isfinite(H(dv)).all()


def test_sdpa_float32_stays_float32(rng):
    q = rng.normal((2, 3, 4))
    (ctx, w), cache = scaled_dot_product_attention(q, q, q, need_weights=True, dropout_p=0.2)
    grads = scaled_dot_product_attention_backward(xp.ones_like(ctx), cache)
    assert {a.dtype for a in (ctx, w, cache.attn, *grads)} == {xp.dtype(xp.float32)}


# ================================================================== multi-head attention
def ref_mha(m, pos, query, key, value, dout, key_padding_mask=None, attn_mask=None, is_causal=False, keep=None):
    """Textbook multi-head attention and its backward, on the host, from ``m``'s parameters.

    ``pos``: a copy of ``m.positional`` (its table gradient is accumulated there).
    Returns ``(out, per-head weights, {parameter name: gradient}, (dquery, dkey, dvalue))``.
    """
    E, Hh, D = m.embed_dim, m.num_heads, m.head_dim
    P = {n: H(p.data) for n, p in m.named_parameters()}
    if m._qkv_same_embed_dim:
        Wq, Wk, Wv = np.split(P["in_proj_weight"], 3)
    else:
        Wq, Wk, Wv = P["q_proj_weight"], P["k_proj_weight"], P["v_proj_weight"]
    bq, bk, bv = np.split(P["in_proj_bias"], 3) if "in_proj_bias" in P else (0.0, 0.0, 0.0)
    Xq, Xk, Xv, G = H(query), H(key), H(value), H(dout)
    B, L, S = Xq.shape[0], Xq.shape[1], Xk.shape[1]

    def split(y):
        return y.reshape(y.shape[0], y.shape[1], Hh, D).transpose(0, 2, 1, 3)

    def merge(y):
        return y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], E)

    q, k, v = split(Xq @ Wq.T + bq), split(Xk @ Wk.T + bk), split(Xv @ Wv.T + bv)
    q, k, bias, pos_cache = positions_forward(pos, q, k, is_causal)
    bias = H(bias)
    mask = np.zeros((B, Hh, L, S), dtype=bool)
    if key_padding_mask is not None:
        mask |= H(key_padding_mask)[:, None, None, :]
    if is_causal:
        mask |= np.triu(np.ones((L, S), dtype=bool), k=1)
    if attn_mask is not None:
        am = H(attn_mask)
        am = am.reshape(B, Hh, L, S) if am.ndim == 3 else am
        if am.dtype == bool:
            mask |= am
        else:
            bias = am if bias is None else bias + am
    ctx, w, attn = ref_sdpa(q, k, v, mask, bias, keep=keep, p=m.dropout)
    merged = merge(ctx)
    out = merged @ P["out_proj.weight"].T + P.get("out_proj.bias", 0.0)
    # backward, step by step
    grads = {"out_proj.weight": G.reshape(-1, E).T @ merged.reshape(-1, E)}
    if "out_proj.bias" in P:
        grads["out_proj.bias"] = G.sum(axis=(0, 1))
    dctx = split(G @ P["out_proj.weight"])
    dq, dk, dv, *dbias = ref_sdpa_backward(dctx, q, k, v, w, attn, keep, m.dropout,
                                           bias_shape=None if bias is None else np.shape(bias))
    dq, dk = positions_backward(pos, dq, dk, dbias[0] if dbias and pos is not None else None, pos_cache)
    dQ, dK, dV = merge(H(dq)), merge(H(dk)), merge(H(dv))
    dW = [d.reshape(-1, E).T @ x.reshape(-1, x.shape[-1]) for d, x in ((dQ, Xq), (dK, Xk), (dV, Xv))]
    if m._qkv_same_embed_dim:
        grads["in_proj_weight"] = np.concatenate(dW)
    else:
        grads.update(q_proj_weight=dW[0], k_proj_weight=dW[1], v_proj_weight=dW[2])
    if "in_proj_bias" in P:
        grads["in_proj_bias"] = np.concatenate([d.sum(axis=(0, 1)) for d in (dQ, dK, dV)])
    if "positional.weight" in P:
        grads["positional.weight"] = H(pos.weight.grad)
    return out, w, grads, (dQ @ Wq, dK @ Wk, dV @ Wv)


def _mha_case(rng, name):
    """``(module, (query, key, value), forward kwargs)`` for one named case, float64."""
    E, Hh, B, L, S = 8, 2, 3, 5, 6
    kw, mk = {}, {}
    if name == "kdim, vdim != embed_dim":
        mk.update(kdim=3, vdim=5)
    if name == "no bias, B=1":
        mk["bias"] = False
        B = 1
    if name.startswith("positional"):
        mk["positional"] = name.split()[-1]
    if name == "dropout":
        mk["dropout"] = 0.3
    if name == "tiled (block_size)":
        mk["block_size"] = (2, 3)
    m = MultiheadAttention(E, Hh, **mk).double()
    for _, p in m.named_parameters():
        p.data[...] = rng.normal(p.shape, scale=0.5, dtype=F64)
    x = normal(rng, B, L, E)
    self_attention = name.startswith(("fused", "positional", "dropout", "tiled", "no bias"))
    if self_attention:
        inputs = (x, x, x)
        S = L
    else:
        inputs = (x, normal(rng, B, S, m.kdim), normal(rng, B, S, m.vdim))
    if name in ("fused self-attention, padding + causal", "tiled (block_size)", "dropout"):
        kpm = np.zeros((B, S), dtype=bool)
        kpm[0, -2:] = True
        kw.update(key_padding_mask=xp.asarray(kpm), is_causal=True)
    if name == "cross, float mask":
        kw["attn_mask"] = xp.asarray(np.where(H(normal(rng, L, S)) > 1.0, -np.inf, H(normal(rng, L, S))))
    if name == "cross, (B*H, L, S) bool mask":
        mask = H(normal(rng, B * Hh, L, S)) > 0.6
        mask[1, 2] = True                                      # one all-masked row
        kw["attn_mask"] = xp.asarray(mask)
    if name == "positional rope":
        kw["is_causal"] = True
    return m, inputs, kw


MHA_CASES = ["fused self-attention", "fused self-attention, padding + causal", "cross, separate inputs",
             "kdim, vdim != embed_dim", "cross, float mask", "cross, (B*H, L, S) bool mask", "no bias, B=1",
             "positional rope", "positional alibi", "positional relative", "dropout", "tiled (block_size)"]


@pytest.mark.parametrize("name", MHA_CASES)
def test_multihead_matches_the_textbook_version(rng, name):
    m, inputs, kw = _mha_case(rng, name)
    pos = copy.deepcopy(m.positional)
    if pos is not None and hasattr(pos, "zero_grad"):
        pos.zero_grad()
    m.zero_grad()
    out, w = m(*inputs, average_attn_weights=False, **kw)
    dout = normal(rng, *out.shape)
    dinputs = m.backward(dout)
    keep = None if m.block_size is not None else H(m.cache[3].keep)
    assert (keep is None) == (m.dropout == 0.0)
    ref_out, ref_w, ref_grads, ref_dinputs = ref_mha(m, pos, *inputs, dout, keep=keep, **kw)
    close(out, ref_out)
    if m.block_size is None:
        close(w, ref_w)
        close(m(*inputs, **kw)[1], ref_w.mean(axis=1))         # averaged over the heads
    else:
        assert w is None
    for got, expected in zip(dinputs, ref_dinputs):
        close(got, expected)
    got_grads = {n: p.grad for n, p in m.named_parameters()}
    assert set(got_grads) == set(ref_grads)
    for n in ref_grads:
        close(got_grads[n], ref_grads[n])


def test_fused_and_separate_projections_agree(rng):
    # query is key is value takes the fused path (one E -> 3E product, one fused backward);
    # copies of x take the separate path: the same numbers
    for cls in (MultiheadAttention, LinearAttention):
        m = cls(8, 2).double()
        for _, p in m.named_parameters():
            p.data[...] = rng.normal(p.shape, scale=0.5, dtype=F64)
        x, dout = normal(rng, 2, 5, 8), normal(rng, 2, 5, 8)
        results = []
        for inputs in ((x, x, x), (x, x.copy(), x.copy())):
            m.zero_grad()
            out = m(*inputs)[0]
            results.append((out, m.backward(dout), [p.grad.copy() for _, p in m.named_parameters()]))
        (o1, d1, g1), (o2, d2, g2) = results
        close(o1, H(o2))
        for a, b in zip(list(d1) + g1, list(d2) + g2):
            close(a, H(b))


def test_backward_sum_inputs_is_the_sum_of_the_three_gradients(rng):
    # sum_inputs=True (what SelfAttention and the Transformer layers use): on the fused path one
    # dY W_in product, on the separate path three products added; both = dq + dk + dv, and the
    # parameter gradients are those of the plain backward
    for cls, kw in ((MultiheadAttention, {}), (LinearAttention, {}), (GroupedQueryAttention, {"num_kv_heads": 1})):
        m = cls(8, 2, **kw).double()
        for _, p in m.named_parameters():
            p.data[...] = rng.normal(p.shape, scale=0.5, dtype=F64)
        x, dout = normal(rng, 2, 5, 8), normal(rng, 2, 5, 8)
        for inputs in ((x, x, x), (x, x.copy(), x.copy())):
            m.zero_grad()
            m(*inputs)
            dq, dk, dv = m.backward(dout)
            plain = [p.grad.copy() for _, p in m.named_parameters()]
            m.zero_grad()
            m(*inputs)
            summed = m.backward(dout, sum_inputs=True)
            close(summed, H(dq) + H(dk) + H(dv))
            for (_, p), g in zip(m.named_parameters(), plain):
                close(p.grad, H(g))
    m = MultiheadAttention(8, 2, kdim=6, vdim=6).double()
    m(normal(rng, 2, 5, 8), normal(rng, 2, 3, 6), normal(rng, 2, 3, 6))
    with pytest.raises(ValueError, match=r"sum_inputs=True .* needs one shape; got \(2, 5, 8\), \(2, 3, 6\)"):
        m.backward(normal(rng, 2, 5, 8), sum_inputs=True)


# ================================================================== SAGAN
def ref_sagan(m, x, dout):
    """SAGAN on the channels-last pixels-as-tokens view, textbook forward and backward."""
    P = {n: H(p.data) for n, p in m.named_parameters()}
    X0, G = H(x), H(dout)
    B, C, Hh, W = X0.shape
    X = X0.reshape(B, C, Hh * W).transpose(0, 2, 1)           # (B, N, C)

    def conv(name):
        return X @ P[name + ".weight"].T + P[name + ".bias"]

    q, k, v = conv("query_conv"), conv("key_conv"), conv("value_conv")
    energy = q @ k.transpose(0, 2, 1)
    a = np.exp(energy - energy.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = a @ v
    gamma = P["gamma"][0]
    out = gamma * o.transpose(0, 2, 1).reshape(X0.shape) + X0
    g = G.reshape(B, C, -1).transpose(0, 2, 1)                # (B, N, C)
    grads = {"gamma": np.array([(g * o).sum()])}
    do = gamma * g
    da, dv = do @ v.transpose(0, 2, 1), a.transpose(0, 2, 1) @ do
    de = a * (da - (a * da).sum(-1, keepdims=True))
    dq, dk = de @ k, de.transpose(0, 2, 1) @ q
    dX = 0.0
    for name, d in (("query_conv", dq), ("key_conv", dk), ("value_conv", dv)):
        grads[name + ".weight"] = d.reshape(-1, d.shape[-1]).T @ X.reshape(-1, C)
        grads[name + ".bias"] = d.sum(axis=(0, 1))
        dX = dX + d @ P[name + ".weight"]
    return out, a, grads, G + dX.transpose(0, 2, 1).reshape(X0.shape)


@pytest.mark.parametrize("shape,reduction", [((2, 16, 3, 5), 8), ((1, 8, 4, 4), 4), ((3, 8, 1, 7), 8)])
def test_sagan_matches_the_textbook_version(rng, shape, reduction):
    m = SelfAttention2d(shape[1], reduction=reduction).double()
    for _, p in m.named_parameters():
        p.data[...] = rng.normal(p.shape, scale=0.5, dtype=F64)
    x, dout = normal(rng, *shape), normal(rng, *shape)
    m.zero_grad()
    out, attention = m(x)
    dx = m.backward(dout)
    ref_out, ref_a, ref_grads, ref_dx = ref_sagan(m, x, dout)
    close(out, ref_out)
    close(attention, ref_a)
    close(dx, ref_dx)
    for n, p in m.named_parameters():
        close(p.grad, ref_grads[n])
