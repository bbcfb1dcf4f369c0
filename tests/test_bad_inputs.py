"""Bad input gives one clear error naming the argument the caller used (issue 16).

Each test stands for a class of case: a wrong type, a wrong dtype, a wrong shape, an
out-of-range number, an extreme value, a wrapper that must report the caller's name."""
import math

import numpy as np
import pytest

from npattention import (CausalSelfAttention, CrossAttention, Linear, SelfAttention, Transformer, TransformerDecoderLayer,
                         TransformerEncoder, TransformerEncoderLayer, manual_seed)
from npattention.attention.sdpa import scaled_dot_product_attention, scaled_dot_product_attention_backward
from npattention.backend import to_numpy, xp
from npattention.softmax import softmax


def arr(*shape, dtype=xp.float64, seed=0):
    return xp.asarray(np.random.default_rng(seed).normal(size=shape), dtype=dtype)


# ------------------------------------------------------------------ softmax
def test_softmax_extremes_are_limits_never_nan():
    s = xp.asarray([[math.inf, 1.0, math.inf, -2.0],     # +inf entries share the weight
                    [1.0, 2.0, 3.0, 4.0],                  # ordinary row
                    [-math.inf] * 4,                       # all -inf: zeros, like an all-masked row
                    [-math.inf, 0.0, -math.inf, 0.0]])
    w = to_numpy(softmax(s))
    np.testing.assert_array_equal(w[0], [0.5, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(w[1], np.exp([1, 2, 3, 4]) / np.exp([1, 2, 3, 4]).sum(), rtol=1e-12)
    np.testing.assert_array_equal(w[2], [0.0] * 4)
    np.testing.assert_array_equal(w[3], [0.0, 0.5, 0.0, 0.5])
    # the same in place, and with a mask that hides the +inf entry
    mask = xp.asarray([[True, False, False, False]] * 4)
    w2 = to_numpy(softmax(s.copy(), mask=mask, out=None))
    np.testing.assert_array_equal(w2[0], [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("mask,err,match", [
    (xp.zeros((2, 3), dtype=xp.int64), TypeError, r"'mask' must be a bool array .*got dtype int64; convert it with "
                                                  r"mask.astype\(bool\)"),
    (xp.zeros((2, 3)), TypeError, r"'mask' must be a bool array .*got dtype float64; a float mask is an additive bias"),
    (xp.zeros((2, 4), dtype=bool), ValueError, r"'mask' of shape \(2, 4\) does not broadcast to the scores' shape "
                                               r"\(2, 3\)"),
    (xp.zeros((5, 2, 3), dtype=bool), ValueError, r"'mask' of shape \(5, 2, 3\) does not broadcast"),
    ([[True, False, False]], TypeError, r"'mask' must be a bool array .*got list|'mask' must be an array"),
])
def test_softmax_refuses_masks_like_sdpa_and_mha(mask, err, match):
    with pytest.raises(err, match="softmax: " + match):
        softmax(arr(2, 3), mask=mask)


def test_softmax_argument_checks():
    with pytest.raises(TypeError, match="softmax: 'scores' must be an array"):
        softmax([1.0, 2.0])
    with pytest.raises(TypeError, match="softmax: 'scores' must be a float .*got dtype bool"):
        softmax(xp.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match=r"softmax: 'axis' must be an int in \[-2, 2\) .*got 2"):
        softmax(arr(2, 3), axis=2)
    with pytest.raises(ValueError, match=r"softmax: 'out' must have shape \(2, 3\), got \(3, 2\)"):
        softmax(arr(2, 3), out=arr(3, 2))


# ------------------------------------------------------------------ scaled_dot_product_attention
@pytest.mark.parametrize("scale,err,match", [("abc", TypeError, "'scale' must be a number or None, got str"),
                                             (math.nan, ValueError, "'scale' must be finite, got nan"),
                                             (math.inf, ValueError, "'scale' must be finite, got inf")])
def test_sdpa_scale(scale, err, match):
    q = arr(2, 3, 4)
    with pytest.raises(err, match="scaled_dot_product_attention: " + match):
        scaled_dot_product_attention(q, q, q, scale=scale)


def test_sdpa_backward_checks_its_arguments():
    q = arr(2, 3, 4)
    out, cache = scaled_dot_product_attention(q, q, q)
    with pytest.raises(TypeError, match="_backward: 'cache' must be the AttentionCache .*got NoneType"):
        scaled_dot_product_attention_backward(xp.ones_like(out), None)
    with pytest.raises(ValueError, match=r"_backward: 'grad_output' must have shape \(2, 3, 4\), got \(2, 4, 3\)"):
        scaled_dot_product_attention_backward(arr(2, 4, 3), cache)
    with pytest.raises(TypeError, match="_backward: 'grad_output' must be an array"):
        scaled_dot_product_attention_backward(None, cache)


# ------------------------------------------------------------------ wrappers name the caller's arguments
def test_wrappers_report_the_callers_argument_names():
    manual_seed(0)
    x8 = arr(2, 5, 8, dtype=xp.float32)
    cases = [
        (lambda: SelfAttention(16, 2)(x8), r"SelfAttention: 'x' must have shape"),
        (lambda: CausalSelfAttention(16, 2)(x8), r"CausalSelfAttention: 'x' must have shape"),
        (lambda: CrossAttention(8, 2)(arr(2, 5, 4, dtype=xp.float32), x8), r"CrossAttention: 'x_dec' must have shape"),
        (lambda: CrossAttention(8, 2, enc_dim=8)(x8, arr(2, 5, 3, dtype=xp.float32)),
         r"CrossAttention: 'x_enc' must have shape"),
        (lambda: TransformerEncoderLayer(8, 2, 16)(x8, src_key_padding_mask=xp.zeros((2, 4), dtype=bool)),
         r"TransformerEncoderLayer: 'src_key_padding_mask' must have shape \(2, 5\)"),
        (lambda: TransformerEncoderLayer(8, 2, 16)(x8, src_mask=xp.zeros((4, 4), dtype=bool)),
         r"TransformerEncoderLayer: 'src_mask' must have shape"),
        (lambda: TransformerEncoder(TransformerEncoderLayer(8, 2, 16), 2)(x8, mask=xp.zeros((4, 4), dtype=bool)),
         r"TransformerEncoder: 'mask' must have shape"),
        (lambda: TransformerDecoderLayer(8, 2, 16)(x8, x8, tgt_mask=xp.zeros((3, 3), dtype=bool)),
         r"TransformerDecoderLayer: 'tgt_mask' must have shape"),
        (lambda: TransformerDecoderLayer(8, 2, 16)(x8, x8, tgt_key_padding_mask=xp.zeros((2, 3), dtype=bool)),
         r"TransformerDecoderLayer: 'tgt_key_padding_mask' must have shape"),
        (lambda: TransformerDecoderLayer(8, 2, 16)(x8, x8, memory_key_padding_mask=xp.zeros((2, 4), dtype=bool)),
         r"TransformerDecoderLayer: 'memory_key_padding_mask' must have shape \(2, 5\)"),
        (lambda: TransformerDecoderLayer(8, 2, 16)(x8, x8, memory_mask=xp.zeros((5, 4), dtype=bool)),
         r"TransformerDecoderLayer: 'memory_mask' must have shape"),
        (lambda: Transformer(10, 10, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1)(
            xp.ones((2, 5), dtype=xp.int64), xp.ones((2, 4), dtype=xp.int64),
            src_key_padding_mask=xp.zeros((2, 4), dtype=bool)), r"Transformer: 'src_key_padding_mask' must have shape"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "'query'" not in str(err.value) and "'key_padding_mask'" not in str(err.value), str(err.value)


def test_linear_to_int_is_refused():
    layer = Linear(3, 2)
    with pytest.raises(TypeError, match=r"Linear.to: 'dtype' must be a floating dtype .*got <class 'numpy.int64'>|"
                                        r"got dtype\('int64'\)|int64"):
        layer.to(xp.int64)
    assert layer.weight.data.dtype == xp.float32
    with pytest.raises(TypeError, match="Linear.to: 'dtype' must be a floating dtype"):
        layer.to("banana")


def test_load_state_dict_with_a_list_value_names_the_key():
    layer = Linear(2, 2)
    state = layer.state_dict()
    before = to_numpy(layer.weight.data).copy()
    with pytest.raises(TypeError, match=r"values must be numeric NumPy/CuPy arrays, got weight: list"):
        layer.load_state_dict(dict(state, weight=[[1.0, 2.0], [3.0, 4.0]]))
    with pytest.raises(TypeError, match="'state' must be a dict"):
        layer.load_state_dict([("weight", state["weight"])])
    np.testing.assert_array_equal(to_numpy(layer.weight.data), before)


# ------------------------------------------------------------------ empty inputs: one rule (docs/contract.md)
def _f32(*shape):
    return xp.zeros(shape, dtype=xp.float32)


def test_an_empty_batch_works_everywhere():
    """B = 0: the output has B = 0, backward gives empty gradients, a mean loss is 0."""
    from npattention import (Encoder, Flatten, MSELoss, CrossEntropyLoss, GRU, MultiheadAttention, Seq2Seq,
                             SpatialTransformer)
    manual_seed(0)
    cases = [
        (Flatten(), (_f32(0, 3, 2, 2),), (0, 12)),
        (SpatialTransformer(1, 4, 4), (_f32(0, 1, 4, 4),), (0, 1, 4, 4)),
        (Encoder(10, 4, 5), (xp.zeros((0, 3), dtype=xp.int64),), (0, 3, 5)),
        (Seq2Seq(10, 10, 4, 5), (xp.zeros((0, 3), dtype=xp.int64), xp.zeros((0, 2), dtype=xp.int64)), (0, 2, 10)),
        (MultiheadAttention(4, 2), (_f32(0, 3, 4), _f32(0, 3, 4), _f32(0, 3, 4)), (0, 3, 4)),
        (GRU(3, 4, num_layers=2), (_f32(0, 5, 3),), (0, 5, 4)),
        (TransformerEncoderLayer(4, 2, 8), (_f32(0, 3, 4),), (0, 3, 4)),
    ]
    for module, inputs, shape in cases:
        out = module(*inputs)
        first = out[0] if isinstance(out, tuple) else out
        assert tuple(first.shape) == shape, type(module).__name__
        grads = module.backward(xp.zeros(shape, dtype=first.dtype))
        for g in (grads if isinstance(grads, tuple) else (grads,)):
            assert g is None or g.shape[0] == 0
    for loss, args in ((MSELoss(), (_f32(0, 3), _f32(0, 3))),
                       (CrossEntropyLoss(), (_f32(0, 3), xp.zeros(0, dtype=xp.int64)))):
        assert float(loss(*args)) == 0.0 and loss.backward().shape == (0, 3)


@pytest.mark.parametrize("call,match", [
    (lambda: SelfAttention(4, 2)(xp.zeros((2, 0, 4), dtype=xp.float32)), "SelfAttention: 'x' has L = 0"),
    (lambda: scaled_dot_product_attention(arr(2, 3, 4), arr(2, 0, 4), arr(2, 0, 4)),
     "scaled_dot_product_attention: 'key' has S = 0"),
    (lambda: TransformerEncoderLayer(4, 2, 8)(xp.zeros((2, 0, 4), dtype=xp.float32)),
     "TransformerEncoderLayer: 'src' has S = 0"),
    (lambda: Transformer(10, 10, d_model=4, nhead=2, num_encoder_layers=1, num_decoder_layers=1)(
        xp.ones((2, 3), dtype=xp.int64), xp.ones((2, 0), dtype=xp.int64)), "Transformer: 'tgt' has T = 0"),
    (lambda: softmax(xp.zeros((2, 0))), "softmax: 'scores' has size 0 along axis -1"),
])
def test_an_empty_sequence_is_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_seq2seq_names_src_lengths_and_encoder_names_src():
    from npattention import Encoder, Seq2Seq
    manual_seed(0)
    with pytest.raises(ValueError, match=r"Seq2Seq: 'src_lengths' must lie in \[1, T=3\], got min 0"):
        Seq2Seq(10, 10, 4, 5)(xp.ones((2, 3), dtype=xp.int64), xp.ones((2, 3), dtype=xp.int64),
                              src_lengths=xp.asarray([0, 3]))
    with pytest.raises(ValueError, match=r"Seq2Seq: 'src_lengths' must have shape \(2\), got \(1,\)"):
        Seq2Seq(10, 10, 4, 5)(xp.ones((2, 3), dtype=xp.int64), xp.ones((2, 3), dtype=xp.int64),
                              src_lengths=xp.asarray([3]))
    with pytest.raises(ValueError, match="Encoder: 'src' has S = 0"):
        Encoder(10, 4, 5)(xp.zeros((2, 0), dtype=xp.int64))


def test_softmax_backward_checks_shapes_and_top_level_exports():
    import npattention
    from npattention.softmax import softmax_backward
    w = softmax(arr(2, 3))
    with pytest.raises(ValueError, match=r"softmax_backward: 'grad_weights' must have shape \(2, 3\), got \(3, 2\)"):
        softmax_backward(arr(3, 2), w)
    assert npattention.detect_anomaly is npattention.module.detect_anomaly
    assert issubclass(npattention.AnomalyError, FloatingPointError)
