"""The toy sequence data: vocabulary, tasks, token format, splits and batches."""
import datetime

import numpy as np
import pytest

from npattention.backend import to_numpy, xp
from npattention.data import (
    DATE_FORMATS,
    TASKS,
    SeqDataset,
    Vocab,
    encode_sources,
    encode_targets,
    exact_match,
    format_date,
    load_task,
    make_task,
    pad_batch,
    task_vocab,
)


def test_vocab_specials_and_round_trip():
    v = Vocab("abca")
    assert v.itos == ["<pad>", "<sos>", "<eos>", "<unk>", "a", "b", "c"]
    assert (Vocab.PAD, Vocab.SOS, Vocab.EOS, Vocab.UNK) == (0, 1, 2, 3)
    assert v.encode("cab") == [6, 4, 5]
    assert v.encode("ab", add_sos=True, add_eos=True) == [1, 4, 5, 2]
    assert v.encode("az") == [4, 3]  # unknown -> <unk>
    assert v.decode([1, 6, 4, 2, 5, 5]) == "ca"  # skip <sos>, stop at <eos>
    assert v.decode(xp.asarray([4, 3, 0, 5])) == "a?b"
    assert Vocab(v.state()).itos == v.itos
    assert len(v) == 7


def test_token_format_of_a_pair():
    v = Vocab("abc")
    src, src_len = encode_sources(["abc", "a"], v)
    tgt_in, tgt_out, tgt_len = encode_targets(["cba", "a"], v)
    assert to_numpy(src).tolist() == [[4, 5, 6, 2], [4, 2, 0, 0]]
    assert to_numpy(src_len).tolist() == [4, 2]
    assert to_numpy(tgt_in).tolist() == [[1, 6, 5, 4], [1, 4, 0, 0]]
    assert to_numpy(tgt_out).tolist() == [[6, 5, 4, 2], [4, 2, 0, 0]]
    assert to_numpy(tgt_len).tolist() == [4, 2]
    assert src.dtype == xp.int64 and isinstance(src, xp.ndarray)


def test_pad_batch_rejects_short_length():
    with pytest.raises(ValueError, match="length"):
        pad_batch([[1, 2, 3]], length=2)


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_symbol_tasks(name):
    src, tgt = make_task(name, 200, seed=1, min_len=2, max_len=6)
    assert len(src) == len(tgt) == 200 and len(set(src)) == 200
    assert all(2 <= len(s) <= 6 for s in src)
    expect = {"copy": lambda s: s, "reverse": lambda s: s[::-1], "sort": lambda s: "".join(sorted(s))}[name]
    assert tgt == [expect(s) for s in src]
    assert make_task(name, 200, seed=1, min_len=2, max_len=6) == (src, tgt)
    assert make_task(name, 200, seed=2, min_len=2, max_len=6) != (src, tgt)


def test_date_formats_of_one_day():
    day = datetime.date(2026, 11, 21)
    got = {format_date(day, f) for f in DATE_FORMATS}
    for text in ["21 November 2026", "11/21/26", "Saturday, Nov 21, 2026", "21.11.2026",
                 "nov 21 2026", "2026 Nov 21", "21st of November 2026", "11/21/2026"]:
        assert text in got
    assert len(got) == len(DATE_FORMATS) >= 10
    assert format_date(datetime.date(2011, 3, 12), "{th}") == "12th"
    assert format_date(datetime.date(2011, 3, 22), "{th}") == "22nd"


def test_dates_task_targets_are_iso_and_parse_back():
    src, tgt = make_task("dates", 300, seed=0)
    formats_seen = set()
    for s, t in zip(src, tgt):
        day = datetime.date.fromisoformat(t)
        assert 1950 <= day.year <= 2049
        matches = [f for f in DATE_FORMATS if format_date(day, f) == s]
        assert matches, (s, t)
        formats_seen.update(matches)
    assert len(formats_seen) == len(DATE_FORMATS)


def test_dates_rejects_ambiguous_two_digit_years():
    with pytest.raises(ValueError, match="years"):
        make_task("dates", 5, years=(1900, 2049))
    src, _ = make_task("dates", 5, years=(1900, 2049), formats=["{Y}/{mm}/{dd}"])
    assert all(len(s) == 10 for s in src)


def test_bad_arguments():
    with pytest.raises(ValueError, match="'name'"):
        make_task("translate", 3)
    with pytest.raises(ValueError, match="'n'"):
        make_task("copy", -1)
    with pytest.raises(ValueError, match="min_len"):
        make_task("copy", 3, min_len=5, max_len=2)
    with pytest.raises(ValueError, match="distinct"):
        make_task("copy", 50, min_len=1, max_len=1, alphabet="ab")
    with pytest.raises(ValueError, match="batch_size"):
        next(SeqDataset(["a"], ["a"], Vocab("a")).batches(0))


def test_splits_are_disjoint_and_deterministic():
    vocab, splits = load_task("reverse", 300, 50, 60, seed=5, min_len=3, max_len=7)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [300, 50, 60]
    train, val, test = (set(splits[k].sources) for k in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and not (val & test)
    _, again = load_task("reverse", 300, 50, 60, seed=5, min_len=3, max_len=7)
    assert again["test"].sources == splits["test"].sources
    assert np.array_equal(to_numpy(again["train"].src), to_numpy(splits["train"].src))
    assert vocab.itos == task_vocab("reverse").itos


def test_batches_cover_the_set_and_are_trimmed():
    vocab, splits = load_task("dates", 50, 5, 5, seed=2)
    ds = splits["train"]
    seen = []
    for batch in ds.batches(16, shuffle=True, seed=3):
        assert len(batch) <= 16
        S = int(to_numpy(batch.src_lengths).max())
        assert batch.src.shape == (len(batch), S)  # trimmed to the longest row
        assert batch.tgt_in.shape == batch.tgt_out.shape == (len(batch), 11)
        mask = to_numpy(batch.src_padding_mask)
        assert np.array_equal(mask, to_numpy(batch.src) == Vocab.PAD)
        assert vocab.decode_batch(batch.src) == batch.sources
        assert vocab.decode_batch(batch.tgt_out) == batch.targets
        assert np.array_equal(to_numpy(batch.tgt_in)[:, 1:], to_numpy(batch.tgt_out)[:, :-1])
        seen += batch.sources
    assert sorted(seen) == sorted(ds.sources)
    order1 = [b.sources for b in ds.batches(16, shuffle=True, seed=3)]
    order2 = [b.sources for b in ds.batches(16, shuffle=True, seed=4)]
    assert order1 != order2
    assert ds.num_batches(16) == 4 and len(list(ds.batches(16, drop_last=True))) == 3


def test_exact_match():
    assert exact_match(["ab", "c", "d"], ["ab", "c", "e"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match(["a"], [])


def test_every_task_loads():
    for name in TASKS:
        vocab, splits = load_task(name, 20, 5, 5, seed=0)
        assert vocab.decode_batch(splits["test"].tgt_out) == splits["test"].targets
        assert vocab.decode_batch(splits["train"].src) == splits["train"].sources


def test_dataset_works_with_the_fit_loop_batches():
    from npattention.train import batches, num_batches

    _, splits = load_task("copy", 40, 5, 5, seed=0, min_len=2, max_len=4)
    got = list(batches(splits["train"], 16, shuffle=True, rng=0))
    assert num_batches(splits["train"], 16) == len(got) == 3
    assert all(isinstance(b.src, xp.ndarray) for b in got)
    assert sorted(s for b in got for s in b.sources) == sorted(splits["train"].sources)


def test_retrieval_task_lives_in_data_and_is_solvable_by_the_inverse_disguise():
    from npattention.attention import hard_demo
    from npattention.backend import Generator, to_numpy
    from npattention.data.retrieval import make_disguise, make_retrieval_batch

    assert hard_demo.make_retrieval_batch is make_retrieval_batch  # the old import path still works
    gen = Generator(3)
    M = make_disguise(gen, 8)
    q, k, v, y = (to_numpy(a) for a in make_retrieval_batch(gen, M, 256, 6, noise=0.0))
    assert q.shape == (256, 1, 8) and k.shape == (256, 6, 8) and v.shape == (256, 6, 6) and y.shape == (256,)
    np.testing.assert_allclose(np.linalg.norm(k, axis=-1), 1.0, rtol=1e-12)  # unit keys
    assert np.all(v.sum(-1) == 1) and np.all(np.sort(v.argmax(-1), axis=1) == np.arange(6))  # a permutation
    scores = np.einsum("bqd,de,bke->bk", q, np.linalg.inv(M).T, k)  # undo the disguise: q^T M^{-T} k
    found = v[np.arange(256), scores.argmax(-1)].argmax(-1)
    assert np.all(found == y)  # without noise, M^{-T} retrieves every target exactly


def test_colour_pairs_are_what_the_docstring_says():
    from npattention.data import make_colour_pairs
    from npattention.data.colour_pairs import IGNORE, PALETTE, PATTERNS, QUESTION

    n, g, P = 40, 6, 3
    images, targets, partners = make_colour_pairs(n, grid=g, n_pairs=P, n_values=4, noise=0.0, seed=5)
    assert images.shape == (n, 3, 3 * g, 3 * g) and images.dtype == xp.float32
    assert targets.shape == partners.shape == (n, g, g) and targets.dtype == partners.dtype == xp.int64
    img, tgt, par = to_numpy(images), to_numpy(targets).reshape(n, -1), to_numpy(partners).reshape(n, -1)
    cells = img.reshape(n, 3, g, 3, g, 3).transpose(0, 2, 4, 1, 3, 5).reshape(n, g * g, 3, 3, 3)  # (n, cell, RGB, 3, 3)
    palette = np.asarray(PALETTE)
    for b in range(n):
        questions = np.flatnonzero(tgt[b] != IGNORE)
        assert len(questions) == P and np.all(par[b][tgt[b] == IGNORE] == -1)
        answers = par[b][questions]
        assert len(set(answers) | set(questions)) == 2 * P  # 2 P distinct cells
        empty = np.setdiff1d(np.arange(g * g), np.concatenate([questions, answers]))
        assert np.all(cells[b, empty] == 0)  # nothing else on the board (noise = 0)
        colours = []
        for q, a, value in zip(questions, answers, tgt[b][questions]):
            assert 0 <= value < 4
            dot = cells[b, q]  # the question: only the centre pixel is lit
            np.testing.assert_array_equal(dot.max(0) > 0, np.asarray(QUESTION) > 0)
            ans = cells[b, a]  # the answer: the target's pattern ...
            np.testing.assert_array_equal(ans.max(0) > 0, np.asarray(PATTERNS[value]) > 0)
            rgb_q, rgb_a = dot[:, 1, 1], ans.max(axis=(1, 2))  # ... in the question's colour
            k = int(np.argmin(np.abs(palette / np.linalg.norm(palette, axis=1, keepdims=True)
                                     - rgb_q / np.linalg.norm(rgb_q)).sum(1)))
            np.testing.assert_allclose(rgb_q / np.linalg.norm(rgb_q), palette[k] / np.linalg.norm(palette[k]), rtol=1e-5)
            np.testing.assert_allclose(rgb_a / np.linalg.norm(rgb_a), palette[k] / np.linalg.norm(palette[k]), rtol=1e-5)
            colours.append(k)
        assert len(set(colours)) == P  # different colours in one image
    again = make_colour_pairs(n, grid=g, n_pairs=P, noise=0.0, seed=5)
    assert all(np.array_equal(to_numpy(x), to_numpy(y)) for x, y in zip((images, targets, partners), again))
    noisy, _, _ = make_colour_pairs(n, grid=g, n_pairs=P, seed=5)
    assert 0.02 < float(np.std(to_numpy(noisy) - img)) < 0.08  # default noise 0.05, same boards
    for bad, name in [(dict(n_pairs=7), "n_pairs"), (dict(grid=1), "grid"), (dict(n_values=5), "n_values"),
                      (dict(grid=3, n_pairs=5), "n_pairs"), (dict(noise=-1.0), "noise")]:
        with pytest.raises(ValueError, match=name):
            make_colour_pairs(4, **bad)
