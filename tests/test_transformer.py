"""Transformer, positional encodings and greedy decoding: behaviour beyond the gradient checks."""
import os

import numpy as np
import pytest

from npattention import backend
from npattention.backend import to_numpy, xp
from npattention.data import Vocab, load_task
from npattention.masks import causal_mask, padding_mask
from npattention.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    relative_position_rotation,
    sinusoidal_table,
)
from npattention.transformer import (
    PositionwiseFeedForward,
    Transformer,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    greedy_decode,
)


def _ids(rows):
    return xp.asarray(rows, dtype=xp.int64)


def _model(**kw):
    options = dict(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=24,
                   dropout=0.0, max_len=20)
    options.update(kw)
    return Transformer(9, 11, **options).eval()


# ------------------------------------------------------------------ positional encodings
def test_sinusoidal_table_values():
    pe = to_numpy(sinusoidal_table(50, 8)).astype(np.float64)
    t = np.arange(50)
    np.testing.assert_allclose(pe[:, 0], np.sin(t), atol=1e-6)
    np.testing.assert_allclose(pe[:, 1], np.cos(t), atol=1e-6)
    np.testing.assert_allclose(pe[:, 6], np.sin(t / 10000 ** (6 / 8)), atol=1e-6)
    assert to_numpy(sinusoidal_table(4, 5)).shape == (4, 5)  # odd width: 3 sines, 2 cosines


@pytest.mark.parametrize("k", [1, 5, 17])
def test_relative_position_is_a_rotation(k):
    pe = to_numpy(sinusoidal_table(60, 16)).astype(np.float64)
    M = to_numpy(relative_position_rotation(16, k))
    np.testing.assert_allclose(pe[k:] , pe[:-k] @ M.T, atol=1e-5)  # PE[t+k] = M_k PE[t] for every t
    np.testing.assert_allclose(M @ M.T, np.eye(16), atol=1e-12)  # orthogonal


def test_positional_modules_forward_and_errors(rng):
    x = rng.normal((2, 5, 6))
    pe = SinusoidalPositionalEncoding(6, max_len=8)
    np.testing.assert_allclose(to_numpy(pe(x)), to_numpy(x + sinusoidal_table(8, 6)[:5]))
    assert "pe" in pe.state_dict() and pe.parameters() == []
    learned = LearnedPositionalEmbedding(8, 6)
    np.testing.assert_allclose(to_numpy(learned(x)), to_numpy(x + learned.weight.data[:5]))
    learned.backward(xp.ones_like(x))
    assert np.all(to_numpy(learned.weight.grad)[:5] == 2) and np.all(to_numpy(learned.weight.grad)[5:] == 0)
    with pytest.raises(ValueError, match="max_len"):
        pe(rng.normal((1, 9, 6)))
    with pytest.raises(ValueError, match="'x'"):
        learned(rng.normal((2, 5, 4)))


# ------------------------------------------------------------------ layers: the wiring
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_is_residual_plus_layernorm(rng, norm_first):
    layer = TransformerEncoderLayer(8, 2, 12, dropout=0.0, norm_first=norm_first)
    x = rng.normal((2, 4, 8))
    kpm = padding_mask(_ids([4, 2]), 4)
    out = layer(x, src_key_padding_mask=kpm)

    def sa(z):
        return layer.self_attn(z, z, z, key_padding_mask=kpm)[0]

    if norm_first:
        h = x + sa(layer.norm1(x))
        expect = h + layer.ff(layer.norm2(h))
    else:
        h = layer.norm1(x + sa(x))
        expect = layer.norm2(h + layer.ff(h))
    np.testing.assert_allclose(to_numpy(out), to_numpy(expect), atol=1e-6)
    w = to_numpy(layer.self_attn_weights)
    assert w.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(w.sum(-1), 1, atol=1e-6)
    assert np.all(w[1, :, :, 2:] == 0)  # padded keys get no weight


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_wiring_and_maps(rng, norm_first):
    layer = TransformerDecoderLayer(8, 2, 12, dropout=0.0, norm_first=norm_first)
    x, m = rng.normal((2, 3, 8)), rng.normal((2, 5, 8))
    mkpm = padding_mask(_ids([5, 3]), 5)
    out = layer(x, m, tgt_mask=causal_mask(3), memory_key_padding_mask=mkpm)

    def sa(z):
        return layer.self_attn(z, z, z, attn_mask=causal_mask(3))[0]

    def ca(z):
        return layer.multihead_attn(z, m, m, key_padding_mask=mkpm)[0]

    if norm_first:
        h1 = x + sa(layer.norm1(x))
        h2 = h1 + ca(layer.norm2(h1))
        expect = h2 + layer.ff(layer.norm3(h2))
    else:
        h1 = layer.norm1(x + sa(x))
        h2 = layer.norm2(h1 + ca(h1))
        expect = layer.norm3(h2 + layer.ff(h2))
    np.testing.assert_allclose(to_numpy(out), to_numpy(expect), atol=1e-6)
    layer(x, m, tgt_mask=causal_mask(3), memory_key_padding_mask=mkpm)  # maps of this call
    w_self, w_cross = to_numpy(layer.self_attn_weights), to_numpy(layer.cross_attn_weights)
    assert w_self.shape == (2, 2, 3, 3) and w_cross.shape == (2, 2, 3, 5)
    assert np.all(np.triu(np.ones((3, 3)), 1)[None, None] * w_self == 0)  # causal: lower triangular
    assert np.all(w_cross[1, :, :, 3:] == 0)


def test_encoder_clones_are_independent():
    enc = TransformerEncoder(TransformerEncoderLayer(4, 2, 6), num_layers=3)
    assert len(enc.layers) == 3 and len({id(layer) for layer in enc.layers}) == 3
    w0, w1 = enc.layers[0].ff.linear1.weight, enc.layers[1].ff.linear1.weight
    assert w0 is not w1
    np.testing.assert_array_equal(to_numpy(w0.data), to_numpy(w1.data))  # PyTorch clones too


def test_bad_arguments(rng):
    with pytest.raises(ValueError, match="divisible"):
        TransformerEncoderLayer(6, 4)
    with pytest.raises(ValueError, match="activation"):
        PositionwiseFeedForward(4, 8, activation="swish")
    with pytest.raises(ValueError, match="positional"):
        Transformer(5, 5, d_model=8, nhead=2, positional="rotary")
    with pytest.raises(ValueError, match="'src'"):
        TransformerEncoderLayer(8, 2)(rng.normal((2, 3, 4)))
    model = _model()
    with pytest.raises(TypeError, match="'src'"):
        model(rng.normal((2, 3)), _ids([[1, 4], [1, 5]]))
    with pytest.raises(ValueError, match="'tgt'"):
        model(_ids([[4, 2], [5, 2]]), _ids([[1, 4, 5]]))
    with pytest.raises(ValueError, match="'memory'"):
        TransformerDecoderLayer(8, 2)(rng.normal((2, 3, 8)), rng.normal((3, 4, 8)))


# ------------------------------------------------------------------ the whole model: masks
def test_causal_mask_future_targets_change_nothing():
    model = _model()
    src = _ids([[4, 5, 6, 7, 2], [8, 4, 2, 0, 0]])
    tgt = _ids([[1, 4, 5, 6, 7, 8], [1, 9, 10, 4, 5, 6]])
    base = to_numpy(model(src, tgt))
    for t in range(1, 6):
        changed = to_numpy(tgt).copy()
        changed[:, t:] = (changed[:, t:] + 3) % 7 + 3  # new tokens from position t on
        out = to_numpy(model(src, xp.asarray(changed)))
        np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-6)  # positions < t unchanged
        assert np.abs(out[:, t:] - base[:, t:]).max() > 1e-3  # later ones do change


@pytest.mark.parametrize("norm_first", [False, True])
def test_source_padding_changes_nothing(norm_first):
    model = _model(norm_first=norm_first)
    short = _ids([[4, 5, 2]])
    tgt = _ids([[1, 6, 7, 8]])
    alone = to_numpy(model(short, tgt))
    more_pad = to_numpy(model(_ids([[4, 5, 2, 0, 0, 0]]), tgt))
    np.testing.assert_allclose(more_pad, alone, atol=1e-5)
    # in a batch next to a longer row: the same logits as alone
    batch = to_numpy(model(_ids([[4, 5, 2, 0, 0], [6, 7, 8, 4, 2]]), _ids([[1, 6, 7, 8], [1, 4, 4, 4]])))
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-5)
    # without the mask the padding *would* leak in (the test can fail)
    unmasked = to_numpy(model(_ids([[4, 5, 2, 0, 0, 0]]), tgt,
                              src_key_padding_mask=xp.zeros((1, 6), dtype=bool)))
    assert np.abs(unmasked - alone).max() > 1e-3


def test_target_padding_changes_nothing_for_real_tokens():
    model = _model()
    src = _ids([[4, 5, 6, 2]])
    alone = to_numpy(model(src, _ids([[1, 7, 8]])))
    padded = to_numpy(model(src, _ids([[1, 7, 8, 0, 0]])))
    np.testing.assert_allclose(padded[:, :3], alone, atol=1e-5)


def test_weight_tying_shares_one_parameter():
    model = _model(tie_weights=True)
    assert model.generator.weight is model.tgt_embed.weight
    names = [n for n, _ in model.named_parameters()]
    assert "tgt_embed.weight" in names and "generator.weight" not in names
    untied = _model(tie_weights=False)
    assert untied.num_parameters() - model.num_parameters() == 11 * 16
    # the shared gradient is the sum of both uses: compare with an untied copy holding equal weights
    untied.load_state_dict({**model.state_dict(), "generator.weight": model.tgt_embed.weight.data})
    src, tgt = _ids([[4, 5, 2]]), _ids([[1, 6, 7]])
    g = backend.Generator(3).normal((1, 3, 11))
    for m in (model, untied):
        m.zero_grad()
        m(src, tgt)
        m.backward(g)
    np.testing.assert_allclose(to_numpy(model.tgt_embed.weight.grad),
                               to_numpy(untied.tgt_embed.weight.grad + untied.generator.weight.grad), atol=1e-5)


def test_attention_maps_of_the_model():
    model = _model()
    model(_ids([[4, 5, 6, 2], [4, 2, 0, 0]]), _ids([[1, 4, 5], [1, 6, 0]]))
    maps = model.attention_maps()
    assert [w.shape for w in maps["encoder"]] == [(2, 2, 4, 4)] * 2
    assert [w.shape for w in maps["decoder_self"]] == [(2, 2, 3, 3)] * 2
    assert [w.shape for w in maps["decoder_cross"]] == [(2, 2, 3, 4)] * 2
    assert np.all(to_numpy(maps["decoder_cross"][0])[1, :, :, 2:] == 0)


def test_checkpoint_round_trip(tmp_path):
    from npattention.checkpoint import load_checkpoint, save_checkpoint

    model = _model(positional="learned", norm_first=True)
    src, tgt = _ids([[4, 5, 2]]), _ids([[1, 6, 7]])
    path = save_checkpoint(tmp_path / "t.npz", model, config=model.config)
    backend.manual_seed(123)
    fresh = _model(positional="learned", norm_first=True)
    assert np.abs(to_numpy(fresh(src, tgt)) - to_numpy(model(src, tgt))).max() > 1e-3
    meta = load_checkpoint(path, fresh)
    assert meta["config"]["positional"] == "learned"
    np.testing.assert_allclose(to_numpy(fresh(src, tgt)), to_numpy(model(src, tgt)), atol=1e-6)


# ------------------------------------------------------------------ greedy decoding
def test_greedy_decode_format_and_consistency():
    model = _model().train()  # greedy_decode must switch dropout off and restore the mode
    src = _ids([[4, 5, 6, 2], [7, 2, 0, 0], [8, 8, 8, 2]])
    out = greedy_decode(model, src, max_len=7)
    assert model.training
    ids = to_numpy(out)
    assert ids.dtype == np.int64 and ids.shape[0] == 3 and 1 <= ids.shape[1] <= 7
    assert not np.any(ids == Vocab.SOS)
    for row in ids:  # tokens, then <eos>, then only <pad>
        eos = np.flatnonzero(row == Vocab.EOS)
        if eos.size:
            assert np.all(row[eos[0] + 1:] == Vocab.PAD)
            assert not np.any(row[:eos[0]] == Vocab.PAD)
    # The step-by-step loop agrees with one teacher-forced pass over its own output.
    L = ids.shape[1]
    tgt_in = np.concatenate([np.full((3, 1), Vocab.SOS), ids[:, :-1]], axis=1)
    logits = to_numpy(model.eval()(src, xp.asarray(tgt_in)))
    pred = logits.argmax(-1)
    for b in range(3):
        eos = np.flatnonzero(ids[b] == Vocab.EOS)
        stop = eos[0] + 1 if eos.size else L
        np.testing.assert_array_equal(pred[b, :stop], ids[b, :stop])


def test_greedy_decode_stops_early_when_all_rows_end():
    model = _model()
    model.generator.bias.data[...] = -100
    model.generator.bias.data[Vocab.EOS] = 100  # always predicts <eos>
    out = to_numpy(greedy_decode(model, _ids([[4, 5, 2], [6, 2, 0]]), max_len=9))
    np.testing.assert_array_equal(out, [[Vocab.EOS], [Vocab.EOS]])


# ------------------------------------------------------------------ it learns
def test_small_transformer_learns_to_reverse():
    from npattention.demos.transformer import build, evaluate, train

    vocab, splits = load_task("reverse", 2000, 10, 200, seed=1, min_len=3, max_len=5)
    backend.manual_seed(0)
    model = build(vocab, d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                  dim_feedforward=64, dropout=0.0)
    history = train(model, splits["train"], epochs=8, batch_size=32, lr=5e-3, progress=False)
    assert history["step_loss"][-1] < 0.1 * history["step_loss"][0]
    acc, preds = evaluate(model, splits["test"], vocab)
    assert acc >= 0.9, (acc, list(zip(splits["test"].sources, preds))[:10])  # measured: 0.99


def test_demo_fast_run_writes_outputs(tmp_path, capsys):
    from npattention.__main__ import main

    out = tmp_path / "demo"
    assert main(["demo", "transformer", "--task", "reverse", "--fast", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "held-out exact match" in text and str(out) in text
    for name in ("checkpoint.npz", "encoder_self_attention.png", "decoder_cross_attention.png",
                 "decoder_self_attention.png", "positional_encoding.png", "training_curve.png"):
        assert os.path.getsize(out / name) > 0, name
