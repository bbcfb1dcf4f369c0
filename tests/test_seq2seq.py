"""Seq2seq with attention: masking, consistency of teacher forcing and greedy decoding,
gradients through the whole model, a short training run on dates, and bad input."""
import numpy as np
import pytest

from npattention.backend import to_numpy, xp
from npattention.gradcheck import gradcheck
from npattention.seq2seq import BahdanauDecoder, Encoder, LuongDecoder, PlainDecoder, Seq2Seq

V = 9
SRC = xp.asarray([[4, 5, 6, 2, 0, 0], [7, 8, 4, 5, 6, 2], [5, 2, 0, 0, 0, 0]])
SRC_LEN = xp.asarray([4, 6, 2])
TGT_IN = xp.asarray([[1, 4, 5, 6], [1, 8, 7, 0], [1, 6, 6, 6]])

ATTENTION_MODELS = [
    {"attention": "bahdanau"},
    {"attention": "bahdanau", "cell": "lstm", "bidirectional": False},
    {"attention": "luong", "score": "dot"},
    {"attention": "luong", "score": "general", "cell": "lstm"},
    {"attention": "luong", "score": "concat", "bidirectional": False},
    {"attention": "note004", "max_src_len": 8},
]


def model(**kw):
    return Seq2Seq(V, V, embed_dim=5, hidden_size=4, **kw).double()


@pytest.mark.parametrize("kw", ATTENTION_MODELS, ids=lambda kw: "-".join(map(str, kw.values())))
def test_attention_weights_sum_to_one_over_real_positions(kw):
    m = model(**kw)
    logits, w = m(SRC, TGT_IN, SRC_LEN)
    assert logits.shape == (3, 4, V) and w.shape == (3, 4, 6)
    w = to_numpy(w)
    real = to_numpy(xp.arange(6)[None, :] < SRC_LEN[:, None])  # (B, S)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    assert np.all(w[~np.broadcast_to(real[:, None, :], w.shape)] == 0.0)  # exactly 0 on padding
    assert m.attention_weights is not None and m.attention_weights.shape == (3, 4, 6)


@pytest.mark.parametrize("kw", ATTENTION_MODELS + [{"attention": "none"}],
                         ids=lambda kw: "-".join(map(str, kw.values())))
def test_padding_in_the_batch_changes_nothing(kw):
    """Each row of a padded batch decodes exactly as the same sentence alone."""
    m = model(**kw)
    logits, w = m(SRC, TGT_IN, SRC_LEN)
    for b in range(3):
        L = int(SRC_LEN[b])
        alone, w_alone = m(SRC[b:b + 1, :L], TGT_IN[b:b + 1])
        np.testing.assert_allclose(to_numpy(logits[b]), to_numpy(alone[0]), rtol=1e-10, atol=1e-12)
        if w is not None:
            np.testing.assert_allclose(to_numpy(w[b, :, :L]), to_numpy(w_alone[0]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kw", [{"attention": "bahdanau"}, {"attention": "luong", "cell": "lstm"},
                                {"attention": "none"}, {"attention": "luong", "score": "concat"},
                                {"attention": "note004", "max_src_len": 6, "cell": "lstm"}],
                         ids=["bahdanau", "luong-lstm", "none", "luong-concat", "note004-lstm"])
def test_greedy_decoding_matches_teacher_forcing_on_its_own_output(kw):
    m = model(**kw)
    tokens, w = m.greedy_decode(SRC, SRC_LEN, max_len=5, eos=99)  # eos never produced: 5 steps
    assert tokens.shape == (3, 5)
    tgt_in = xp.concatenate([xp.ones((3, 1), dtype=xp.int64), tokens[:, :-1]], axis=1)
    logits, w_tf = m(SRC, tgt_in, SRC_LEN)
    np.testing.assert_array_equal(to_numpy(xp.argmax(logits, -1)), to_numpy(tokens))
    if w is not None:
        np.testing.assert_allclose(to_numpy(w), to_numpy(w_tf), rtol=1e-10, atol=1e-14)


def test_greedy_stops_when_every_row_has_ended():
    m = model(attention="bahdanau")
    m.decoder.out.bias.data[...] = 0
    m.decoder.out.bias.data[2] = 100.0  # <eos> always wins
    tokens, w = m.greedy_decode(SRC, SRC_LEN, max_len=7)
    assert tokens.shape == (3, 1) and w.shape == (3, 1, 6) and bool((tokens == 2).all())


@pytest.mark.parametrize("kw", [{"attention": "bahdanau", "cell": "lstm"}, {"attention": "luong", "score": "dot"},
                                {"attention": "none", "bidirectional": False}],
                         ids=["bahdanau-lstm", "luong-dot", "none"])
def test_whole_model_gradcheck_with_padding(kw):
    m = Seq2Seq(V, V, embed_dim=3, hidden_size=3, **kw)
    report = gradcheck(m, (SRC, TGT_IN), {"src_lengths": SRC_LEN}, eps=1e-5, max_entries=10)
    assert report.passed and report.worst_rel_error < 1e-4, str(report)
    names = [r.name for r in report.rows]
    assert "encoder.embedding.weight" in names and "decoder.out.weight" in names


def test_decoder_gradient_reaches_the_encoder_outputs_and_initial_state(rng):
    dec = BahdanauDecoder(V, 3, 4, 5).double()
    enc_out, h0 = rng.normal((2, 3, 5), dtype=xp.float64), rng.normal((2, 4), dtype=xp.float64)
    dec(TGT_IN[:2], enc_out, h0)
    d_enc, d_h0 = dec.backward(xp.ones((2, 4, V)))
    assert d_enc.shape == (2, 3, 5) and d_h0.shape == (2, 4)
    assert float(xp.abs(d_enc).min()) > 0  # every encoder position gets a gradient


def test_luong_accepts_the_score_modules_of_the_attention_core(rng):
    """score="dot"/"general" equal DotScore/GeneralScore plugged in (same weights)."""
    from npattention.attention.scores import AdditiveScore, DotScore, GeneralScore

    enc_out, h0 = rng.normal((3, 6, 4), dtype=xp.float64), rng.normal((3, 4), dtype=xp.float64)
    mask = xp.arange(6)[None, :] >= SRC_LEN[:, None]
    for name, module in [("dot", DotScore()), ("general", GeneralScore(4, 4))]:
        built_in = LuongDecoder(V, 3, 4, 4, score=name).double()
        plugged = LuongDecoder(V, 3, 4, 4, score=module).double()
        plugged.load_state_dict(built_in.state_dict())  # the built-in scores ARE these modules now
        a, wa = built_in(TGT_IN, enc_out, h0, src_mask=mask)
        b, wb = plugged(TGT_IN, enc_out, h0, src_mask=mask)
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(to_numpy(wa), to_numpy(wb), rtol=1e-12, atol=1e-14)
    dec = LuongDecoder(V, 3, 4, 5, score=AdditiveScore(4, 5, 3))
    report = gradcheck(dec, (TGT_IN, rng.normal((3, 6, 5)), rng.normal((3, 4))), {"src_mask": mask}, eps=1e-5)
    assert report.passed and report.worst_rel_error < 1e-4, str(report)
    assert "score.W_q" in [r.name for r in report.rows]


def test_bahdanau_score_is_the_additive_score_with_keys_projected_once(rng):
    from npattention.attention.scores import AdditiveScore
    from npattention.softmax import softmax

    dec = BahdanauDecoder(V, 3, 4, 5, attn_dim=6).double()
    dec.key_proj.bias.data[...] = 0  # AdditiveScore has no bias
    score = AdditiveScore(4, 5, 6).double()
    score.W_q.data, score.W_k.data, score.v.data = dec.query_proj.weight.data, dec.key_proj.weight.data, dec.v.data
    enc_out, h0 = rng.normal((3, 6, 5), dtype=xp.float64), rng.normal((3, 4), dtype=xp.float64)
    mask = xp.arange(6)[None, :] >= SRC_LEN[:, None]
    _, w = dec(TGT_IN, enc_out, h0, src_mask=mask)
    expected = softmax(score(h0[:, None, :], enc_out), mask=mask[:, None, :])  # step 1 attends with h0
    np.testing.assert_allclose(to_numpy(w[:, :1]), to_numpy(expected), rtol=1e-12)


def test_plain_decoder_ignores_encoder_outputs(rng):
    dec = PlainDecoder(V, 3, 4, 5)
    enc_out, h0 = rng.normal((2, 3, 5)), rng.normal((2, 4))
    a, w = dec(TGT_IN[:2], enc_out, h0)
    b, _ = dec(TGT_IN[:2], 10 * enc_out, h0)
    assert w is None
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_encoder_bridge_and_state_shapes():
    enc = Encoder(V, 3, 4, cell="lstm", bidirectional=True, dec_hidden_size=6)
    out, (h0, c0) = enc(SRC, SRC_LEN)
    assert out.shape == (3, 6, 8) and h0.shape == (3, 6) and c0.shape == (3, 6)
    assert float(xp.abs(h0).max()) < 1.0  # the bridge ends in tanh


def test_checkpoint_round_trip_rebuilds_the_model_from_its_config(tmp_path):
    from npattention.checkpoint import load_checkpoint, save_checkpoint

    m = Seq2Seq(V, V, embed_dim=4, hidden_size=3, attention="luong", score="general", cell="lstm")
    path = save_checkpoint(tmp_path / "s2s.npz", m, config=m.config)
    fresh = Seq2Seq(V, V, embed_dim=4, hidden_size=3, attention="luong", score="general", cell="lstm")
    meta = load_checkpoint(path, fresh)
    assert meta["config"] == m.config
    np.testing.assert_array_equal(to_numpy(fresh(SRC, TGT_IN, SRC_LEN)[0]), to_numpy(m(SRC, TGT_IN, SRC_LEN)[0]))


# ------------------------------------------------------------------ training
def test_attention_learns_dates_in_seconds_and_beats_the_baseline():
    """A small model on three date formats, 2 epochs of 3000 dates (~190 steps, a few seconds)."""
    from npattention.data import load_task
    from npattention.demos.seq2seq import build_model, evaluate, train

    formats = ("{dd}.{mm}.{Y}", "{d} {Month} {Y}", "{Y}/{mm}/{dd}")
    vocab, data = load_task("dates", n_train=3000, n_val=10, n_test=200, seed=1, formats=formats)
    accuracy = {}
    for attention in ("bahdanau", "none"):
        m = build_model(vocab, attention, hidden_size=16, embed_dim=8, seed=0)
        history, _ = train(m, data["train"], None, vocab, epochs=2, batch_size=32, lr=0.02, progress=False, log=None)
        assert history["loss"][-1] < history["loss"][0]
        accuracy[attention], _ = evaluate(m, data["test"], vocab)
    assert accuracy["bahdanau"] >= 0.95, accuracy  # measured: 1.000
    assert accuracy["bahdanau"] - accuracy["none"] >= 0.3, accuracy  # measured: none = 0.000


# ------------------------------------------------------------------ bad input
def test_bad_input_errors(rng):
    m = model(attention="bahdanau")
    with pytest.raises(ValueError, match="'attention' must be one of"):
        Seq2Seq(V, V, attention="cosine")
    with pytest.raises(ValueError, match="'cell' must be 'gru' or 'lstm'"):
        Seq2Seq(V, V, cell="rnn")
    with pytest.raises(ValueError, match="score='dot' needs hidden_size == enc_dim"):
        Seq2Seq(V, V, hidden_size=4, dec_hidden_size=5, attention="luong", score="dot")
    with pytest.raises(ValueError, match="'score' must be 'dot', 'general', 'additive' or a score module"):
        Seq2Seq(V, V, attention="luong", score="cosine")
    with pytest.raises(TypeError, match="'src' must be a int array"):
        m(xp.zeros((2, 3)), TGT_IN)
    with pytest.raises(ValueError, match=r"'tgt_in' must have shape \(3, \*\)"):
        m(SRC, TGT_IN[:2], SRC_LEN)
    with pytest.raises(ValueError, match=r"Seq2Seq: 'src_lengths' must lie in \[1, T=6\]"):
        m(SRC, TGT_IN, xp.asarray([4, 7, 2]))
    with pytest.raises(ValueError, match="'src_mask' must have shape"):
        m.decoder(TGT_IN, rng.normal((3, 6, 8)), rng.normal((3, 8)), src_mask=xp.zeros((3, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"'enc_out' must have shape \(B, S, 8\)"):
        m.decoder(TGT_IN, rng.normal((3, 6, 7)), rng.normal((3, 8)))
    with pytest.raises(ValueError, match="'c0' is only used with cell='lstm'"):
        m.decoder(TGT_IN, rng.normal((3, 6, 8)), rng.normal((3, 8)), rng.normal((3, 8)))
    with pytest.raises(ValueError, match="needs 'max_src_len'"):
        Seq2Seq(V, V, attention="note004")
    with pytest.raises(ValueError, match="source has 6 positions but 'max_len' is 4"):
        model(attention="note004", max_src_len=4)(SRC, TGT_IN, SRC_LEN)
    with pytest.raises(ValueError, match="at least one step"):
        m(SRC, TGT_IN[:, :0], SRC_LEN)
    with pytest.raises(ValueError, match="'max_len' must be a positive int"):
        m.greedy_decode(SRC, SRC_LEN, max_len=0)
    with pytest.raises(ValueError, match="'ids' must lie in"):
        m(SRC + 20, TGT_IN, SRC_LEN)


# ------------------------------------------------------------------ the step API and the new names
@pytest.mark.parametrize("kw", ATTENTION_MODELS + [{"attention": "none", "cell": "lstm"}],
                         ids=lambda kw: "-".join(map(str, kw.values())))
def test_start_and_step_reproduce_teacher_forcing_step_by_step(kw):
    """decoder.start + decoder.step (the API beam search builds on) give forward's logits, step by step,
    and select_rows picks rows of the memory and state consistently."""
    from npattention.seq2seq import select_rows

    m = model(**kw)
    logits, w = m(SRC, TGT_IN, SRC_LEN)
    enc_out, state, mask = m._encode(SRC, SRC_LEN)
    memory, state = m.decoder.start(enc_out, *state, src_mask=mask)
    rows = xp.asarray([2, 0])
    memory2, state2 = select_rows(memory, rows), select_rows(state, rows)
    for t in range(TGT_IN.shape[1]):
        step_logits, state, step_w = m.decoder.step(TGT_IN[:, t], state, memory)
        np.testing.assert_allclose(to_numpy(step_logits), to_numpy(logits[:, t]), rtol=1e-12, atol=1e-13)
        if w is not None:
            np.testing.assert_allclose(to_numpy(step_w), to_numpy(w[:, t]), rtol=1e-12, atol=1e-14)
        logits2, state2, _ = m.decoder.step(TGT_IN[rows, t], state2, memory2)
        np.testing.assert_allclose(to_numpy(logits2), to_numpy(logits[rows, t]), rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="'prev_tokens' must have shape"):
        m.decoder.step(TGT_IN, state, memory)


def test_old_names_still_work_and_mean_the_new_ones():
    import npattention
    from npattention.attention.attention import Attn, LocationAttention
    from npattention.seq2seq import LocationDecoder, Note004Decoder

    assert Attn is LocationAttention and Note004Decoder is LocationDecoder and npattention.Attn is Attn
    for old, new in [({"attention": "luong", "score": "concat"}, {"attention": "luong", "score": "additive"}),
                     ({"attention": "note004", "max_src_len": 8}, {"attention": "location", "max_src_len": 8})]:
        a, b = model(**old), model(**new)
        b.load_state_dict(a.state_dict())
        np.testing.assert_array_equal(to_numpy(a(SRC, TGT_IN, SRC_LEN)[0]), to_numpy(b(SRC, TGT_IN, SRC_LEN)[0]))
    assert model(attention="luong", score="concat").decoder.score_name == "additive"


@pytest.mark.parametrize("kw", [{"attention": "bahdanau"}, {"attention": "luong", "score": "general"},
                                {"attention": "luong", "score": "additive"}], ids=["bahdanau", "general", "additive"])
def test_checkpoints_with_the_old_parameter_names_still_load(kw):
    """Before the decoders reused the score modules their parameters were query_proj/key_proj/v
    (additive) and score_proj, a Linear(H -> E) holding GeneralScore's W transposed."""
    m = model(**kw)
    state = m.state_dict()
    old = {k: v for k, v in state.items() if not k.startswith("decoder.score.")}
    sc = m.decoder.score
    if kw.get("score") == "general":
        old["decoder.score_proj.weight"] = sc.weight.data.T.copy()
    else:
        old.update({"decoder.query_proj.weight": sc.W_q.data, "decoder.key_proj.weight": sc.W_k.data,
                    "decoder.key_proj.bias": sc.bias.data, "decoder.v": sc.v.data})
    fresh = model(**kw)
    fresh.load_state_dict(old)
    np.testing.assert_array_equal(to_numpy(fresh(SRC, TGT_IN, SRC_LEN)[0]), to_numpy(m(SRC, TGT_IN, SRC_LEN)[0]))


# ------------------------------------------------------------------ the pieces' unchecked steps (decoder speed)
def _pieces(rng):
    """(piece, inputs, kwargs) for every piece with step / step_backward; one query row, as in a decoder."""
    from npattention.attention.align import SoftmaxAlign
    from npattention.attention.context import Context
    from npattention.attention.scores import (AdditiveScore, ConcatScore, CosineScore, DotScore, GeneralScore,
                                              ScaledDotScore)

    q, k = rng.normal((3, 1, 4), dtype=xp.float64), rng.normal((3, 6, 4), dtype=xp.float64)
    k5 = rng.normal((3, 6, 5), dtype=xp.float64)
    mask = (xp.arange(6)[None, :] >= SRC_LEN[:, None])[:, None, :]
    additive = AdditiveScore(4, 5, 3, bias=True).double()
    return [(DotScore(), (q, k), {}), (ScaledDotScore(), (q, k), {}), (GeneralScore(4, 5).double(), (q, k5), {}),
            (ConcatScore(4, 5).double(), (q, k5), {}), (additive, (q, k5), {}),
            (additive, (q, additive.project_keys(k5)), {"projected": True}), (CosineScore(scale=3.0), (q, k), {}),
            (SoftmaxAlign(temperature=0.7), (rng.normal((3, 1, 6), dtype=xp.float64),), {"mask": mask}),
            (Context(), (xp.abs(rng.normal((3, 1, 6), dtype=xp.float64)), k5), {})]


def _grads(module):
    return {n: to_numpy(p.grad).copy() for n, p in module.named_parameters()}


def test_pieces_step_is_forward_without_the_checks(rng):
    """step / step_backward compute exactly what forward / backward do, and leave self.cache alone."""
    for piece, inputs, kw in _pieces(rng):
        out = piece(*inputs, **kw)
        g = rng.normal(out.shape, dtype=xp.float64)
        want = piece.backward(g)
        want = want if isinstance(want, tuple) else (want,)
        want_grads = _grads(piece)
        piece.zero_grad()
        kept = piece.cache
        step_out, cache = piece.step(*inputs, **kw)
        got = piece.step_backward(g, cache)
        got = got if isinstance(got, tuple) else (got,)
        assert piece.cache is kept, type(piece).__name__
        np.testing.assert_array_equal(to_numpy(step_out), to_numpy(out))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
        for name, value in _grads(piece).items():
            np.testing.assert_array_equal(value, want_grads[name])
        piece.zero_grad()


def test_gradients_summed_over_calls_in_one_product(rng):
    """Context.values_backward and Dot/GeneralScore.key_backward = the sum of the per-call gradients."""
    from npattention.attention.context import Context
    from npattention.attention.scores import DotScore, GeneralScore

    keys = rng.normal((3, 6, 4), dtype=xp.float64)
    for piece in (Context(), DotScore(), GeneralScore(4, 4).double()):
        calls, total, first = [], 0, {}
        for t in range(5):  # five decoder steps on the same keys / values
            if isinstance(piece, Context):
                out, cache = piece.step(xp.abs(rng.normal((3, 1, 6), dtype=xp.float64)), keys)
            else:
                out, cache = piece.step(rng.normal((3, 1, 4), dtype=xp.float64), keys)
            g = rng.normal(out.shape, dtype=xp.float64)
            d_first, d_second = piece.step_backward(g, cache)
            first[t] = to_numpy(d_first)
            total = total + d_second
            calls.append((g, cache))
        per_call = _grads(piece)
        piece.zero_grad()
        half = piece.weights_backward if isinstance(piece, Context) else piece.query_backward
        for t, (g, cache) in enumerate(calls):
            np.testing.assert_allclose(to_numpy(half(g, cache)), first[t], rtol=1e-13)
        summed = piece.values_backward(calls) if isinstance(piece, Context) else piece.key_backward(calls)
        np.testing.assert_allclose(to_numpy(summed), to_numpy(total), rtol=1e-12, atol=1e-14)
        for name, value in _grads(piece).items():
            np.testing.assert_allclose(value, per_call[name], rtol=1e-12)


@pytest.mark.parametrize("score", ["dot", "general"])
def test_luong_summed_key_gradients_equal_the_per_step_ones(score, rng):
    """The d enc_out of Luong's dot / general keys summed after the loop = added step by step (the plain way)."""
    enc_out, h0 = rng.normal((3, 6, 4), dtype=xp.float64), rng.normal((3, 4), dtype=xp.float64)
    mask = xp.arange(6)[None, :] >= SRC_LEN[:, None]
    dec = LuongDecoder(V, 3, 4, 4, score=score).double()
    g = rng.normal((3, 4, V), dtype=xp.float64)
    results = []
    for summed in (True, False):
        dec.sums_key_grads = summed
        dec.zero_grad()
        dec(TGT_IN, enc_out, h0, src_mask=mask)
        results.append((dec.backward(g), _grads(dec)))
    (fast, fast_grads), (plain, plain_grads) = results
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-14)
    for name in plain_grads:
        np.testing.assert_allclose(fast_grads[name], plain_grads[name], rtol=1e-12, atol=1e-14)


def test_unchecked_pieces_still_give_clear_errors(rng):
    """A plugged-in score module is checked once, when the decoder is built; a decoding step checks its state."""
    from npattention.attention.scores import AdditiveScore, DotScore, GeneralScore

    with pytest.raises(ValueError, match="GeneralScore must have query_dim = hidden_size = 4 and key_dim = "
                                         "enc_dim = 5, got query_dim=3"):
        LuongDecoder(V, 3, 4, 5, score=GeneralScore(3, 5))
    with pytest.raises(ValueError, match="DotScore compares queries and keys of one size"):
        LuongDecoder(V, 3, 4, 5, score=DotScore())
    with pytest.raises(ValueError, match="got query_dim=4, key_dim=6"):
        LuongDecoder(V, 3, 4, 5, score=AdditiveScore(4, 6, 3))
    dec = BahdanauDecoder(V, 3, 4, 5)
    memory, state = dec.start(rng.normal((2, 6, 5)), rng.normal((2, 4)))
    with pytest.raises(ValueError, match=r"BahdanauDecoder.step: 'state\[0\]' must have shape \(B, 4\)"):
        dec.step(xp.asarray([1, 1]), (rng.normal((2, 5)),), memory)
    with pytest.raises(ValueError, match=r"'state\[0\]' must have shape \(B, 4\) with B=3"):
        dec.step(xp.asarray([1, 1, 1]), state, memory)
