"""The plain recurrent step and layer loop (the reference) against npattention/rnn.py's fast paths.

npattention/rnn.py is optimised for speed (one ``tanh`` for the sigmoid gates, gate gradients written
into one buffer, no state carrying without padding, ``dW_hh`` as one product after the loop, ...;
docs/seq2seq.md, "Speed").  This file keeps the plain version, one function per step written as the
equations read (the code of rnn.py before those optimisations), and checks in float64 that the
cells and the layers give the same outputs, final states, ``dx``, initial-state gradients and every
parameter gradient, to ~1e-12, with padding, bidirectional, two layers with dropout, given initial
states, B = 1, T = 1 and odd sizes.
"""
import numpy as np
import pytest

from npattention.backend import manual_seed, to_numpy, xp
from npattention.layers import sigmoid
from npattention.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, lengths_from

RTOL, ATOL = 1e-12, 1e-13


# ====================================================================== the plain cells
def plain_hh(cell, h):
    gh = h @ cell.weight_hh.data.T
    return gh + cell.bias_hh.data if cell.bias_hh is not None else gh


def plain_hh_backward(cell, d_gh, h):
    cell.weight_hh.grad += d_gh.T @ h
    if cell.bias_hh is not None:
        cell.bias_hh.grad += d_gh.sum(axis=0)
    return d_gh @ cell.weight_hh.data


def plain_recur(cell, gi, state):
    """``(new_state, cache)`` of one step, from ``gi = x W_ih^T + b_ih``."""
    H = cell.hidden_size
    if isinstance(cell, RNNCell):
        (h,) = state
        a = gi + plain_hh(cell, h)
        h_new = xp.tanh(a) if cell.nonlinearity == "tanh" else xp.maximum(a, 0)
        return (h_new,), (h, h_new)
    if isinstance(cell, GRUCell):
        (h,) = state
        gh = plain_hh(cell, h)
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        gh_n = gh[:, 2 * H:]
        n = xp.tanh(gi[:, 2 * H:] + r * gh_n)
        h_new = (1 - z) * n + z * h
        return (h_new,), (h, r, z, n, gh_n)
    h, c = state
    a = gi + plain_hh(cell, h)
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H:2 * H])
    g = xp.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:])
    c_new = f * c + i * g
    tc = xp.tanh(c_new)
    h_new = o * tc
    return (h_new, c_new), (h, c, i, f, g, o, tc)


def plain_recur_backward(cell, d_new, cache):
    """``(d_gi, d_state)`` of one step; adds ``dW_hh``, ``db_hh``."""
    if isinstance(cell, RNNCell):
        (dh_new,) = d_new
        h, h_new = cache
        da = dh_new * (1 - h_new ** 2) if cell.nonlinearity == "tanh" else dh_new * (h_new > 0)
        return da, (plain_hh_backward(cell, da, h),)
    if isinstance(cell, GRUCell):
        (dh_new,) = d_new
        h, r, z, n, gh_n = cache
        dn = dh_new * (1 - z)
        dz = dh_new * (h - n)
        dh = dh_new * z
        da_n = dn * (1 - n ** 2)
        dr = da_n * gh_n
        da_r = dr * r * (1 - r)
        da_z = dz * z * (1 - z)
        d_gi = xp.concatenate([da_r, da_z, da_n], axis=1)
        d_gh = xp.concatenate([da_r, da_z, da_n * r], axis=1)
        return d_gi, (dh + plain_hh_backward(cell, d_gh, h),)
    dh_new, dc_new = d_new
    h, c, i, f, g, o, tc = cache
    do = dh_new * tc
    dc = dc_new + dh_new * o * (1 - tc ** 2)
    da = xp.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * (1 - g ** 2), do * o * (1 - o)],
                        axis=1)
    return da, (plain_hh_backward(cell, da, h), dc * f)


def plain_project(cell, x):
    gi = x @ cell.weight_ih.data.T
    return gi + cell.bias_ih.data if cell.bias_ih is not None else gi


def plain_project_backward(cell, d_gi, x):
    d_gi_rows = d_gi.reshape(-1, d_gi.shape[-1])
    cell.weight_ih.grad += d_gi_rows.T @ x.reshape(-1, x.shape[-1])
    if cell.bias_ih is not None:
        cell.bias_ih.grad += d_gi_rows.sum(axis=0)
    return d_gi @ cell.weight_ih.data


# ====================================================================== the plain layer loop
def plain_run(layer, x, states0, lengths=None, mask=None):
    """Forward of RNN/GRU/LSTM with the plain cells: ``(out, final, cache)``; padding always carried."""
    B, T, _ = x.shape
    D, L = layer.num_directions, layer.num_layers
    given = all(st is not None for st in states0)
    lengths = lengths_from(lengths, mask, B, T, "plain")
    real = (xp.arange(T)[None, :] < lengths[:, None])[:, :, None]
    finals, caches, inp = [], [], x
    for li in range(L):
        outputs, layer_caches = [], []
        for d in range(D):
            cell = layer.cells[li * D + d]
            gi = plain_project(cell, inp)
            state = tuple(st[li * D + d] for st in states0) if given else cell.initial_state(B, x.dtype)
            ys, step_caches = [None] * T, [None] * T
            for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                new, step_caches[t] = plain_recur(cell, gi[:, t], state)
                keep = real[:, t]
                state = tuple(xp.where(keep, n, s) for n, s in zip(new, state))
                ys[t] = xp.where(keep, new[0], 0)
            outputs.append(xp.stack(ys, axis=1))
            finals.append(state)
            layer_caches.append(step_caches)
        caches.append((inp, layer_caches))
        out = outputs[0] if D == 1 else xp.concatenate(outputs, axis=-1)
        inp = layer.dropouts[li](out) if li < L - 1 else out
    final = tuple(xp.stack([f[k] for f in finals]) for k in range(len(finals[0])))
    return out, final, (x, real, caches, given)


def plain_backward(layer, cache, grad_output, grads_final):
    """BPTT with the plain cells: ``dx`` (plus the initial-state gradients when they were given)."""
    x, real, caches, given = cache
    B, T, _ = x.shape
    D, H, L = layer.num_directions, layer.hidden_size, layer.num_layers
    d_states0 = [None] * (L * D)
    d_out = grad_output
    for li in range(L - 1, -1, -1):
        inp, layer_caches = caches[li]
        d_inp = xp.zeros_like(inp)
        for d in range(D):
            i = li * D + d
            cell = layer.cells[i]
            dy = d_out[..., d * H:(d + 1) * H]
            d_state = tuple(xp.zeros((B, H), dtype=x.dtype) if g is None else g[i] for g in grads_final)
            d_gi = xp.zeros((B, T, cell.gates * H), dtype=x.dtype)
            for t in (range(T - 1, -1, -1) if d == 0 else range(T)):
                keep = real[:, t]
                d_new = [xp.where(keep, ds, 0) for ds in d_state]
                d_new[0] = d_new[0] + xp.where(keep, dy[:, t], 0)
                d_gi[:, t], d_prev = plain_recur_backward(cell, tuple(d_new), layer_caches[d][t])
                d_state = tuple(xp.where(keep, dp, ds) for dp, ds in zip(d_prev, d_state))
            d_inp += plain_project_backward(cell, d_gi, inp)
            d_states0[i] = d_state
        d_out = layer.dropouts[li - 1].backward(d_inp) if li > 0 else d_inp
    if not given:
        return (d_out,)
    return (d_out,) + tuple(xp.stack([ds[k] for ds in d_states0]) for k in range(len(grads_final)))


# ====================================================================== helpers
def close(got, want, what):
    np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=RTOL, atol=ATOL, err_msg=what)


def grads_of(module):
    return {name: to_numpy(p.grad).copy() for name, p in module.named_parameters()}


def zero_grads(module):
    for p in module.parameters():
        p.grad[...] = 0


# ====================================================================== cells
CELL_CASES = [(RNNCell, {}), (RNNCell, {"nonlinearity": "relu"}), (GRUCell, {}), (GRUCell, {"bias": False}),
              (LSTMCell, {}), (LSTMCell, {"bias": False})]


@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("cls,kw", CELL_CASES)
def test_cell_step_matches_the_plain_step(cls, kw, B, rng):
    """recur / recur_backward (used by the decoders and the cells' forward) = the plain step."""
    cell = cls(3, 7, **kw).double()
    x = rng.normal((B, 3), dtype=xp.float64)
    state = tuple(rng.normal((B, 7), dtype=xp.float64) for _ in range(cell.n_state))
    d_new = tuple(rng.normal((B, 7), dtype=xp.float64) for _ in range(cell.n_state))
    new, cache = cell.recur(cell.project(x), state)
    d_gi, d_state = cell.recur_backward(d_new, cache)
    fast = grads_of(cell)
    zero_grads(cell)
    new_ref, cache_ref = plain_recur(cell, plain_project(cell, x), state)
    d_gi_ref, d_state_ref = plain_recur_backward(cell, d_new, cache_ref)
    for k in range(cell.n_state):
        close(new[k], new_ref[k], f"new state {k}")
        close(d_state[k], d_state_ref[k], f"d_state {k}")
    close(d_gi, d_gi_ref, "d_gi")
    for name, g in grads_of(cell).items():
        close(fast[name], g, name)


@pytest.mark.parametrize("cls", [RNNCell, GRUCell, LSTMCell])
def test_cell_module_forward_backward_match_the_plain_step(cls, rng):
    """The cells used directly (forward(x, h[, c]) / backward) against the plain step."""
    cell = cls(4, 5).double()
    x = rng.normal((3, 4), dtype=xp.float64)
    state = tuple(rng.normal((3, 5), dtype=xp.float64) for _ in range(cell.n_state))
    grads = tuple(rng.normal((3, 5), dtype=xp.float64) for _ in range(cell.n_state))
    out = cell(x, *state)
    got = cell.backward(*grads)
    fast = grads_of(cell)
    zero_grads(cell)
    gi = plain_project(cell, x)
    new, cache = plain_recur(cell, gi, state)
    d_gi, d_state = plain_recur_backward(cell, grads, cache)
    dx = plain_project_backward(cell, d_gi, x)
    outs = out if isinstance(out, tuple) else (out,)
    for k in range(cell.n_state):
        close(outs[k], new[k], f"output {k}")
    for g, w in zip(got, (dx,) + d_state):
        close(g, w, "dx / d_state")
    for name, g in grads_of(cell).items():
        close(fast[name], g, name)


# ====================================================================== layers
LAYER_CASES = [
    # (B, T, I, H, options, padding, given initial state)
    (4, 6, 3, 5, {}, None, False),
    (4, 6, 3, 5, {}, "lengths", True),
    (3, 5, 2, 4, {"bidirectional": True}, "mask", False),
    (3, 5, 2, 4, {"bidirectional": True}, None, True),
    (3, 4, 3, 3, {"bidirectional": True, "num_layers": 2, "dropout": 0.3}, "lengths", True),
    (2, 4, 3, 3, {"num_layers": 2, "dropout": 0.5}, None, False),
    (1, 1, 2, 3, {}, None, True),  # B = 1, T = 1
    (1, 5, 2, 3, {"bidirectional": True}, "lengths", False),  # B = 1, padding
    (5, 1, 3, 2, {"bidirectional": True}, None, False),  # T = 1
    (3, 7, 5, 1, {}, "lengths", True),  # H = 1, odd sizes
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: f"B{c[0]}T{c[1]}I{c[2]}H{c[3]}-{c[4]}-{c[5]}-{c[6]}")
@pytest.mark.parametrize("cls", [RNN, GRU, LSTM])
def test_layer_matches_the_plain_loop(cls, case, rng):
    B, T, I, H, options, padding, given = case
    layer = cls(I, H, **options).double()
    n_state = layer.cell_class.n_state
    LD = layer.num_layers * layer.num_directions
    x = rng.normal((B, T, I), dtype=xp.float64)
    states0 = tuple(rng.normal((LD, B, H), dtype=xp.float64) if given else None for _ in range(n_state))
    lengths = xp.asarray([T] + [max(1, T - 1 - k % T) for k in range(B - 1)])[:B]
    kwargs = {}
    if padding == "lengths":
        kwargs["lengths"] = lengths
    elif padding == "mask":
        kwargs["mask"] = xp.arange(T)[None, :] >= lengths[:, None]
    grad_out = rng.normal((B, T, layer.output_size), dtype=xp.float64)
    grads_final = tuple(rng.normal((LD, B, H), dtype=xp.float64) for _ in range(n_state))

    manual_seed(1)  # the same dropout masks in both runs
    out, final = layer(x, *states0, **kwargs)
    got = layer.backward(grad_out, *grads_final)
    fast = grads_of(layer)
    zero_grads(layer)
    manual_seed(1)
    out_ref, final_ref, cache = plain_run(layer, x, states0, **kwargs)
    want = plain_backward(layer, cache, grad_out, grads_final)

    finals = final if isinstance(final, tuple) else (final,)
    close(out, out_ref, "outputs")
    for k in range(n_state):
        close(finals[k], final_ref[k], f"final state {k}")
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(want) == (1 + n_state if given else 1)
    for k, (g, w) in enumerate(zip(got, want)):
        close(g, w, "dx" if k == 0 else f"d initial state {k - 1}")
    ref = grads_of(layer)
    assert set(fast) == set(ref)
    for name in ref:
        close(fast[name], ref[name], name)


@pytest.mark.parametrize("cls", [GRU, LSTM])
def test_full_lengths_take_the_padded_path_and_agree(cls, rng):
    """lengths all == T (the carrying path) gives the same numbers as no lengths (the path without it)."""
    layer = cls(3, 4, bidirectional=True).double()
    x = rng.normal((3, 5, 3), dtype=xp.float64)
    g = rng.normal((3, 5, 8), dtype=xp.float64)
    out_a, _ = layer(x)
    dx_a = layer.backward(g)
    grads_a = grads_of(layer)
    zero_grads(layer)
    out_b, _ = layer(x, lengths=xp.asarray([5, 5, 5]))
    dx_b = layer.backward(g)
    close(out_a, out_b, "outputs")
    close(dx_a, dx_b, "dx")
    for name, gb in grads_of(layer).items():
        close(grads_a[name], gb, name)


def test_gates_stay_finite_and_exact_for_large_preactivations():
    """The tanh form of the sigmoid saturates to exactly 0 and 1, like the exp form, without overflow."""
    cell = LSTMCell(1, 1).double()
    cell.weight_ih.data[...] = 1e4
    with np.errstate(over="raise", invalid="raise"):
        (h, c), _ = cell.recur(cell.project(xp.asarray([[1.0], [-1.0]])), cell.initial_state(2, xp.float64))
    (h_ref, c_ref), _ = plain_recur(cell, plain_project(cell, xp.asarray([[1.0], [-1.0]])),
                                    cell.initial_state(2, xp.float64))
    close(h, h_ref, "h")
    close(c, c_ref, "c")


@pytest.mark.parametrize("dtype,atol", [(xp.float64, 3e-16), (xp.float32, 1.5e-7)])
def test_the_gates_sigmoid_is_the_sigmoid_to_one_rounding_of_one(dtype, atol):
    """layers.sigmoid(precise=False), the tanh form the gates use, against the precise form: absolute error
    about one rounding of 1 (not relative), no overflow for huge inputs, and out=x works in place."""
    x = xp.concatenate([xp.linspace(-40, 40, 2001), xp.asarray([-1e4, 1e4, 0.0])]).astype(dtype)
    with np.errstate(over="raise", invalid="raise"):
        fast = sigmoid(x, precise=False)
        np.testing.assert_allclose(to_numpy(fast), to_numpy(sigmoid(x)), rtol=0, atol=atol)
        y = x.copy()
        assert sigmoid(y, precise=False, out=y) is y
    np.testing.assert_array_equal(to_numpy(y), to_numpy(fast))
    assert float(fast[-3]) == 0.0 and float(fast[-2]) == 1.0 and float(fast[-1]) == 0.5
