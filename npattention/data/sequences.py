"""Toy sequence-to-sequence data, generated in code: copy, reverse, sort, and dates.

Every task maps a *source* string to a *target* string, one character per token:

=========  ===============================================  ==========================
task       source                                           target
=========  ===============================================  ==========================
copy       ``"k3f9a"``                                      ``"k3f9a"``
reverse    ``"k3f9a"``                                      ``"a9f3k"``
sort       ``"k3f9a"``                                      ``"39afk"`` (character order)
dates      ``"Saturday, Nov 21, 2026"``, ``"21.11.2026"``,  ``"2026-11-21"`` (ISO 8601)
           ``"11/21/26"``, ... (16 human formats)
=========  ===============================================  ==========================

The token format (the same for every model in npattention)
-----------------------------------------------------------
A :class:`Vocab` numbers the characters after four special tokens::

    <pad> = 0    <sos> = 1    <eos> = 2    <unk> = 3

A pair ``("abc", "cba")`` with vocabulary ids ``a=4, b=5, c=6`` becomes

* ``src     = [4, 5, 6, 2]``   source ids + ``<eos>``           (what the encoder reads)
* ``tgt_in  = [1, 6, 5, 4]``   ``<sos>`` + target ids           (decoder input, teacher forcing)
* ``tgt_out = [6, 5, 4, 2]``   target ids + ``<eos>``           (what the decoder must predict)

``tgt_in`` and ``tgt_out`` have the same length: ``tgt_out[t]`` is the token to predict
after reading ``tgt_in[:t + 1]``.  In a batch, rows are right-padded with ``<pad> = 0`` to
the longest row of the batch; ``src_lengths`` and ``tgt_lengths`` count the real tokens
*including* the ``<eos>`` (and, for ``tgt_in``, the ``<sos>``), so
``masks.padding_mask(src_lengths, S)`` is True exactly at the padding.  A loss over
``tgt_out`` should use ``ignore_index=Vocab.PAD``.

Splits are deterministic: :func:`load_task` draws ``n_train + n_val + n_test`` *distinct*
source strings from one seed and cuts them into train / validation / test, so a test
string never appears in training.  Strings are made on the host (Python + the host
generator of :class:`npattention.backend.Generator`); the arrays handed to models are
backend (``xp``) integer arrays.
"""
import datetime
import string
from dataclasses import dataclass

from ..backend import Generator, to_numpy, xp
from ..masks import padding_mask

__all__ = ["TASKS", "SYMBOLS", "Vocab", "MONTHS", "WEEKDAYS", "DATE_FORMATS", "DATE_CHARS", "format_date",
           "task_vocab", "make_task", "pad_batch", "encode_sources", "encode_targets", "SeqBatch", "SeqDataset",
           "load_task", "exact_match"]

TASKS = ("copy", "reverse", "sort", "dates")

#: characters of the copy/reverse/sort strings (digits and lower-case letters)
SYMBOLS = string.digits + string.ascii_lowercase


# ---------------------------------------------------------------- vocabulary
class Vocab:
    """Character vocabulary with ``<pad>=0, <sos>=1, <eos>=2, <unk>=3`` first.

    ``Vocab("abc")``: tokens ``<pad> <sos> <eos> <unk> a b c`` (characters keep the
    order given, duplicates dropped).  :meth:`encode` turns a string into a list of ids,
    :meth:`decode` turns ids back into a string (stopping at the first ``<eos>``).
    """

    PAD, SOS, EOS, UNK = 0, 1, 2, 3
    SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")

    def __init__(self, chars):
        if not isinstance(chars, str):
            chars = "".join(chars)
        self.itos = list(self.SPECIALS) + list(dict.fromkeys(chars))
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}

    @classmethod
    def from_strings(cls, strings):
        """A vocabulary of every character seen in ``strings`` (sorted)."""
        return cls("".join(sorted(set("".join(strings)))))

    def __len__(self):
        return len(self.itos)

    def __repr__(self):
        return f"Vocab({len(self)} tokens: {''.join(self.itos[4:])!r} + 4 specials)"

    def encode(self, text, add_sos=False, add_eos=False):
        """``"abc"`` -> ``[4, 5, 6]`` (unknown characters become ``<unk>``)."""
        ids = [self.stoi.get(ch, self.UNK) for ch in text]
        return ([self.SOS] if add_sos else []) + ids + ([self.EOS] if add_eos else [])

    def decode(self, ids):
        """Ids -> string: stops at the first ``<eos>``, skips ``<pad>``/``<sos>``, ``<unk>`` -> ``?``."""
        out = []
        for i in to_numpy(ids).reshape(-1).tolist():
            if i == self.EOS:
                break
            if i in (self.PAD, self.SOS):
                continue
            out.append("?" if i == self.UNK or i >= len(self.itos) else self.itos[i])
        return "".join(out)

    def decode_batch(self, ids):
        """``(N, T)`` ids -> list of ``N`` strings."""
        return [self.decode(row) for row in to_numpy(ids)]

    def state(self):
        """The characters (without specials), enough to rebuild the vocabulary: ``Vocab(v.state())``."""
        return "".join(self.itos[4:])


# ---------------------------------------------------------------- dates
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _ordinal(n):
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _fmt(d):
    """Named pieces of a date used by the formats below."""
    month, wday = MONTHS[d.month - 1], WEEKDAYS[d.weekday()]
    return dict(d=d.day, dd=f"{d.day:02d}", m=d.month, mm=f"{d.month:02d}", Y=d.year,
                yy=f"{d.year % 100:02d}", Month=month, Mon=month[:3], mon=month[:3].lower(),
                month=month.lower(), MONTH=month.upper(), Wday=wday, Wd=wday[:3], wday=wday.lower(),
                th=_ordinal(d.day))


#: the human formats of the dates task (US order uses "/", European order "." or "-")
DATE_FORMATS = (
    "{d} {Month} {Y}",            # 21 November 2026
    "{mm}/{dd}/{yy}",             # 11/21/26   (two-digit year: 50-99 -> 19xx, 00-49 -> 20xx)
    "{Wday}, {Mon} {d}, {Y}",     # Saturday, Nov 21, 2026
    "{dd}.{mm}.{Y}",              # 21.11.2026
    "{mon} {d} {Y}",              # nov 21 2026
    "{Y} {Mon} {d}",              # 2026 Nov 21
    "{Month} {d}, {Y}",           # November 21, 2026
    "{d} {Mon} {Y}",              # 21 Nov 2026
    "{Wd} {d} {Mon} {Y}",         # Sat 21 Nov 2026
    "{Y}/{mm}/{dd}",              # 2026/11/21
    "{dd}-{mm}-{Y}",              # 21-11-2026
    "{MONTH} {d}, {Y}",           # NOVEMBER 21, 2026
    "{wday} {d} {month} {Y}",     # saturday 21 november 2026
    "{th} of {Month} {Y}",        # 21st of November 2026
    "{m}/{d}/{Y}",                # 11/21/2026
    "{Mon}. {d}, {Y}",            # Nov. 21, 2026
)

#: every character a date string can contain
DATE_CHARS = string.digits + string.ascii_letters + " ,./-"


def format_date(date, fmt):
    """``format_date(datetime.date(2026, 11, 21), "{d} {Month} {Y}")`` -> ``"21 November 2026"``."""
    return fmt.format(**_fmt(date))


def _random_dates(gen, n, years):
    first, last = datetime.date(years[0], 1, 1), datetime.date(years[1], 12, 31)
    offsets = gen.integers(0, (last - first).days + 1, size=n)
    return [first + datetime.timedelta(days=int(k)) for k in offsets]


def _dates(gen, n, years=(1950, 2049), formats=None):
    formats = DATE_FORMATS if formats is None else tuple(formats)
    if years[1] - years[0] >= 100 and any("{yy}" in f for f in formats):
        raise ValueError(f"make_task('dates'): 'years' {years} spans more than 100 years, so a "
                         "two-digit year would be ambiguous; pass formats without '{yy}'")
    dates = _random_dates(gen, n, years)
    which = gen.integers(0, len(formats), size=n)
    src = [format_date(d, formats[int(k)]) for d, k in zip(dates, which)]
    return src, [d.isoformat() for d in dates]


# ---------------------------------------------------------------- symbol tasks
def _strings(gen, n, min_len, max_len, alphabet):
    lengths = gen.integers(min_len, max_len + 1, size=n)
    chars = gen.integers(0, len(alphabet), size=int(lengths.sum()))
    out, pos = [], 0
    for L in lengths.tolist():
        out.append("".join(alphabet[c] for c in chars[pos:pos + L].tolist()))
        pos += L
    return out


_SYMBOL_TARGET = {
    "copy": lambda s: s,
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
}


def _check_task(name):
    if name not in TASKS:
        raise ValueError(f"make_task: 'name' must be one of {TASKS}, got {name!r}")


def task_vocab(name, alphabet=SYMBOLS):
    """The fixed vocabulary of a task (shared by source and target)."""
    _check_task(name)
    return Vocab(DATE_CHARS if name == "dates" else alphabet)


def make_task(name, n, seed=0, *, min_len=3, max_len=10, alphabet=SYMBOLS,
              years=(1950, 2049), formats=None, unique=True):
    """``n`` pairs ``(sources, targets)`` (two lists of strings) of task ``name``.

    copy/reverse/sort: random strings of ``min_len..max_len`` characters from
    ``alphabet``.  dates: random days in the ``years`` range (inclusive), each written in
    one random format of :data:`DATE_FORMATS` (or ``formats``); target ISO ``YYYY-MM-DD``.
    ``unique``: no source string repeats (a ``ValueError`` if the task has too few).
    Same ``seed`` -> same pairs.
    """
    _check_task(name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"make_task: 'n' must be a non-negative int, got {n!r}")
    if name != "dates" and not (isinstance(min_len, int) and isinstance(max_len, int) and 1 <= min_len <= max_len):
        raise ValueError(f"make_task: need 1 <= 'min_len' <= 'max_len', got {min_len!r}, {max_len!r}")
    gen = Generator(seed).host

    def draw(k):
        if name == "dates":
            return _dates(gen, k, years, formats)
        src = _strings(gen, k, min_len, max_len, alphabet)
        return src, [_SYMBOL_TARGET[name](s) for s in src]

    if not unique:
        return draw(n)
    seen, sources, targets = set(), [], []
    for _ in range(50):  # draw more until n distinct sources (almost always one round)
        src, tgt = draw(max(n - len(sources), 16) * 2)
        for s, t in zip(src, tgt):
            if s not in seen and len(sources) < n:
                seen.add(s)
                sources.append(s)
                targets.append(t)
        if len(sources) == n:
            return sources, targets
    raise ValueError(f"make_task({name!r}): could not draw {n} distinct sources "
                     f"(only {len(sources)}); use longer strings or a larger alphabet")


# ---------------------------------------------------------------- arrays and batches
def pad_batch(rows, pad=Vocab.PAD, length=None):
    """List of id lists -> ``(N, T)`` int64 ``xp`` array right-padded with ``pad``, and lengths ``(N,)``."""
    lengths = [len(r) for r in rows]
    T = max(lengths, default=0) if length is None else length
    if lengths and max(lengths) > T:
        raise ValueError(f"pad_batch: 'length' {T} is shorter than the longest row ({max(lengths)})")
    padded = [list(r) + [pad] * (T - len(r)) for r in rows]
    return (xp.asarray(padded, dtype=xp.int64).reshape(len(rows), T),
            xp.asarray(lengths, dtype=xp.int64))


def encode_sources(sources, vocab, length=None):
    """Source strings -> ``(src (N, S), src_lengths (N,))``: ids + ``<eos>``, padded."""
    return pad_batch([vocab.encode(s, add_eos=True) for s in sources], length=length)


def encode_targets(targets, vocab, length=None):
    """Target strings -> ``(tgt_in, tgt_out, tgt_lengths)``: ``<sos>``+ids and ids+``<eos>``."""
    tgt_in, lengths = pad_batch([vocab.encode(t, add_sos=True) for t in targets], length=length)
    tgt_out, _ = pad_batch([vocab.encode(t, add_eos=True) for t in targets], length=length)
    return tgt_in, tgt_out, lengths


@dataclass
class SeqBatch:
    """One batch: ``src (B, S)``, ``src_lengths (B,)``, ``tgt_in (B, T)``, ``tgt_out (B, T)``,
    ``tgt_lengths (B,)`` (integer ``xp`` arrays), and the original strings."""

    src: object
    src_lengths: object
    tgt_in: object
    tgt_out: object
    tgt_lengths: object
    sources: list
    targets: list

    def __len__(self):
        return int(self.src.shape[0])

    @property
    def src_padding_mask(self):
        """``(B, S)`` bool, True at source padding (the ``key_padding_mask`` of attention)."""
        return padding_mask(self.src_lengths, self.src.shape[1])

    @property
    def tgt_padding_mask(self):
        """``(B, T)`` bool, True at target padding."""
        return padding_mask(self.tgt_lengths, self.tgt_in.shape[1])


class SeqDataset:
    """Pairs of strings encoded once with ``vocab``; hands out :class:`SeqBatch` objects.

    ``dataset[idx]`` (an int array/list/slice of rows) is a batch cut to its longest
    row; :meth:`batches` iterates over the whole set (shuffled with a seed if asked).
    """

    def __init__(self, sources, targets, vocab):
        if len(sources) != len(targets):
            raise ValueError(f"SeqDataset: {len(sources)} sources but {len(targets)} targets")
        self.sources, self.targets, self.vocab = list(sources), list(targets), vocab
        self.src, self.src_lengths = encode_sources(self.sources, vocab)
        self.tgt_in, self.tgt_out, self.tgt_lengths = encode_targets(self.targets, vocab)
        # host copies, so that trimming a batch reads no values back from a GPU
        self._src_len_host, self._tgt_len_host = to_numpy(self.src_lengths), to_numpy(self.tgt_lengths)

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            idx = list(range(len(self)))[idx]
        host_idx = [int(i) for i in to_numpy(idx).reshape(-1)]
        rows = xp.asarray(host_idx, dtype=xp.int64)
        src_len, tgt_len = self.src_lengths[rows], self.tgt_lengths[rows]
        S = int(self._src_len_host[host_idx].max()) if host_idx else 0  # trim to the longest row
        T = int(self._tgt_len_host[host_idx].max()) if host_idx else 0
        return SeqBatch(self.src[rows, :S], src_len, self.tgt_in[rows, :T], self.tgt_out[rows, :T],
                        tgt_len, [self.sources[i] for i in host_idx], [self.targets[i] for i in host_idx])

    def batches(self, batch_size, shuffle=False, seed=None, drop_last=False):
        """Yield :class:`SeqBatch` objects of ``batch_size`` rows (the last may be smaller)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"SeqDataset.batches: 'batch_size' must be a positive int, got {batch_size!r}")
        order = Generator(seed).host.permutation(len(self)) if shuffle else range(len(self))
        order = list(order)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            yield self[order[start:start + batch_size]]

    def num_batches(self, batch_size, drop_last=False):
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)


def load_task(name, n_train=4000, n_val=500, n_test=500, seed=0, **options):
    """``(vocab, {"train": SeqDataset, "val": ..., "test": ...})`` for a task.

    The three splits come from one call of :func:`make_task` with ``seed`` (distinct
    sources), cut in this order, so they are disjoint and reproducible.
    ``options`` go to :func:`make_task` (``min_len``, ``max_len``, ``alphabet``, ``years``, ...).
    """
    vocab = task_vocab(name, options.get("alphabet", SYMBOLS))
    src, tgt = make_task(name, n_train + n_val + n_test, seed, **options)
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val),
            "test": (n_train + n_val, n_train + n_val + n_test)}
    return vocab, {k: SeqDataset(src[a:b], tgt[a:b], vocab) for k, (a, b) in cuts.items()}


def exact_match(predictions, targets):
    """Fraction of predicted strings equal to their target string."""
    predictions, targets = list(predictions), list(targets)
    if len(predictions) != len(targets):
        raise ValueError(f"exact_match: {len(predictions)} predictions but {len(targets)} targets")
    return sum(p == t for p, t in zip(predictions, targets)) / max(len(targets), 1)
