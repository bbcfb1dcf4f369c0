"""Optimisers, clipping and schedules against the PyTorch formulas, computed by hand here."""
import itertools
import math

import numpy as np
import pytest

from npattention import Parameter
from npattention.backend import to_numpy, xp
from npattention.optim import SGD, Adam, AdamW, WarmupCosine, WarmupInverseSqrt, clip_grad_norm_

THETA = np.array([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]])
GRADS = [np.array([[0.1, -0.2, 0.3], [1.0, 0.0, -2.0]]),
         np.array([[-0.4, 0.5, 0.05], [0.2, -1.5, 0.7]]),
         np.array([[0.3, 0.3, -0.1], [-0.6, 0.9, 0.0]])]


def make_param(value=THETA):
    return Parameter(xp.array(value, dtype=xp.float64, copy=True))  # copy: steps update in place


def run(opt_cls, steps=3, **kw):
    p = make_param()
    opt = opt_cls([p], **kw)
    for g in GRADS[:steps]:
        opt.zero_grad()
        p.grad += xp.asarray(g)
        opt.step()
    return to_numpy(p.data), opt


def test_sgd_plain_one_step():
    got, _ = run(SGD, steps=1, lr=0.1)
    np.testing.assert_allclose(got, THETA - 0.1 * GRADS[0], rtol=1e-12)


def test_sgd_momentum_and_weight_decay_three_steps():
    lr, mu, wd = 0.1, 0.9, 0.01
    theta, buf = THETA.copy(), None
    for g in GRADS:
        d = g + wd * theta
        buf = d if buf is None else mu * buf + d
        theta = theta - lr * buf
    got, opt = run(SGD, lr=lr, momentum=mu, weight_decay=wd)
    np.testing.assert_allclose(got, theta, rtol=1e-12)
    assert opt.step_count == 3


def test_sgd_nesterov_and_dampening():
    lr, mu = 0.05, 0.8
    theta, buf = THETA.copy(), None
    for g in GRADS:
        buf = g if buf is None else mu * buf + g
        theta = theta - lr * (g + mu * buf)
    got, _ = run(SGD, lr=lr, momentum=mu, nesterov=True)
    np.testing.assert_allclose(got, theta, rtol=1e-12)

    damp = 0.3
    theta, buf = THETA.copy(), None
    for g in GRADS:
        buf = g if buf is None else mu * buf + (1 - damp) * g
        theta = theta - lr * buf
    got, _ = run(SGD, lr=lr, momentum=mu, dampening=damp)
    np.testing.assert_allclose(got, theta, rtol=1e-12)

    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        SGD([make_param()], lr=0.1, nesterov=True)


def _adam_by_hand(lr, b1, b2, eps, wd, decoupled):
    theta = THETA.copy()
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            theta = theta * (1 - lr * wd)
        else:
            g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def test_adam_first_step_moves_each_weight_by_about_lr():
    # after one step m_hat = g and v_hat = g^2, so the update is lr * sign(g) (for g != 0)
    got, _ = run(Adam, steps=1, lr=0.01)
    g = GRADS[0]
    expected = THETA - 0.01 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[1, 1] == THETA[1, 1]  # zero gradient: no move


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_three_steps_with_l2(wd):
    got, _ = run(Adam, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd)
    np.testing.assert_allclose(got, _adam_by_hand(0.01, 0.8, 0.95, 1e-6, wd, decoupled=False), rtol=1e-12)


def test_adamw_decay_is_decoupled():
    got, _ = run(AdamW, lr=0.01, weight_decay=0.1)
    np.testing.assert_allclose(got, _adam_by_hand(0.01, 0.9, 0.999, 1e-8, 0.1, decoupled=True), rtol=1e-12)
    coupled, _ = run(Adam, lr=0.01, weight_decay=0.1)
    assert np.abs(got - coupled).max() > 1e-4  # the two decays really differ
    # with a zero gradient AdamW still shrinks the weight by (1 - lr*wd) per step; Adam-L2 moves it by ~lr
    p = make_param()
    opt = AdamW([p], lr=0.01, weight_decay=0.1)
    opt.step()
    np.testing.assert_allclose(to_numpy(p.data), THETA * (1 - 0.01 * 0.1), rtol=1e-12)


def test_float32_parameters_stay_float32():
    p = Parameter(xp.ones((2, 2), dtype=xp.float32))
    p.grad += 1
    for opt in (SGD([p], lr=0.1, momentum=0.9), Adam([p]), AdamW([p])):
        opt.step()
        assert p.data.dtype == xp.float32


def test_optimizer_state_dict_round_trip_continues_identically():
    _, opt = run(Adam, steps=2, lr=0.01)
    state = opt.state_dict()
    assert state["step"] == 2 and set(state) >= {"state.0.exp_avg", "state.0.exp_avg_sq", "lr", "beta1"}
    p2 = make_param(to_numpy(opt.params[0].data))
    opt2 = Adam([p2], lr=0.5)
    opt2.load_state_dict({k: to_numpy(v) if hasattr(v, "shape") else v for k, v in state.items()})
    assert opt2.lr == 0.01 and opt2.step_count == 2
    for o in (opt, opt2):
        o.zero_grad()
        o.params[0].grad += xp.asarray(GRADS[2])
        o.step()
    np.testing.assert_array_equal(to_numpy(opt.params[0].data), to_numpy(p2.data))


def test_optimizer_load_state_dict_lists_problems():
    _, opt = run(SGD, steps=1, lr=0.1, momentum=0.9)
    state = opt.state_dict()
    bad = dict(state)
    del bad["momentum"]
    bad["extra"] = 1.0
    with pytest.raises(KeyError, match=r"missing keys \['momentum'\], unexpected keys \['extra'\]"):
        opt.load_state_dict(bad)
    bad = dict(state, **{"state.0.momentum_buffer": np.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"state.0.momentum_buffer: checkpoint \(3, 2\) vs parameter \(2, 3\)"):
        opt.load_state_dict(bad)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'params' is empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"'params\[0\]' must be a npattention Parameter, got ndarray"):
        Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="'betas' must be a pair"):
        Adam([make_param()], betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="'lr' must be a finite number >= 0, got -1"):
        SGD([make_param()], lr=-1)


def test_clip_grad_norm_scales_to_max_norm_and_returns_pre_clip_norm():
    a, b = make_param(), Parameter(xp.zeros(2, dtype=xp.float64))
    a.grad += xp.asarray(GRADS[0])
    b.grad += xp.asarray([3.0, -4.0])
    expected = math.sqrt((GRADS[0] ** 2).sum() + 25.0)
    total = clip_grad_norm_([a, b], max_norm=1.0)
    assert total == pytest.approx(expected, rel=1e-12)
    clipped = math.sqrt(float((to_numpy(a.grad) ** 2).sum() + (to_numpy(b.grad) ** 2).sum()))
    assert clipped == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(to_numpy(b.grad), np.array([3.0, -4.0]) / (expected + 1e-6), rtol=1e-12)
    # below the threshold nothing changes
    before = to_numpy(a.grad).copy()
    assert clip_grad_norm_([a], max_norm=10.0) == pytest.approx(np.sqrt((before ** 2).sum()))
    np.testing.assert_array_equal(to_numpy(a.grad), before)
    # the max norm: largest absolute entry
    a.grad[...] = xp.asarray(GRADS[0])
    assert clip_grad_norm_([a], max_norm=0.5, norm_type=float("inf")) == pytest.approx(2.0)
    assert float(xp.max(xp.abs(a.grad))) == pytest.approx(0.5, rel=1e-5)


def test_warmup_cosine_values():
    opt = SGD([make_param()], lr=1.0)
    sched = WarmupCosine(opt, warmup_steps=4, total_steps=14, min_lr=0.1)
    assert opt.lr == pytest.approx(1 / 5)  # first update: (0 + 1) / (4 + 1)
    lrs = [opt.lr] + [sched.step() for _ in range(16)]
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)  # peak at s = warmup_steps
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert lrs[14] == pytest.approx(0.1) and lrs[16] == pytest.approx(0.1)
    assert all(x >= y for x, y in itertools.pairwise(lrs[4:]))  # monotone decay after warm-up
    assert sched.get_lr(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.3)))


def test_warmup_inverse_sqrt_noam_values():
    opt = Adam([make_param()], lr=0.0)
    sched = WarmupInverseSqrt(opt, warmup_steps=4000, d_model=512)
    assert opt.lr == pytest.approx(512 ** -0.5 * 1 * 4000 ** -1.5)  # n = 1
    assert sched.get_lr(3999) == pytest.approx(512 ** -0.5 * 4000 ** -0.5)  # peak, about 7.0e-4
    assert sched.get_lr(15999) == pytest.approx(512 ** -0.5 / 16000 ** 0.5)
    opt = SGD([make_param()], lr=0.5)
    sched = WarmupInverseSqrt(opt, warmup_steps=10)
    lrs = [opt.lr] + [sched.step() for _ in range(39)]
    assert lrs[0] == pytest.approx(0.05) and lrs[9] == pytest.approx(0.5) and lrs[39] == pytest.approx(0.25)


def test_schedule_state_dict_round_trip():
    opt = SGD([make_param()], lr=1.0)
    sched = WarmupCosine(opt, 2, 10)
    for _ in range(5):
        sched.step()
    opt2 = SGD([make_param()], lr=1.0)
    sched2 = WarmupCosine(opt2, 2, 10)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.lr == opt.lr and sched2.last_step == 5


@pytest.mark.parametrize("make,match", [
    (lambda p: SGD([p], lr=math.inf), "'lr' must be a finite number >= 0, got inf"),
    (lambda p: SGD([p], lr=math.nan), "'lr' must be a finite number >= 0, got nan"),
    (lambda p: SGD([p], lr=0.1, momentum=-0.5), "'momentum' must be a finite number >= 0"),
    (lambda p: Adam([p], eps=0), "'eps' must be a finite number > 0, got 0"),
    (lambda p: AdamW([p], weight_decay=math.inf), "'weight_decay' must be a finite number >= 0, got inf"),
    (lambda p: WarmupInverseSqrt(SGD([p], lr=1.0), 4, d_model=-4), "'d_model' must be a positive int or None, got -4"),
    (lambda p: WarmupInverseSqrt(SGD([p], lr=1.0), 4, d_model=0), "'d_model' must be a positive int or None, got 0"),
    (lambda p: WarmupInverseSqrt(SGD([p], lr=1.0), 4, d_model=8, factor=-1), "'factor' must be a finite number > 0"),
    (lambda p: WarmupCosine(SGD([p], lr=1.0), 4, 10, min_lr=math.nan), "'min_lr' must be a finite number >= 0"),
    (lambda p: clip_grad_norm_([p], max_norm=math.inf), "'max_norm' must be a finite number >= 0, got inf"),
])
def test_out_of_range_hyperparameters_are_refused(make, match):
    """Each would give NaN, a complex learning rate or an exploding update if accepted."""
    with pytest.raises(ValueError, match=match):
        make(make_param())


def test_a_model_or_its_bound_method_instead_of_parameters():
    from npattention import Linear
    model = Linear(2, 2)
    for wrong in (model, model.parameters):
        with pytest.raises(TypeError, match=r"SGD: 'params' must be the model's parameters: pass model.parameters\(\)"):
            SGD(wrong, lr=0.1)
    with pytest.raises(TypeError, match="'params' must be a list of Parameters"):
        Adam(3)
    assert SGD(model.parameters()[0], lr=0.1).params == [model.weight]   # one Parameter is fine


def test_clip_grad_norm_error_if_nonfinite():
    a, b = make_param(), make_param()
    a.grad += 1.0
    b.grad[0, 1] = np.nan
    before = to_numpy(a.grad).copy()
    assert math.isnan(clip_grad_norm_([a, b], 1.0))                         # as PyTorch: returns the NaN norm
    with pytest.raises(FloatingPointError, match=r"total gradient norm is nan: the gradients of params\[1\] "
                                                 r"are non-finite"):
        clip_grad_norm_([a, b], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(to_numpy(a.grad), before)                  # nothing was scaled


def test_adam_with_zero_gradient_stays_finite():
    p = make_param()
    opt = Adam([p], lr=0.1)
    opt.step()                                                               # g = 0: m_hat / (sqrt(0) + eps) = 0
    np.testing.assert_array_equal(to_numpy(p.data), THETA)


def test_optimizer_and_schedule_load_refuse_bad_values_and_change_nothing():
    _, opt = run(Adam, steps=1, lr=0.1)
    state = opt.state_dict()
    with pytest.raises(TypeError, match="'state' must be a dict"):
        opt.load_state_dict([1, 2])
    with pytest.raises(ValueError, match="'lr' must be a finite number, got nan"):
        opt.load_state_dict(dict(state, lr=math.nan))
    with pytest.raises(ValueError, match=r"'step' must be a finite number \(a whole number >= 0\), got 1.5"):
        opt.load_state_dict(dict(state, step=1.5))
    assert opt.lr == 0.1 and opt.step_count == 1
    sched = WarmupCosine(opt, 2, 10)
    with pytest.raises(KeyError, match=r"missing keys \['base_lr'\]"):
        sched.load_state_dict({"last_step": 3})
    with pytest.raises(ValueError, match="'base_lr' must be a finite number >= 0, got 'abc'"):
        sched.load_state_dict({"last_step": 3, "base_lr": "abc"})
    assert sched.last_step == 0
