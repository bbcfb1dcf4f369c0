"""Sequence encoders and read-outs (why self-attention, the three task types) and their toy data."""
import numpy as np
import pytest

from npattention.backend import Generator, to_numpy, xp
from npattention.data.long_range import make_lookback
from npattention.data.task_types import TAGGING_WORDS, make_keyword, make_tagging
from npattention.demos.why_self_attention import build, format_table, time_layers, train_lookback
from npattention.masks import padding_mask
from npattention.sequence_models import AttentionPooling, ConvStack, SequenceClassifier, WindowFC


def H(a):
    return to_numpy(a)


def test_window_fc_sees_exactly_its_window(rng):
    m = WindowFC(2, 3, context=1).double()
    x = rng.normal((1, 5, 2), dtype=xp.float64)
    out = m(x)
    dx = H(m.backward(xp.zeros_like(out) + (xp.arange(5) == 2)[None, :, None]))   # gradient of position 2 only
    touched = np.abs(dx[0]).sum(axis=1) > 0
    assert touched.tolist() == [False, True, True, True, False]
    # position 0's window is [0, x0, x1]: compare with the Linear on that concatenation
    W, b = H(m.fc.weight.data), H(m.fc.bias.data)
    win = np.concatenate([np.zeros(2), H(x)[0, 0], H(x)[0, 1]])
    np.testing.assert_allclose(H(out)[0, 0], np.maximum(W @ win + b, 0), atol=1e-12)


def test_conv_stack_receptive_field(rng):
    m = ConvStack(2, 3, kernel=3, layers=2).double()
    for conv in m.convs:
        conv.bias.data[...] = 1.0                                  # keep the ReLUs open
    assert m.receptive_field == 5
    x = rng.normal((1, 11, 2), dtype=xp.float64)
    base = H(m(x))[0, 5]
    changed = []
    for j in range(11):
        x2 = x.copy()
        x2[0, j] += 10.0
        changed.append(not np.allclose(H(m(x2))[0, 5], base))
    assert np.flatnonzero(changed).tolist() == [3, 4, 5, 6, 7]   # 2 positions either side, never more


def test_attention_pooling_three_steps_and_mask(rng):
    pool = AttentionPooling(3).double()
    pool.query.data[...] = xp.asarray([1.0, -2.0, 0.5])
    x = rng.normal((2, 4, 3), dtype=xp.float64)
    mask = padding_mask(xp.asarray([4, 2]), 4)
    c = H(pool(x, mask))
    s = H(x) @ np.array([1.0, -2.0, 0.5]) / np.sqrt(3)
    s[1, 2:] = -np.inf
    a = np.exp(s - s.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    np.testing.assert_allclose(H(pool.last_weights), a, atol=1e-12)
    np.testing.assert_allclose(c, np.einsum("bt,bte->be", a, H(x)), atol=1e-12)
    assert np.all(H(pool.last_weights)[1, 2:] == 0)


def test_lookback_data():
    X, y = make_lookback(50, T=7, d=3, vocab=5, seed=1)
    assert X.shape == (50, 7) and y.shape == (50,) and int(X.max()) <= 4
    np.testing.assert_array_equal(H(y), H(X)[:, 3])
    np.testing.assert_array_equal(H(make_lookback(50, T=7, d=3, vocab=5, seed=1)[0]), H(X))
    with pytest.raises(ValueError, match="'d' must be an int in \\[0, T\\) = \\[0, 7\\), got 7"):
        make_lookback(5, T=7, d=7)


def test_tagging_and_keyword_data():
    X, tags = make_tagging(200, T=9, seed=3)
    Xh, th = H(X), H(tags)
    words = np.array(TAGGING_WORDS)
    assert np.all(th[np.isin(words[Xh], ["the", "a"])] == 0) and np.all(th[np.isin(words[Xh], ["runs"])] == 3)
    amb = Xh >= 8
    prev = np.concatenate([np.full((200, 1), 2), Xh[:, :-1]], axis=1)
    assert np.all(th[amb & (prev <= 1)] == 2) and np.all(th[amb & (prev > 1)] == 3)
    assert 0 < amb.mean() < 0.4
    K, y, where = (H(a) for a in make_keyword(100, T=8, seed=2))
    assert np.all((K >= 6).sum(axis=1) == 1)                       # exactly one keyword
    np.testing.assert_array_equal(K[np.arange(100), where] // 2 - 3, y)


def test_budget_matching_keeps_parameter_counts_close():
    counts = {enc: build(enc, 4, 10).num_parameters() for enc in ("self_attention", "lstm", "cnn", "window_fc")}
    assert max(counts.values()) / min(counts.values()) < 1.1, counts


def test_self_attention_solves_long_lookback_where_the_cnn_cannot():
    acc_sa, _ = train_lookback("self_attention", d=9, T=10, steps=80)
    acc_cnn, _ = train_lookback("cnn", d=9, T=10, steps=80)
    acc_near, _ = train_lookback("cnn", d=1, T=10, steps=80)
    assert acc_sa > 0.95             # reached 1.00 when written
    assert acc_cnn < 0.35            # receptive field 5: d = 9 is out of reach (chance 0.25)
    assert acc_near > 0.95           # ... but d = 1 is inside it


def test_cost_table_runs_and_prints_every_layer():
    times = time_layers((8, 16), d=8, batch_size=2, repeat=1)
    table = format_table(times, (8, 16))
    for row in ("self-attention", "LSTM", "convolution", "window FC"):
        assert row in table
    assert all(t > 0 for ts in times.values() for t in ts)


def test_sequence_classifier_errors():
    with pytest.raises(ValueError, match="'encoder' must be one of"):
        SequenceClassifier(4, 2, encoder="gru")
    with pytest.raises(ValueError, match="'readout' must be one of"):
        SequenceClassifier(4, 2, readout="first")
    with pytest.raises(ValueError, match="kernel"):
        ConvStack(2, 2, kernel=4)
    with pytest.raises(ValueError, match="context"):
        WindowFC(2, 2, context=-1)
    assert SequenceClassifier(4, 3, "window_fc", "all", d_model=2, hidden=3)(
        xp.asarray(Generator(0).host.integers(0, 4, size=(2, 5)))).shape == (2, 5, 3)


def test_why_demo_runs_end_to_end(tmp_path, capsys):
    from npattention.demos.why_self_attention import main

    assert main(["--T", "6", "--steps", "3", "--distances", "1,5", "--no-plots", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for line in ("self-attention", "LSTM", "CNN stack", "window FC", "max path"):
        assert line in out
