"""CrossEntropyLoss and MSELoss against closed forms computed here with NumPy."""
import numpy as np
import pytest

from npattention.backend import to_numpy, xp
from npattention.gradcheck import gradcheck
from npattention.losses import CrossEntropyLoss, MSELoss


def _np(a):
    return to_numpy(a).astype(np.float64)


def _log_softmax(x):
    s = x - x.max(-1, keepdims=True)
    return s - np.log(np.exp(s).sum(-1, keepdims=True))


def _x(a):
    return xp.asarray(a, dtype=xp.float64)


def test_cross_entropy_is_minus_log_softmax_at_target(rng):
    logits = _np(rng.normal((6, 5)))
    y = np.array([0, 4, 2, 2, 1, 3])
    loss = CrossEntropyLoss()(_x(logits), xp.asarray(y))
    assert loss.shape == ()
    expected = -_log_softmax(logits)[np.arange(6), y].mean()
    assert abs(float(loss) - expected) < 1e-12


def test_cross_entropy_over_sequences_equals_flattened(rng):
    logits = rng.normal((2, 3, 7), dtype=xp.float64)
    y = rng.integers(0, 7, size=(2, 3))
    a = float(CrossEntropyLoss()(logits, y))
    b = float(CrossEntropyLoss()(logits.reshape(6, 7), y.reshape(6)))
    assert abs(a - b) < 1e-14
    per_row = _np(CrossEntropyLoss(reduction="none")(logits, y))
    assert per_row.shape == (2, 3) and abs(per_row.mean() - a) < 1e-14
    assert abs(float(CrossEntropyLoss(reduction="sum")(logits, y)) - per_row.sum()) < 1e-12


def test_label_smoothing_matches_the_formula(rng):
    logits = _np(rng.normal((4, 6), scale=2.0))
    y = np.array([5, 0, 3, 3])
    eps, V = 0.2, 6
    q = np.full((4, V), eps / V)
    q[np.arange(4), y] += 1 - eps
    expected = -(q * _log_softmax(logits)).sum(-1).mean()
    loss = float(CrossEntropyLoss(label_smoothing=eps)(_x(logits), xp.asarray(y)))
    assert abs(loss - expected) < 1e-12
    # eps = 1: the target is uniform, the loss is mean(-log p) whatever y is
    uniform = float(CrossEntropyLoss(label_smoothing=1.0)(_x(logits), xp.asarray(y)))
    assert abs(uniform - (-_log_softmax(logits).mean())) < 1e-12


def test_ignored_rows_contribute_nothing(rng):
    logits = _np(rng.normal((5, 4)))
    y = np.array([1, -100, 3, -100, 0])
    keep = y != -100
    ce = CrossEntropyLoss(label_smoothing=0.1)
    loss = float(ce(_x(logits), xp.asarray(y)))
    expected = float(CrossEntropyLoss(label_smoothing=0.1)(_x(logits[keep]), xp.asarray(y[keep])))
    assert abs(loss - expected) < 1e-14  # mean over the 3 kept rows, not over 5
    grad = _np(ce.backward())
    np.testing.assert_array_equal(grad[~keep], 0.0)
    assert np.all(grad[keep] != 0.0)
    # a different ignore_index that is a real class id (e.g. padding id 0)
    pad = CrossEntropyLoss(ignore_index=0)
    y0 = np.array([1, 0, 3, 0, 2])
    assert abs(float(pad(_x(logits), xp.asarray(y0))) + _log_softmax(logits)[[0, 2, 4], [1, 3, 2]].mean()) < 1e-12


def test_all_ignored_batch_gives_zero_not_nan(rng):
    ce = CrossEntropyLoss()
    loss = ce(rng.normal((3, 4)), xp.full((3,), -100))
    assert float(loss) == 0.0
    np.testing.assert_array_equal(_np(ce.backward()), 0.0)


def test_stable_for_huge_logits():
    logits = xp.asarray([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0]], dtype=xp.float32)
    ce = CrossEntropyLoss(reduction="none")
    loss = _np(ce(logits, xp.asarray([0, 0])))
    np.testing.assert_allclose(loss, [0.0, 1e4], rtol=1e-6)
    grad = _np(ce.backward())
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0, 0, 0], [-1, 1, 0]], atol=1e-6)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n(rng):
    logits = _np(rng.normal((4, 3)))
    y = np.array([2, 0, 1, 1])
    ce = CrossEntropyLoss()
    ce(_x(logits), xp.asarray(y))
    p = np.exp(_log_softmax(logits))
    onehot = np.eye(3)[y]
    np.testing.assert_allclose(_np(ce.backward()), (p - onehot) / 4, rtol=1e-12)
    np.testing.assert_allclose(_np(ce.backward(2.5)), 2.5 * (p - onehot) / 4, rtol=1e-12)


def test_cross_entropy_gradcheck_with_smoothing_and_ignore(rng):
    report = gradcheck(CrossEntropyLoss(ignore_index=2, label_smoothing=0.25),
                       (rng.normal((2, 4, 5)), xp.asarray([[0, 2, 4, 1], [2, 3, 3, 0]])))
    assert report.passed and report.worst_rel_error < 1e-6, str(report)


def test_cross_entropy_errors(rng):
    ce = CrossEntropyLoss()
    logits = rng.normal((3, 4))
    with pytest.raises(ValueError, match=r"'target' values must lie in \[0, 4\) or equal ignore_index=-100, got e.g. 4"):
        ce(logits, xp.asarray([0, 4, 1]))
    with pytest.raises(ValueError, match=r"got e.g. -1"):
        ce(logits, xp.asarray([0, -1, 1]))
    with pytest.raises(TypeError, match=r"CrossEntropyLoss: 'target' must be a int array, got dtype float"):
        ce(logits, xp.asarray([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"'target' must have the logits' shape without the class axis \(3,\), got \(3, 1\)"):
        ce(logits, xp.asarray([[0], [1], [2]]))
    with pytest.raises(ValueError, match=r"'input' must be logits of shape \(N, V\)"):
        ce(rng.normal((4,)), xp.asarray(1))
    with pytest.raises(TypeError, match="'input' must be a float array"):
        ce(xp.asarray([[1, 2]]), xp.asarray([0]))
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="'reduction' must be one of"):
        CrossEntropyLoss(reduction="avg")
    with pytest.raises(TypeError, match="'weight' must be an array"):   # class weights: tests/test_conventions.py
        CrossEntropyLoss([1.0, 2.0])
    with pytest.raises(RuntimeError, match="before forward"):
        CrossEntropyLoss().backward()


def test_mse_values_and_gradient(rng):
    a, b = _np(rng.normal((3, 4))), _np(rng.normal((3, 4)))
    mse = MSELoss()
    loss = mse(_x(a), _x(b))
    assert loss.shape == () and abs(float(loss) - ((a - b) ** 2).mean()) < 1e-14
    np.testing.assert_allclose(_np(mse.backward()), 2 * (a - b) / 12, rtol=1e-13)
    s = MSELoss(reduction="sum")
    assert abs(float(s(_x(a), _x(b))) - ((a - b) ** 2).sum()) < 1e-12
    np.testing.assert_allclose(_np(s.backward(0.5)), (a - b), rtol=1e-13)
    n = MSELoss(reduction="none")
    np.testing.assert_allclose(_np(n(_x(a), _x(b))), (a - b) ** 2, rtol=1e-14)
    g = _np(rng.normal((3, 4)))
    np.testing.assert_allclose(_np(n.backward(_x(g))), 2 * (a - b) * g, rtol=1e-13)


def test_mse_gradcheck_and_errors(rng):
    report = gradcheck(MSELoss(), (rng.normal((2, 3, 4)), rng.normal((2, 3, 4))), nondiff=(1,))
    assert report.passed and [r.name for r in report.rows] == ["input[0]"]
    with pytest.raises(ValueError, match=r"MSELoss: 'target' must have the input's shape \(2, 3\), got \(3,\)"):
        MSELoss()(rng.normal((2, 3)), rng.normal((3,)))
    with pytest.raises(TypeError, match="'target' must be a float array"):
        MSELoss()(rng.normal((2,)), xp.asarray([1, 2]))
    with pytest.raises(ValueError, match="'reduction'"):
        MSELoss("max")
