"""The optimised layers, loss and optimiser against their plain (obviously correct) versions.

Each ``*_reference`` below is the straightforward code the library had before it was made
faster (docs/layers.md and docs/training.md, "Speed"): stacked matmuls and ``.sum`` over an
axis, masks multiplied in, a one-hot target array, Adam one parameter at a time.  The fast
paths must give the same outputs and gradients in float64 (to ~1e-12), on shapes that include
the edge cases: one row, odd sizes, empty batches, non-contiguous inputs, padding, ignored rows.
"""
import math

import numpy as np
import pytest

from npattention import Parameter
from npattention.backend import to_numpy, xp
from npattention.layers import Embedding, LayerNorm, Linear
from npattention.losses import CrossEntropyLoss
from npattention.optim import Adam, AdamW, clip_grad_norm_

RTOL = 1e-12


def _np(a):
    return to_numpy(a).astype(np.float64)


def _close(got, want, rtol=RTOL):
    got, want = _np(got), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def _normal(rng, shape):
    return xp.asarray(rng.normal(shape, dtype=xp.float64))


# ------------------------------------------------------------------ Linear
def linear_reference(x, W, b, g):
    """``y = x W^T + b`` with NumPy's stacked matmul; the gradients by the textbook formulas."""
    y = x @ W.T + (0 if b is None else b)
    rows_g, rows_x = g.reshape(-1, W.shape[0]), x.reshape(-1, W.shape[1])
    return y, g @ W, rows_g.T @ rows_x, (None if b is None else rows_g.sum(axis=0))


@pytest.mark.parametrize("lead", [(5,), (2, 3), (1, 1), (3, 1, 2), (0, 4), ()])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_the_plain_version(rng, lead, bias):
    m = Linear(6, 5, bias=bias).double()
    x, g = _normal(rng, lead + (6,)), _normal(rng, lead + (5,))
    y = m(x)
    dx = m.backward(g)
    W, b = _np(m.weight.data), None if m.bias is None else _np(m.bias.data)
    y_ref, dx_ref, dW_ref, db_ref = linear_reference(_np(x), W, b, _np(g))
    _close(y, y_ref)
    _close(dx, dx_ref)
    _close(m.weight.grad, dW_ref)
    if bias:
        _close(m.bias.grad, db_ref)


def test_linear_accepts_a_non_contiguous_input(rng):
    m = Linear(4, 3).double()
    x = _normal(rng, (4, 5, 2)).transpose(2, 1, 0)        # (2, 5, 4), not contiguous
    g = _normal(rng, (2, 5, 3))
    y, dx = m(x), None
    dx = m.backward(g)
    y_ref, dx_ref, dW_ref, db_ref = linear_reference(_np(x), _np(m.weight.data), _np(m.bias.data), _np(g))
    _close(y, y_ref)
    _close(dx, dx_ref)
    _close(m.weight.grad, dW_ref)


# ------------------------------------------------------------------ LayerNorm
def layernorm_reference(x, gamma, beta, g, eps=1e-5):
    """Forward and backward of LayerNorm, written as in docs/layers.md (means over the last axis)."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    y = xhat * (1.0 if gamma is None else gamma) + (0.0 if beta is None else beta)
    lead = tuple(range(g.ndim - 1))
    dbeta = g.sum(axis=lead)
    dgamma = (g * xhat).sum(axis=lead)
    d_xhat = g * (1.0 if gamma is None else gamma)
    D = x.shape[-1]
    dx = rstd * (d_xhat - d_xhat.sum(-1, keepdims=True) / D - xhat * (d_xhat * xhat).sum(-1, keepdims=True) / D)
    return y, dx, dgamma, dbeta


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 7), (1, 1, 6), (3, 1, 2, 8), (0, 3, 4), (9,)])
@pytest.mark.parametrize("affine", ["both", "no_bias", "none"])
def test_layernorm_matches_the_plain_version(rng, shape, affine):
    D = shape[-1]
    m = LayerNorm(D, elementwise_affine=affine != "none", bias=affine == "both").double()
    if m.weight is not None:   # not the initial ones / zeros, so that gamma and beta show
        m.weight.data[...] = _normal(rng, (D,))
    if m.bias is not None:
        m.bias.data[...] = _normal(rng, (D,))
    x, g = 3.0 + 2.0 * _normal(rng, shape), _normal(rng, shape)   # mean far from 0
    y = m(x)
    dx = m.backward(g)
    gamma = None if m.weight is None else _np(m.weight.data)
    beta = None if m.bias is None else _np(m.bias.data)
    y_ref, dx_ref, dgamma_ref, dbeta_ref = layernorm_reference(_np(x), gamma, beta, _np(g))
    _close(y, y_ref)
    _close(dx, dx_ref)
    if m.weight is not None:
        _close(m.weight.grad, dgamma_ref)
    if m.bias is not None:
        _close(m.bias.grad, dbeta_ref)


def test_layernorm_leaves_its_inputs_alone_and_accepts_a_view(rng):
    m = LayerNorm(4, elementwise_affine=False).double()
    x = _normal(rng, (4, 3, 2)).transpose(1, 2, 0)       # (3, 2, 4), not contiguous
    g = _normal(rng, (3, 2, 4))
    x_before, g_before = _np(x).copy(), _np(g).copy()
    y_ref, dx_ref, _, _ = layernorm_reference(_np(x), None, None, _np(g))
    _close(m(x), y_ref)
    _close(m.backward(g), dx_ref)
    np.testing.assert_array_equal(_np(x), x_before)
    np.testing.assert_array_equal(_np(g), g_before)   # the in-place steps work in the layer's own buffers


def test_layernorm_promotes_like_numpy():
    """float32 input into a float64 LayerNorm: a float64 output, as ``xhat * gamma`` would give."""
    m = LayerNorm(3).double()
    x = xp.asarray([[1.0, 2.0, 4.0]], dtype=xp.float32)
    y = m(x)
    assert y.dtype == xp.float64
    assert m.backward(xp.ones((1, 3), dtype=xp.float32)).dtype == xp.float64


# ------------------------------------------------------------------ Embedding
def embedding_reference(W, ids, g, padding_idx, grad_before):
    """Fancy-index lookup, padding positions multiplied by 0; masked gradient scatter-added."""
    out = W[ids]
    if padding_idx is not None:
        out = out * (ids != padding_idx)[..., None]
    grad = grad_before.copy()
    gr = g.reshape(-1, W.shape[1])
    if padding_idx is not None:
        gr = gr * (ids.reshape(-1) != padding_idx)[:, None]
    np.add.at(grad, ids.reshape(-1), gr)
    return out, grad


@pytest.mark.parametrize("V, ids_shape", [(5, (4, 6)),        # more ids than rows: the zero-row copy path
                                          (50, (2, 3)),        # fewer ids than rows: the masked path
                                          (3, (1,)), (7, (0, 2))])
@pytest.mark.parametrize("padding_idx", [None, 1, -1])
def test_embedding_matches_the_plain_version(rng, V, ids_shape, padding_idx):
    m = Embedding(V, 4, padding_idx=padding_idx).double()
    ids = rng.integers(0, V, ids_shape)
    if padding_idx is not None and ids.size:
        ids.reshape(-1)[0] = m.padding_idx               # at least one padding position
    # a padding row that is not zero (a tied output layer trains it) and a gradient already there
    m.weight.data[...] = _normal(rng, (V, 4))
    m.weight.grad[...] = _normal(rng, (V, 4))
    grad_before = _np(m.weight.grad)
    g = _normal(rng, ids_shape + (4,))
    out = m(ids)
    m.backward(g)
    out_ref, grad_ref = embedding_reference(_np(m.weight.data), to_numpy(ids), _np(g), m.padding_idx, grad_before)
    _close(out, out_ref)
    _close(m.weight.grad, grad_ref)
    if padding_idx is not None:   # the padding row's gradient is untouched, bit for bit
        np.testing.assert_array_equal(_np(m.weight.grad)[m.padding_idx], grad_before[m.padding_idx])


# ------------------------------------------------------------------ CrossEntropyLoss
def cross_entropy_reference(logits, target, ignore_index, eps, reduction, weight):
    """The loss and dL/dlogits with an explicit one-hot q (docs/layers.md), for grad_output = 1."""
    V = logits.shape[-1]
    z, y = logits.reshape(-1, V), target.reshape(-1)
    valid = y != ignore_index
    y_safe = np.where(valid, y, 0)
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    onehot = (np.arange(V)[None, :] == y_safe[:, None]).astype(float)
    w = np.ones(V) if weight is None else weight
    w_y = w[y_safe]
    per_row = ((1 - eps) * w_y * -logp[np.arange(len(y)), y_safe] + (eps / V) * -(logp @ w)) * valid
    grad = np.exp(logp) * ((1 - eps) * w_y + (eps / V) * w.sum())[:, None] \
        - ((1 - eps) * w_y[:, None] * onehot + (eps / V) * w[None, :])
    grad = grad * valid[:, None]
    if reduction == "none":
        return per_row.reshape(target.shape), grad.reshape(logits.shape)
    if reduction == "sum":
        return per_row.sum(), grad.reshape(logits.shape)
    denom = (w_y * valid).sum() or 1.0
    return per_row.sum() / denom, (grad / denom).reshape(logits.shape)


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 7), (1, 1, 4)])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_the_plain_version(rng, shape, eps, reduction, weighted):
    V = shape[-1]
    weight = xp.asarray(np.linspace(0.5, 2.0, V)) if weighted else None
    m = CrossEntropyLoss(weight, ignore_index=0, label_smoothing=eps, reduction=reduction)
    logits = 4.0 * _normal(rng, shape)
    target = rng.integers(0, V, shape[:-1])
    loss = m(logits, target)
    grad = m.backward(xp.ones(shape[:-1]) if reduction == "none" else None)
    loss_ref, grad_ref = cross_entropy_reference(_np(logits), to_numpy(target), 0, eps, reduction,
                                                 None if weight is None else to_numpy(weight))
    _close(loss, loss_ref)
    _close(grad, grad_ref)


def test_cross_entropy_all_rows_ignored_has_zero_loss_and_gradient(rng):
    m = CrossEntropyLoss(ignore_index=2, label_smoothing=0.2)
    logits = _normal(rng, (3, 4))
    assert float(m(logits, xp.asarray([2, 2, 2]))) == 0.0
    np.testing.assert_array_equal(_np(m.backward()), np.zeros((3, 4)))


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
def test_log_softmax_is_bit_for_bit_the_plain_formula(rng, dtype):
    # the loss's log_softmax (row maximum by fmax.reduce or the column loop, the last subtraction in
    # place) gives exactly the numbers of the textbook s - max - log sum exp(s - max), on every axis,
    # with -inf entries, and a float result for integer scores
    from npattention.softmax import log_softmax
    x = to_numpy(rng.normal((40, 6, 30), dtype=xp.float64)) * 4
    x = x.astype(dtype)
    if dtype != "int64":
        x[0, 0, :3] = -np.inf
    for axis in range(-3, 3):
        with np.errstate(invalid="ignore"):   # an all -inf column: NaN in both, as before
            plain = x - x.max(axis=axis, keepdims=True)
            plain = plain - np.log(np.exp(plain).sum(axis=axis, keepdims=True))
            got = to_numpy(log_softmax(xp.asarray(x), axis=axis))
        assert got.dtype == plain.dtype
        np.testing.assert_array_equal(got, plain)


# ------------------------------------------------------------------ Adam, AdamW, clip_grad_norm_
def adam_reference(thetas, grads_per_step, lr, betas, eps, wd, decoupled):
    """Adam one parameter at a time (PyTorch's pseudocode), as NumPy arrays."""
    thetas = [t.copy() for t in thetas]
    m = [np.zeros_like(t) for t in thetas]
    v = [np.zeros_like(t) for t in thetas]
    b1, b2 = betas
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            if wd and decoupled:
                thetas[i] *= 1 - lr * wd
            elif wd:
                g = g + wd * thetas[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            thetas[i] -= lr * (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + eps)
    return thetas, m, v


SHAPES = [(3, 4), (5,), (1,), (2, 1, 3)]


@pytest.mark.parametrize("cls, wd", [(Adam, 0.0), (Adam, 0.1), (AdamW, 0.0), (AdamW, 0.05)])
def test_adam_trajectory_matches_the_per_parameter_version(rng, cls, wd):
    thetas = [rng.normal(s, dtype=xp.float64) for s in SHAPES]
    grads = [[rng.normal(s, dtype=xp.float64) for s in SHAPES] for _ in range(6)]
    params = [Parameter(t.copy()) for t in thetas]
    opt = cls(params, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad[...] = g
        opt.step()
    want, m_ref, v_ref = adam_reference([_np(t) for t in thetas], [[_np(g) for g in gs] for gs in grads],
                                        0.01, (0.8, 0.95), 1e-6, wd, cls is AdamW)
    for p, w, m, v, s in zip(params, want, m_ref, v_ref, opt.state):
        _close(p.data, w)
        _close(s["exp_avg"], m)
        _close(s["exp_avg_sq"], v)
        assert s["exp_avg"].shape == p.data.shape


def test_adam_step_is_bit_for_bit_its_update(rng):
    """step() runs update()'s operations, in the same order, on flat vectors."""
    thetas = [rng.normal(s) for s in SHAPES]                  # float32, the default
    flat = [Parameter(t.copy()) for t in thetas]
    one_by_one = [Parameter(t.copy()) for t in thetas]
    opt_flat = Adam(flat, lr=0.003, weight_decay=0.01)
    opt_loop = Adam(one_by_one, lr=0.003, weight_decay=0.01)
    for _ in range(4):
        for a, b in zip(flat, one_by_one):
            g = rng.normal(a.shape)
            a.grad[...] = g
            b.grad[...] = g
        opt_flat.step()
        opt_loop.step_count += 1
        for p, state in zip(one_by_one, opt_loop.state):
            opt_loop.update(p, p.grad, state, opt_loop.step_count)
    for a, b in zip(flat, one_by_one):
        np.testing.assert_array_equal(to_numpy(a.data), to_numpy(b.data))


def test_adam_flat_moments_survive_state_dict_round_trips(rng):
    params = [Parameter(rng.normal(s, dtype=xp.float64)) for s in SHAPES]
    twin = [Parameter(p.data.copy()) for p in params]
    opt, opt_twin = Adam(params, lr=0.01), Adam(twin, lr=0.01)
    grads = [[rng.normal(s, dtype=xp.float64) for s in SHAPES] for _ in range(5)]

    def step(o, ps, gs):
        for p, g in zip(ps, gs):
            p.grad[...] = g
        o.step()

    for gs in grads[:2]:
        step(opt, params, gs)
        step(opt_twin, twin, gs)
    saved = opt.state_dict()
    step(opt, params, grads[2])                    # the saved state is a copy: this step leaves it alone
    assert not np.array_equal(to_numpy(saved["state.0.exp_avg"]), to_numpy(opt.state[0]["exp_avg"]))
    opt_twin.load_state_dict(opt_twin.state_dict())   # fresh per-parameter arrays: the flat vectors are rebuilt
    step(opt_twin, twin, grads[2])
    for gs in grads[3:]:
        step(opt, params, gs)
        step(opt_twin, twin, gs)
    for a, b in zip(params, twin):
        np.testing.assert_array_equal(to_numpy(a.data), to_numpy(b.data))


def clip_reference(grads, max_norm, norm_type):
    """Per-parameter norms in float64, then the norm of the norms (torch's definition)."""
    if math.isinf(norm_type):
        total = max(np.abs(g).max() for g in grads)
    else:
        total = sum((np.abs(g) ** norm_type).sum() for g in grads) ** (1.0 / norm_type)
    coef = max_norm / (total + 1e-6)
    return total, [g * coef if coef < 1 else g for g in grads]


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_the_per_parameter_version(rng, norm_type, max_norm):
    params = [Parameter(xp.zeros(s, dtype=xp.float64)) for s in SHAPES]
    for p in params:
        p.grad[...] = rng.normal(p.shape, dtype=xp.float64)
    total_ref, grads_ref = clip_reference([_np(p.grad) for p in params], max_norm, norm_type)
    assert clip_grad_norm_(params, max_norm, norm_type=norm_type) == pytest.approx(total_ref, rel=RTOL)
    for p, g in zip(params, grads_ref):
        _close(p.grad, g)


def test_clip_grad_norm_of_float32_gradients_sums_in_float64():
    """1e6 float32 entries of 1e-3 (plus one large one): the float64 sum is exact to ~1e-12."""
    p = Parameter(xp.zeros(10 ** 6, dtype=xp.float32))
    p.grad[...] = 1e-3
    p.grad[0] = 30.0
    want = math.sqrt(900.0 + (10 ** 6 - 1) * float(np.float32(1e-3)) ** 2)
    assert clip_grad_norm_([p], 1e9) == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------ ReLU
def test_relu_matches_maximum_with_zero_including_the_extremes(rng):
    from npattention.layers import ReLU
    m = ReLU()
    x = xp.concatenate([_normal(rng, (50,)), xp.asarray([0.0, -0.0, -np.inf, np.inf, np.nan])])
    y = m(x)
    np.testing.assert_array_equal(to_numpy(y), np.maximum(to_numpy(x), 0))
    g = _normal(rng, x.shape)
    np.testing.assert_array_equal(to_numpy(m.backward(g)), to_numpy(g) * (to_numpy(x) > 0))
