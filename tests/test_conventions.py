"""PyTorch conventions: exact GELU for activation="gelu", tables in the module's dtype, and the
layers PyTorch users reach for first (AvgPool2d, multi-layer RNNs, BatchNorm2d options,
class weights, grid_sample modes), each against a closed form computed here."""
import math

import numpy as np
import pytest

from npattention import PositionwiseFeedForward, SinusoidalPositionalEncoding, manual_seed
from npattention.backend import to_numpy, xp
from npattention.layers import GELU


def exact_gelu(x):
    return np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()]).reshape(x.shape)


def test_activation_gelu_is_the_exact_erf_form_and_gelu_tanh_is_named():
    manual_seed(0)
    ff = PositionwiseFeedForward(4, 6, dropout=0.0, activation="gelu").double()
    assert isinstance(ff.activation, GELU) and ff.activation.approximate == "none"
    x = xp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)))
    h = to_numpy(x @ ff.linear1.weight.data.T + ff.linear1.bias.data)
    expected = exact_gelu(h) @ to_numpy(ff.linear2.weight.data).T + to_numpy(ff.linear2.bias.data)
    np.testing.assert_allclose(to_numpy(ff(x)), expected, rtol=1e-12, atol=1e-14)
    assert PositionwiseFeedForward(4, 6, activation="gelu_tanh").activation.approximate == "tanh"
    with pytest.raises(ValueError, match=r"'activation' must be one of \['gelu', 'gelu_tanh', 'relu'\]"):
        PositionwiseFeedForward(4, 6, activation="swish")


def test_sinusoidal_table_is_built_in_the_modules_dtype():
    pe = SinusoidalPositionalEncoding(6, max_len=50).double()
    t = np.arange(50)[:, None]
    freq = 10000.0 ** (-np.arange(0, 6, 2) / 6)
    ref = np.zeros((50, 6))
    ref[:, 0::2], ref[:, 1::2] = np.sin(t * freq), np.cos(t * freq)
    assert pe.pe.dtype == xp.float64
    np.testing.assert_allclose(to_numpy(pe.pe), ref, rtol=0, atol=1e-15)   # float32-then-cast: only 3e-8
    assert SinusoidalPositionalEncoding(6, max_len=50).pe.dtype == xp.float32


# ------------------------------------------------------------------ AvgPool2d, BatchNorm2d options
def avgpool_reference(x, k, s, p, include_pad):
    B, C, H, W = x.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    real = np.pad(np.ones((H, W)), p)
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    out = np.zeros((B, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            win = xp_[:, :, i * s:i * s + k, j * s:j * s + k]
            n = k * k if include_pad else real[i * s:i * s + k, j * s:j * s + k].sum()
            out[:, :, i, j] = win.sum(axis=(2, 3)) / n
    return out


@pytest.mark.parametrize("k,s,p,include_pad", [(2, 2, 0, True), (3, 2, 1, True), (3, 1, 1, False)])
def test_avgpool2d_matches_torch_definition(k, s, p, include_pad):
    from npattention import AvgPool2d
    x = np.random.default_rng(1).normal(size=(2, 3, 7, 6))
    pool = AvgPool2d(k, stride=s, padding=p, count_include_pad=include_pad)
    np.testing.assert_allclose(to_numpy(pool(xp.asarray(x))), avgpool_reference(x, k, s, p, include_pad), rtol=1e-13)
    with pytest.raises(ValueError, match=r"AvgPool2d: 'padding' must be at most half the kernel size"):
        AvgPool2d(2, padding=2)
    with pytest.raises(ValueError, match=r"AvgPool2d: 'x' must have shape \(B, C, H, W\)"):
        pool(xp.ones((3, 7, 6)))


def test_batchnorm2d_affine_false_and_no_running_stats():
    from npattention import BatchNorm2d
    x = np.random.default_rng(2).normal(2.0, 3.0, size=(4, 2, 3, 3))
    xhat = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    bn = BatchNorm2d(2, affine=False).double()
    assert bn.weight is None and bn.parameters() == [] and set(bn.state_dict()) == {"running_mean", "running_var"}
    np.testing.assert_allclose(to_numpy(bn(xp.asarray(x))), xhat, rtol=1e-12)
    bn = BatchNorm2d(2, track_running_stats=False).double()
    assert set(bn.state_dict()) == {"weight", "bias"}
    bn.eval()                                   # eval still normalises with the batch statistics
    np.testing.assert_allclose(to_numpy(bn(xp.asarray(x))), xhat, rtol=1e-12)
    with pytest.raises(TypeError, match="BatchNorm2d: 'affine' must be True or False, got 0"):
        BatchNorm2d(2, affine=0)


# ------------------------------------------------------------------ CrossEntropyLoss(weight=...)
def weighted_ce_reference(z, y, w, eps, ignore, reduction):
    """PyTorch's definition: (1-eps) nll_loss(weight) + eps/V * smooth term, mean = / sum of w_y."""
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    V = z.shape[-1]
    rows = []
    for lp, t in zip(logp.reshape(-1, V), y.reshape(-1)):
        if t == ignore:
            rows.append((0.0, 0.0))
            continue
        rows.append(((1 - eps) * w[t] * -lp[t] + eps / V * -(w * lp).sum(), w[t]))
    losses, wy = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    if reduction == "none":
        return losses.reshape(y.shape)
    return losses.sum() if reduction == "sum" else losses.sum() / wy.sum()


@pytest.mark.parametrize("eps,reduction", [(0.0, "mean"), (0.2, "mean"), (0.1, "sum"), (0.3, "none")])
def test_cross_entropy_class_weight_matches_torch_definition(eps, reduction):
    from npattention import CrossEntropyLoss
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(2, 4, 5)), np.array([[0, 4, 2, -100], [1, 1, 3, 2]])
    w = rng.uniform(0.2, 3.0, size=5)
    loss = CrossEntropyLoss(weight=xp.asarray(w), reduction=reduction, label_smoothing=eps)
    got = to_numpy(loss(xp.asarray(z), xp.asarray(y)))
    np.testing.assert_allclose(got, weighted_ce_reference(z, y, w, eps, -100, reduction), rtol=1e-12)
    # all weights 1 give the unweighted loss, value and gradient
    ones = CrossEntropyLoss(weight=xp.ones(5), reduction=reduction, label_smoothing=eps)
    plain = CrossEntropyLoss(reduction=reduction, label_smoothing=eps)
    np.testing.assert_allclose(to_numpy(ones(xp.asarray(z), xp.asarray(y))),
                               to_numpy(plain(xp.asarray(z), xp.asarray(y))), rtol=1e-12)
    g = xp.ones(y.shape) if reduction == "none" else None
    np.testing.assert_allclose(to_numpy(ones.backward(g)), to_numpy(plain.backward(g)), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="CrossEntropyLoss: 'weight' has 4 entries but the logits have V=5"):
        CrossEntropyLoss(weight=xp.ones(4))(xp.asarray(z), xp.asarray(y))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: 'weight' must have shape \(\*\), got \(5, 1\)"):
        CrossEntropyLoss(weight=xp.ones((5, 1)))


# ------------------------------------------------------------------ num_layers, dropout in RNN/GRU/LSTM
@pytest.mark.parametrize("cls_name", ["RNN", "GRU", "LSTM"])
def test_two_layers_equal_two_stacked_one_layer_modules(cls_name):
    import npattention
    cls = getattr(npattention, cls_name)
    manual_seed(0)
    deep = cls(3, 4, num_layers=2, bidirectional=True).double()
    first, second = cls(3, 4, bidirectional=True).double(), cls(8, 4, bidirectional=True).double()
    first.load_state_dict({k: v for k, v in deep.state_dict().items() if k.split(".")[1] in "01"})
    second.load_state_dict({k.replace("cells.2", "cells.0").replace("cells.3", "cells.1"): v
                            for k, v in deep.state_dict().items() if k.split(".")[1] in "23"})
    x = xp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)))
    lengths = xp.asarray([5, 3])
    out, state = deep(x, lengths=lengths)
    y1, s1 = first(x, lengths=lengths)
    y2, s2 = second(y1, lengths=lengths)
    np.testing.assert_allclose(to_numpy(out), to_numpy(y2), rtol=1e-12)
    h_deep = state[0] if cls_name == "LSTM" else state
    h1, h2 = (s1[0], s2[0]) if cls_name == "LSTM" else (s1, s2)
    assert h_deep.shape == (4, 2, 4)                              # (num_layers * D, B, H), layer-major
    np.testing.assert_allclose(to_numpy(h_deep), np.concatenate([to_numpy(h1), to_numpy(h2)]), rtol=1e-12)
    with pytest.raises(ValueError, match=rf"{cls_name}: 'h0' must have shape \(4, 2, 4\), got \(2, 2, 4\)"):
        deep(x, *([xp.zeros((2, 2, 4))] * (2 if cls_name == "LSTM" else 1)))


def test_rnn_dropout_between_layers_only_in_training():
    from npattention import GRU
    manual_seed(0)
    gru = GRU(3, 4, num_layers=3, dropout=0.5).double()
    x = xp.asarray(np.random.default_rng(1).normal(size=(2, 4, 3)))
    gru.eval()
    a, _ = gru(x)
    b, _ = gru(x)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))       # eval: no dropout, deterministic
    gru.train()
    c, _ = gru(x)
    assert not np.allclose(to_numpy(a), to_numpy(c))              # train: dropout between layers
    assert len(gru.dropouts) == 2 and "num_layers=3, dropout=0.5" in repr(gru)
    with pytest.raises(ValueError, match="GRU: 'num_layers' must be a positive int, got 0"):
        GRU(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"GRU: 'dropout' must be a float in \[0, 1\), got 1.5"):
        GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="GRU: 'x' has T = 0 positions"):
        gru(xp.zeros((2, 0, 3)))


# ------------------------------------------------------------------ grid_sample modes and paddings
def _torch_source_index(u, n, align, padding):
    """PyTorch's grid_sampler_compute_source_index, written out for one coordinate."""
    i = (u + 1) / 2 * (n - 1) if align else ((u + 1) * n - 1) / 2
    if padding == "border":
        i = min(max(i, 0), n - 1)
    elif padding == "reflection":
        lo2, hi2 = (0, 2 * (n - 1)) if align else (-1, 2 * n - 1)
        if lo2 == hi2:
            i = 0.0
        else:
            lo, span = lo2 / 2, (hi2 - lo2) / 2
            d = abs(i - lo)
            extra, flips = math.fmod(d, span), math.floor(d / span)
            i = extra + lo if flips % 2 == 0 else span - extra + lo
        i = min(max(i, 0), n - 1)
    return i


def grid_sample_reference(img, grid, mode, padding, align):
    B, C, H, W = img.shape
    _, Ho, Wo, _ = grid.shape
    out = np.zeros((B, C, Ho, Wo))
    for b in range(B):
        for p in range(Ho):
            for q in range(Wo):
                x = _torch_source_index(grid[b, p, q, 0], W, align, padding)
                y = _torch_source_index(grid[b, p, q, 1], H, align, padding)
                if mode == "nearest":
                    r, c = int(np.rint(y)), int(np.rint(x))
                    if 0 <= r < H and 0 <= c < W:
                        out[b, :, p, q] = img[b, :, r, c]
                    continue
                x0, y0 = math.floor(x), math.floor(y)
                for r, c in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                    if 0 <= r < H and 0 <= c < W:
                        out[b, :, p, q] += (1 - abs(x - c)) * (1 - abs(y - r)) * img[b, :, r, c]
    return out


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [False, True])
def test_grid_sample_modes_and_paddings_match_torch_definition(mode, padding, align):
    from npattention.vision.stn import grid_sample
    rng = np.random.default_rng(4)
    img, grid = rng.normal(size=(2, 3, 4, 5)), rng.uniform(-2.5, 2.5, size=(2, 3, 4, 2))
    got = to_numpy(grid_sample(xp.asarray(img), xp.asarray(grid), mode, padding, align))
    np.testing.assert_allclose(got, grid_sample_reference(img, grid, mode, padding, align), rtol=1e-12, atol=1e-12)


def test_grid_sample_nan_grid_and_bad_options():
    from npattention.vision.stn import grid_sample, grid_sample_backward
    img, grid = xp.ones((1, 1, 3, 3)), xp.zeros((1, 2, 2, 2))
    grid[0, 0, 1, 0] = xp.nan
    out = to_numpy(grid_sample(img, grid))                 # no IndexError: NaN where the grid is NaN
    assert np.isnan(out[0, 0, 0, 1]) and np.isfinite(np.delete(out.ravel(), 1)).all()
    dimg, _ = grid_sample_backward(xp.ones((1, 1, 2, 2)), img, grid)
    assert np.isnan(to_numpy(dimg)).any()                  # NaN propagates (anomaly mode names it)
    with pytest.raises(ValueError, match="grid_sample: 'mode' must be 'bilinear' or 'nearest', got 'bicubic'"):
        grid_sample(img, grid, mode="bicubic")
    with pytest.raises(ValueError, match="grid_sample: 'padding_mode' must be 'zeros', 'border' or 'reflection'"):
        grid_sample(img, grid, padding_mode="wrap")
