"""KV cache, sampling filters and beam search (npattention/decoding.py) and the GPT (gpt.py)."""
import itertools
import math

import numpy as np
import pytest

from npattention.backend import Generator, manual_seed, to_numpy, xp
from npattention.decoding import (GPTState, KVCache, TransformerDecoderState, beam_search, beam_search_gpt,
                                  beam_search_transformer, generate, greedy_search, sample,
                                  sampling_distribution, top_k_filter, top_p_filter)
from npattention.gpt import GPT
from npattention.softmax import log_softmax
from npattention.transformer import Transformer, greedy_decode


def _transformer(norm_first, positional, seed=0):
    manual_seed(seed)
    model = Transformer(9, 11, d_model=12, nhead=3, num_encoder_layers=1, num_decoder_layers=2,
                        dim_feedforward=16, dropout=0.1, norm_first=norm_first, positional=positional,
                        max_len=16).double()
    return model.eval()


# ------------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("norm_first,positional", [(False, "sinusoidal"), (True, "learned")])
def test_transformer_cached_logits_equal_full_recomputation(norm_first, positional):
    model = _transformer(norm_first, positional)
    src = xp.asarray([[4, 5, 6, 7, 2], [5, 2, 0, 0, 0], [8, 4, 2, 0, 0]], dtype=xp.int64)  # padded sources
    # decoder inputs: <sos>, tokens, and <pad> after rows that finished at different steps
    ys = xp.asarray([[1, 4, 5, 6, 7, 8, 9, 10],
                     [1, 7, 2, 0, 0, 0, 0, 0],
                     [1, 3, 9, 9, 2, 0, 0, 0]], dtype=xp.int64)
    memory = model.encode(src)
    full = model.decode(ys, memory, memory_key_padding_mask=src == 0)       # (B, T, V)
    state = TransformerDecoderState(model, src, max_len=ys.shape[1])
    for t in range(ys.shape[1]):   # one key/value row per layer per step, one query
        step = state.step(ys[:, t])
        assert step.shape == (3, 1, 11)
        assert state.cache.length == t + 1
        assert float(xp.abs(step[:, 0] - full[:, t]).max()) <= 1e-12
    # a prefill step of several tokens gives the same logits too
    state = TransformerDecoderState(model, src, max_len=ys.shape[1])
    first = state.step(ys[:, :5])
    rest = state.step(ys[:, 5:])
    assert float(xp.abs(xp.concatenate([first, rest], axis=1) - full).max()) <= 1e-12


@pytest.mark.parametrize("positional,tiled", [("rope", False), ("alibi", True), ("relative", False)])
def test_cached_logits_with_positions_inside_attention(positional, tiled):
    manual_seed(4)
    model = Transformer(9, 11, d_model=12, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
                        dim_feedforward=16, positional=positional, attn_block_size=3 if tiled else None,
                        max_len=16).double().eval()
    src = xp.asarray([[4, 5, 6, 7, 2], [5, 2, 0, 0, 0]], dtype=xp.int64)
    ys = xp.asarray([[1, 4, 5, 6, 7, 8, 9], [1, 7, 2, 0, 0, 0, 0]], dtype=xp.int64)
    full = model.decode(ys, model.encode(src), memory_key_padding_mask=src == 0)
    state = TransformerDecoderState(model, src, max_len=7)
    got = xp.concatenate([state.step(ys[:, :3])] + [state.step(ys[:, t]) for t in range(3, 7)], axis=1)
    assert float(xp.abs(got - full).max()) <= 1e-12


def test_cached_greedy_equals_greedy_decode():
    model = _transformer(False, "sinusoidal", seed=3)
    src = xp.asarray([[4, 5, 6, 7, 2], [5, 2, 0, 0, 0], [8, 4, 2, 0, 0], [6, 6, 6, 6, 2]], dtype=xp.int64)
    for eos in (2, 5, 7):   # different stopping patterns
        ref = greedy_decode(model, src, 12, eos_idx=eos)
        got = greedy_search(model, src, 12, eos_idx=eos)
        assert to_numpy(got).tolist() == to_numpy(ref).tolist()


def _gpt(seed=0, **kw):
    manual_seed(seed)
    options = dict(n_layer=2, n_head=2, d_model=8, pad_idx=0)
    options.update(kw)
    return GPT(10, 16, **options).double().eval()


def test_gpt_cached_logits_equal_full_with_left_padding():
    model = _gpt()
    for p in model.parameters():   # larger weights than the 0.02 init, so the test has teeth
        p.data[...] = Generator(1).normal(p.data.shape, scale=0.5, dtype=xp.float64)
    ids = xp.asarray([[0, 0, 0, 4, 5, 6, 7, 8, 9],     # left-padded prompt of 6, then 3 more
                      [4, 9, 8, 7, 6, 5, 4, 3, 3],
                      [0, 5, 5, 5, 5, 5, 6, 0, 7]], dtype=xp.int64)   # a <pad> in the middle too
    full = model(ids)
    state = GPTState(model, 3, max_len=9)
    chunks = [ids[:, :6]] + [ids[:, t] for t in range(6, 9)]   # prefill the prompt, then one at a time
    got = xp.concatenate([state.step(c) for c in chunks], axis=1)
    assert state.cache.length == 9
    assert float(xp.abs(got - full).max()) <= 1e-12
    # left padding does not change a row's logits: row 0 alone, unpadded
    alone = model(ids[:1, 3:])
    assert float(xp.abs(full[0, 3:] - alone[0]).max()) <= 1e-12


def test_kv_cache_memory_and_reorder():
    cache = KVCache(2, 3, 4, 5, max_len=10)
    cache.extend(xp.zeros((3, 2), dtype=bool))
    K, V = cache.write(0, xp.ones((3, 4, 2, 5)), 2 * xp.ones((3, 4, 2, 5)))
    assert K.shape == (3, 4, 2, 5) and float(V.sum()) == 2 * 3 * 4 * 2 * 5
    assert cache.nbytes == 2 * 2 * 3 * 4 * 2 * 5 * 8 and cache.allocated_nbytes == 2 * 2 * 3 * 4 * 10 * 5 * 8
    cache.keys[0][1] += 5
    cache.reorder(xp.asarray([1, 1, 0]))
    assert float(cache.keys[0][0, 0, 0, 0]) == 6.0 and float(cache.keys[0][2, 0, 0, 0]) == 1.0
    with pytest.raises(ValueError, match="max_len"):
        cache.extend(xp.zeros((3, 9), dtype=bool))


# ------------------------------------------------------------------------------- sampling
def test_top_k_never_emits_outside_the_k_most_likely():
    logits = Generator(0).normal((4, 12), dtype=xp.float64)
    allowed = to_numpy(xp.argsort(-logits, axis=-1)[:, :3])
    probs = to_numpy(sampling_distribution(logits, top_k=3))
    for b in range(4):   # the distribution: softmax over the top 3 only
        ref = np.zeros(12)
        ref[allowed[b]] = np.exp(to_numpy(logits)[b, allowed[b]])
        assert np.allclose(probs[b], ref / ref.sum(), atol=1e-12)
    draws = to_numpy(xp.stack([sample(logits, top_k=3, generator=Generator(s)) for s in range(300)]))
    for b in range(4):
        assert set(draws[:, b]) <= set(allowed[b])
        assert len(set(draws[:, b])) == 3   # and all three do occur
    ties = top_k_filter(xp.asarray([[1.0, 3.0, 2.0, 3.0, 0.0]]), 2)
    assert to_numpy(xp.isfinite(ties)).tolist() == [[False, True, False, True, False]]
    assert to_numpy(top_k_filter(logits, 12)).tolist() == to_numpy(logits).tolist()


def test_top_p_keeps_the_smallest_nucleus():
    logits = xp.log(xp.asarray([[0.5, 0.05, 0.3, 0.15], [0.25, 0.25, 0.25, 0.25]], dtype=xp.float64))
    kept = to_numpy(xp.isfinite(top_p_filter(logits, 0.75)))
    # 0.5 + 0.3 = 0.8 reaches 0.75: two tokens; uniform row: 3 * 0.25 reaches it: three
    assert kept.tolist() == [[True, False, True, False], [True, True, True, False]]
    assert to_numpy(xp.isfinite(top_p_filter(logits, 0.85)))[0].tolist() == [True, False, True, True]
    assert to_numpy(xp.isfinite(top_p_filter(logits, 0.1)))[0].tolist() == [True, False, False, False]
    probs = to_numpy(sampling_distribution(logits, top_p=0.75))
    assert np.allclose(probs[0], [0.625, 0, 0.375, 0], atol=1e-12)


def test_sampling_matches_its_distribution_and_is_seeded():
    logits = xp.asarray([[2.0, 1.0, 0.0, -1.0, -3.0]], dtype=xp.float64)
    for temperature in (0.5, 1.0, 2.0):
        p = to_numpy(sampling_distribution(logits, temperature=temperature))[0]
        ref = np.exp(np.array([2.0, 1, 0, -1, -3]) / temperature)
        assert np.allclose(p, ref / ref.sum(), atol=1e-12)
    many = xp.repeat(logits, 20000, axis=0)
    draws = to_numpy(sample(many, temperature=1.0, generator=7))
    freq = np.bincount(draws, minlength=5) / draws.size
    p = to_numpy(sampling_distribution(logits))[0]
    assert np.abs(freq - p).max() < 4 * np.sqrt(p.max() / draws.size)   # ~4 standard errors
    assert to_numpy(sample(many[:50], generator=3)).tolist() == to_numpy(sample(many[:50], generator=3)).tolist()
    assert to_numpy(sample(many[:5], temperature=0)).tolist() == [0] * 5   # temperature 0: greedy
    with pytest.raises(ValueError, match="temperature"):
        sampling_distribution(logits, temperature=-1)
    with pytest.raises(ValueError, match="'p'"):
        top_p_filter(logits, 1.5)
    with pytest.raises(ValueError, match="'top_k'"):
        sampling_distribution(logits, top_k=0)
    with pytest.raises(ValueError, match="'top_p'"):
        sampling_distribution(logits, top_p=0.0)


def test_generate_cached_equals_uncached():
    model = _gpt(seed=2)
    prompts = [[4, 5], [6, 7, 8, 9], [5]]
    a, la = generate(model, prompts, 8, temperature=0.9, top_k=5, seed=11, return_logits=True)
    b, lb = generate(model, prompts, 8, temperature=0.9, top_k=5, seed=11, use_cache=False, return_logits=True)
    assert to_numpy(a).tolist() == to_numpy(b).tolist()
    assert float(xp.abs(la - lb).max()) <= 1e-12
    assert to_numpy(a[:, :4]).tolist() == [[0, 0, 4, 5], [6, 7, 8, 9], [0, 0, 0, 5]]
    with pytest.raises(ValueError, match="block_size"):
        generate(model, prompts, 20)


# ------------------------------------------------------------------------------- beam search
class TableModel:
    """A hand-built decoder whose next-token log-probabilities depend on the last token only
    (a Markov chain), so every hypothesis's score is known in closed form."""

    def __init__(self, logp, batch):
        self.logp = xp.asarray(logp)          # (V, V): row = previous token
        self.last = None
        self.batch = batch

    def step(self, tokens):
        self.last = tokens
        return self.logp[tokens][:, None, :]

    def reorder(self, index):
        self.last = self.last[index]


def _brute_force(logp, sos, eos, max_len, alpha):
    V = logp.shape[0]
    best = (-math.inf, None)
    for L in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=L):
            if eos in seq[:-1] or sos in seq:
                continue
            prev, total = sos, 0.0
            for tok in seq:
                total += logp[prev, tok]
                prev = tok
            score = total / (L ** alpha)
            if seq[-1] == eos or L == max_len:
                best = max(best, (score, list(seq)))
    return best


def test_beam_search_finds_the_best_hypothesis_of_a_known_model():
    # V = 4: token 0 = <sos> (never emitted), 1 = <eos>, 2 and 3 ordinary.  From <sos>, token 2
    # looks best (0.6) but leads to a flat 1/3-1/3-1/3 future; token 3 (0.4) is followed by
    # <eos> with probability 0.9.  Greedy: 2 ... ; beam 2 finds [3, <eos>]: log 0.36 > log 0.2.
    p = np.array([[0.0, 0.0, 0.6, 0.4],
                  [0.0, 1.0, 0.0, 0.0],
                  [0.0, 1 / 3, 1 / 3, 1 / 3],
                  [0.0, 0.9, 0.05, 0.05]])
    logp = np.log(np.where(p > 0, p, 1e-300))
    greedy = beam_search(TableModel(logp, 1), 1, 1, 5, sos_idx=0, eos_idx=1, pad_idx=0)
    assert to_numpy(greedy.tokens).tolist() == [[2, 1]]
    assert math.isclose(float(greedy.scores[0]), math.log(0.6 / 3), rel_tol=1e-12)
    beam = beam_search(TableModel(np.repeat(logp, 1, 0), 2), 1, 2, 5, sos_idx=0, eos_idx=1, pad_idx=0)
    assert to_numpy(beam.tokens).tolist() == [[3, 1]]
    assert math.isclose(float(beam.scores[0]), math.log(0.36), rel_tol=1e-12)
    # random chains, batched, several length penalties: a wide beam returns the brute-force best
    rng = np.random.default_rng(0)
    for alpha in (0.0, 0.7, 1.5):
        tables = []
        for _ in range(3):
            t = np.log(rng.dirichlet(np.ones(4) * 0.7, size=4))
            t[:, 0] = -np.inf   # <sos> is never emitted
            t = to_numpy(log_softmax(xp.asarray(t)))   # beam search normalises the logits too
            tables.append(t)
        stacked = np.concatenate(tables)   # source b uses rows 4b..4b+3: offset the tokens
        k = 4 ** 4

        class Batched(TableModel):
            def step(self, tokens):
                self.last = tokens
                b = xp.arange(tokens.shape[0]) // k
                return self.logp[b * 4 + tokens][:, None, :]

        res = beam_search(Batched(stacked, 3), 3, k, 4, sos_idx=0, eos_idx=1, pad_idx=0, alpha=alpha)
        for b in range(3):
            score, seq = _brute_force(tables[b], 0, 1, 4, alpha)
            got = [t for t in to_numpy(res.tokens[b]).tolist()][:len(seq)]
            assert math.isclose(float(res.scores[b]), score, rel_tol=1e-9), (alpha, b)
            assert got == seq


def test_beam_width_one_is_greedy_and_cache_does_not_change_beams():
    model = _transformer(True, "sinusoidal", seed=5)
    src = xp.asarray([[4, 5, 6, 7, 2], [5, 2, 0, 0, 0], [8, 4, 2, 0, 0], [6, 6, 6, 6, 2]], dtype=xp.int64)
    for eos in (2, 5, 7):
        ref = greedy_decode(model, src, 10, eos_idx=eos)
        got = beam_search_transformer(model, src, 10, beam_width=1, eos_idx=eos).tokens
        assert to_numpy(got).tolist() == to_numpy(ref).tolist()
    a = beam_search_transformer(model, src, 8, beam_width=3, alpha=0.6, eos_idx=7)
    b = beam_search_transformer(model, src, 8, beam_width=3, alpha=0.6, eos_idx=7, use_cache=False)
    assert to_numpy(a.tokens).tolist() == to_numpy(b.tokens).tolist()
    assert np.allclose(to_numpy(a.scores), to_numpy(b.scores), atol=1e-12)
    # the score reported is the model's log-probability of the returned output (/ lp)
    out = to_numpy(a.tokens[1]).tolist()
    out = out[:out.index(7) + 1] if 7 in out else out
    ys = xp.asarray([[1] + out[:-1]], dtype=xp.int64)
    logp = to_numpy(log_softmax(model.decode(ys, model.encode(src[1:2]), memory_key_padding_mask=src[1:2] == 0)))[0]
    total = sum(logp[t, tok] for t, tok in enumerate(out))
    assert math.isclose(float(a.scores[1]), total / len(out) ** 0.6, rel_tol=1e-9)


def test_gpt_beam_search_width_one_is_greedy_and_wider_scores_higher():
    model = _gpt(seed=6)
    for p in model.parameters():   # sharper distributions than the 0.02 init
        p.data[...] = Generator(2).normal(p.data.shape, scale=0.4, dtype=xp.float64)
    prompt = xp.asarray([[4, 5], [0, 6]], dtype=xp.int64)
    greedy = generate(model, prompt, 6, temperature=0)[:, 2:]
    one = beam_search_gpt(model, prompt, 6, beam_width=1)
    assert to_numpy(one.tokens).tolist() == to_numpy(greedy).tolist()
    wide = beam_search_gpt(model, prompt, 6, beam_width=4)
    # no eos: equal lengths; here the wider beam scores at least as well (usual, not guaranteed in general)
    assert bool((wide.scores >= one.scores - 1e-12).all())


@pytest.mark.parametrize("kw", [{"attention": "bahdanau"}, {"attention": "luong", "score": "general", "cell": "lstm"},
                                {"attention": "location", "max_src_len": 6}, {"attention": "none"}],
                         ids=lambda kw: kw["attention"])
def test_seq2seq_beam_search(kw):
    from npattention.decoding import beam_search_seq2seq
    from npattention.seq2seq import Seq2Seq

    manual_seed(1)
    model = Seq2Seq(9, 9, embed_dim=5, hidden_size=4, **kw).double()
    for p in model.parameters():   # sharper next-token distributions than the initial weights
        p.data *= 3.0
    src = xp.asarray([[4, 5, 6, 2, 0, 0], [7, 8, 4, 5, 6, 2], [5, 2, 0, 0, 0, 0]], dtype=xp.int64)
    lengths = xp.asarray([4, 6, 2])
    for eos in (2, 6):
        greedy, _ = model.greedy_decode(src, lengths, max_len=7, eos=eos)
        greedy = to_numpy(greedy).tolist()
        for row in greedy:   # greedy repeats <eos> after the end; beam search pads
            if eos in row:
                row[row.index(eos) + 1:] = [0] * (len(row) - row.index(eos) - 1)
        one = beam_search_seq2seq(model, src, lengths, max_len=7, beam_width=1, eos_idx=eos)
        assert to_numpy(one.tokens).tolist() == greedy
    wide = beam_search_seq2seq(model, src, lengths, max_len=7, beam_width=3, alpha=0.5, eos_idx=6)
    for b in range(3):   # the reported score is the model's log-probability of the output / lp
        out = to_numpy(wide.tokens[b]).tolist()
        out = out[:out.index(6) + 1] if 6 in out else out
        logits, _ = model(src[b:b + 1], xp.asarray([[1] + out[:-1]]), lengths[b:b + 1])
        logp = to_numpy(log_softmax(logits))[0]
        total = sum(logp[t, tok] for t, tok in enumerate(out))
        assert math.isclose(float(wide.scores[b]), total / len(out) ** 0.5, rel_tol=1e-9)
